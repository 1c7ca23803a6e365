import { createServer, type AddressInfo, type Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { createApiKey } from '../worker/auth/api-keys.js';
import { migrate, type LockRetry } from '../worker/db/migrate.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJob, enqueueJobs } from '../worker/queue/enqueue.js';
import { getRunRecord, listJobActions } from '../worker/queue/job-actions.js';
import { JOB_KIND_PATTERN } from '../worker/queue/types.js';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import { waitFor } from './support/in-process-worker.js';
import { createTablesOnlyRole } from './support/tables-only-role.js';

const env = useTestEnvironment();

async function tables(): Promise<string[]> {
  const { rows } = await env.pool.query<{ name: string }>(
    "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'pgmigrations' ORDER BY 1",
  );
  return rows.map((row) => row.name);
}

/**
 * Reverts `name` and every migration applied after it (newest first), so a test of an old migration holds however many
 * migrations come after it; returns the names reverted.
 */
async function revertThrough(name: string): Promise<string[]> {
  const { rows } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pgmigrations WHERE name >= $1', [name]);
  return migrate(env.databaseUrl, { direction: 'down', count: rows[0]!.n });
}

describe('migrations', () => {
  it('give up connecting to a server that accepts the connection and says nothing', async () => {
    // A failover that took the address away, a proxy without a backend: the deploy's migration task must not hang.
    const sockets: Socket[] = [];
    const silent = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const url = new URL(env.databaseUrl);
      url.hostname = '127.0.0.1';
      url.port = String((silent.address() as AddressInfo).port);
      await expect(migrate(url.toString(), { connectTimeoutMs: 300 })).rejects.toThrow(/timeout/i);
      expect(sockets.length).toBe(1);
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  it('are all applied in the template, revert completely, and apply again', async () => {
    const before = await tables();
    expect(before).toContain('jobs');
    const { rows } = await env.pool.query<{ count: number }>('SELECT count(*)::int AS count FROM pgmigrations');
    const reverted = await migrate(env.databaseUrl, { direction: 'down', count: rows[0]!.count });
    expect(reverted.length).toBe(rows[0]!.count);
    expect(await tables()).toEqual([]);
    const applied = await migrate(env.databaseUrl);
    expect(applied).toEqual([...reverted].reverse());
    expect(await tables()).toEqual(before);
  });

  it('20261128000700 keeps the counts of finished runs and unmarks runs whose old staging it drops', async () => {
    expect((await revertThrough('20261128000700_csv_staged_rows')).slice(-2)).toEqual(['20261129000100_csv_source_staging', '20261128000700_csv_staged_rows']);
    const job = async (state: string) =>
      (await env.pool.query<{ id: number }>(`INSERT INTO jobs (kind, state) VALUES ('csv-import', $1) RETURNING id`, [state])).rows[0]!.id;
    const run = (id: number, extra: string) =>
      env.pool.query(
        `INSERT INTO csv_import_runs (job_id, profile, tenant_id, bucket, object_key, delimiter, header, columns, rows_valid, batches,
           validated_at, finalized_batches, rows_inserted, rows_updated, rows_unchanged, rows_failed, finalized_at)
         VALUES ($1, 'products', 't', 'b', 'k', ',', '{sku}', '{sku}', 10, 2, now(), ${extra})`,
        [id],
      );
    const finished = await job('succeeded');
    await run(finished, '2, 7, 2, 1, 0, now()');
    const reviewing = await job('review_ready');
    await run(reviewing, '0, 0, 0, 0, 0, NULL');
    await env.pool.query(
      `INSERT INTO csv_import_staged_batches (job_id, batch_number, first_row, last_row, row_count, rows) VALUES ($1, 1, 2, 11, 10, '[]')`,
      [reviewing],
    );

    await migrate(env.databaseUrl);
    const { getCsvImportRun } = await import('../worker/imports/csv/run-record.js');
    expect(await getCsvImportRun(env.pool, finished)).toMatchObject({ rowsInserted: 7, rowsUpdated: 2, rowsUnchanged: 1, rowsFailed: 0 });
    expect(await getCsvImportRun(env.pool, reviewing)).toMatchObject({ validatedAt: null, finalizedBatches: 0, rowsInserted: 0 });
    await env.pool.query('DELETE FROM jobs WHERE id = ANY($1)', [[finished, reviewing]]);
  });

  it('20261129000100 drops the staged rows, keeps finished runs and unmarks runs validated but not finalized', async () => {
    expect((await revertThrough('20261129000100_csv_source_staging')).slice(-1)).toEqual(['20261129000100_csv_source_staging']);
    const job = async (state: string) =>
      (await env.pool.query<{ id: number }>(`INSERT INTO jobs (kind, state) VALUES ('csv-import', $1) RETURNING id`, [state])).rows[0]!.id;
    const run = (id: number, finalized: boolean) =>
      env.pool.query(
        `INSERT INTO csv_import_runs (job_id, profile, tenant_id, bucket, object_key, delimiter, header, columns, rows_valid, batches,
           validated_at, finalized_at)
         VALUES ($1, 'products', 't', 'b', 'k', ',', '{sku}', '{sku}', 20, 2, now(), ${finalized ? 'now()' : 'NULL'})`,
        [id],
      );
    const finished = await job('succeeded');
    await run(finished, true);
    await env.pool.query(
      `INSERT INTO csv_import_batches (job_id, batch_number, row_count, finalized_at, rows_inserted) VALUES ($1, 1, 10, now(), 10), ($1, 2, 10, now(), 10)`,
      [finished],
    );
    // A finalize that stopped halfway (its job back in the queue).
    const halfway = await job('queued');
    await run(halfway, false);
    await env.pool.query(
      `INSERT INTO csv_import_batches (job_id, batch_number, row_count, finalized_at, rows_inserted) VALUES ($1, 1, 10, now(), 10), ($1, 2, 10, NULL, 0)`,
      [halfway],
    );
    await env.pool.query(`INSERT INTO csv_import_staged_rows (job_id, batch_number, row_number, v1) VALUES ($1, 2, 12, 'SKU-1')`, [halfway]);

    await migrate(env.databaseUrl);
    const { getCsvImportRun } = await import('../worker/imports/csv/run-record.js');
    expect(await getCsvImportRun(env.pool, finished)).toMatchObject({ rowsInserted: 20, finalizedBatches: 2, encoding: 'utf-8', objectEtag: null });
    // Its written batch keeps its counts; the unwritten one (staged rows gone) is dropped, and the run must be validated again.
    expect(await getCsvImportRun(env.pool, halfway)).toMatchObject({ validatedAt: null, finalizedBatches: 1, rowsInserted: 10 });
    const { rows } = await env.pool.query('SELECT count(*)::int AS n FROM csv_import_batches WHERE job_id = $1', [halfway]);
    expect(rows[0].n).toBe(1);
    expect(await tables()).not.toContain('csv_import_staged_rows');
    await env.pool.query('DELETE FROM jobs WHERE id = ANY($1)', [[finished, halfway]]);
  });

  it('20261206063000 keeps every run, its id and its records both ways; the way back restores the foreign keys', async () => {
    const { enqueueJob } = await import('../worker/queue/enqueue.js');
    const { archiveFinishedRuns } = await import('../worker/queue/maintenance.js');
    const { job: finished } = await enqueueJob(env.pool, { kind: 'noop' });
    const { job: queued } = await enqueueJob(env.pool, { kind: 'noop', dedupeKey: 'converted' });
    await env.pool.query("UPDATE jobs SET state = 'succeeded', attempts = 1, finished_at = now() - interval '1 hour' WHERE id = $1", [finished.id]);
    await env.pool.query(`INSERT INTO import_items (job_id, item_no, relative_path, size_bytes) VALUES ($1, 1, 'a.pdf', 10)`, [finished.id]);
    expect(await archiveFinishedRuns(env.pool, 60)).toBe(1);
    const runs = async () =>
      (await env.pool.query('SELECT id, state, kind, dedupe_key FROM jobs WHERE id = ANY($1) ORDER BY id', [[finished.id, queued.id]])).rows;
    const before = await runs();
    const foreignKeys = async () =>
      Number((await env.pool.query("SELECT count(*) AS n FROM pg_constraint WHERE contype = 'f' AND confrelid = 'jobs'::regclass")).rows[0].n);

    expect((await revertThrough('20261206063000_jobs_live_and_archive')).slice(-1)).toEqual(['20261206063000_jobs_live_and_archive']);
    expect((await env.pool.query("SELECT relkind FROM pg_class WHERE relname = 'jobs'")).rows[0].relkind).toBe('r');
    expect(await runs()).toEqual(before);
    expect(await foreignKeys()).toBe(6);
    const { rows: between } = await env.pool.query<{ id: number }>("INSERT INTO jobs (kind) VALUES ('noop') RETURNING id");
    expect(Number(between[0]!.id)).toBeGreaterThan(queued.id);

    await migrate(env.databaseUrl);
    expect((await env.pool.query("SELECT relkind FROM pg_class WHERE relname = 'jobs'")).rows[0].relkind).toBe('p');
    expect(await runs()).toEqual(before);
    expect(await foreignKeys()).toBe(0);
    const { rows: items } = await env.pool.query('SELECT count(*)::int AS n FROM import_items WHERE job_id = $1', [finished.id]);
    expect(items[0].n).toBe(1);
    // The numbering goes on from the runs made in between, and the dedupe key still holds.
    const { job: after, reused } = await enqueueJob(env.pool, { kind: 'noop', dedupeKey: 'converted' });
    expect({ id: after.id, reused }).toEqual({ id: queued.id, reused: true });
    const { job: fresh } = await enqueueJob(env.pool, { kind: 'noop' });
    expect(fresh.id).toBeGreaterThan(Number(between[0]!.id));
    await env.pool.query('DELETE FROM jobs');
    expect((await env.pool.query('SELECT count(*)::int AS n FROM import_items')).rows[0].n).toBe(0);
  });

  it('every column that points at a run is in job_child_tables, or kept on purpose when its run is deleted', async () => {
    // Foreign keys cannot point at the partitioned jobs: a new table that forgets to register keeps rows of deleted runs.
    const outliveTheirRun: Record<string, string> = {
      'backfill_before_images.job_id': 'an undo needs them after retention deleted the run (20261205000400)',
      'job_actions.job_id': 'the history of actions outlives its run: a purge keeps who purged it (20261205000300)',
      'job_notifications.job_id': 'a notification is sent after its run is gone (20261205103839)',
      'products.last_import_job_id': 'a plain marker on a business row (docs/ARCHITECTURE.md)',
    };
    const { rows: columns } = await env.pool.query<{ name: string }>(
      `SELECT table_name || '.' || column_name AS name FROM information_schema.columns
       WHERE table_schema = 'public' AND (column_name = 'job_id' OR column_name LIKE '%\\_job\\_id') ORDER BY 1`,
    );
    const { rows: registered } = await env.pool.query<{ name: string }>(
      "SELECT table_name || '.' || column_name AS name FROM job_child_tables ORDER BY 1",
    );
    const registeredNames = registered.map((row) => row.name);
    expect(columns.map((row) => row.name).filter((name) => !registeredNames.includes(name) && !(name in outliveTheirRun))).toEqual([]);
    expect(registeredNames).toEqual([
      'audit_findings.job_id', 'csv_import_batches.job_id', 'csv_import_row_errors.job_id', 'csv_import_runs.job_id',
      'documents.import_job_id', 'import_items.job_id', 'import_plan_roots.job_id',
    ]);
  });

  it('jobs_kind_check (20261206213000) refuses exactly the kinds JOB_KIND_PATTERN refuses', async () => {
    const kinds = ['noop', 'csv-import', '0', 'a-', 'a--b', 'x'.repeat(64), 'x'.repeat(65), '', '-a', 'A', 'a_b', 'a b', 'a.b', 'é', 'aé', 'a\n', ' a', 'a-Z'];
    const accepted: string[] = [];
    for (const kind of kinds) {
      const outcome = await env.pool.query("INSERT INTO jobs (kind) VALUES ($1)", [kind]).then(
        () => 'accepted',
        (error: { constraint?: string }) => error.constraint,
      );
      if (outcome === 'accepted') accepted.push(kind);
      else expect(outcome, kind).toBe('jobs_kind_check');
    }
    expect(accepted).toEqual(kinds.filter((kind) => JOB_KIND_PATTERN.test(kind)));
    expect(accepted).toHaveLength(6);
    // A run's other updates (a claim, a completion) still pass the rule the constraint now holds.
    await expect(env.pool.query("UPDATE jobs SET kind = 'Bad' WHERE kind = 'noop'")).rejects.toMatchObject({ constraint: 'jobs_kind_check' });
  });

  it("enqueue numbers runs from the identity of jobs, on every version, for a role granted only its tables", async () => {
    // Before Postgres 17 an insert into jobs_live gets no id of its own: enqueue names it (bulk_import_next_job_id).
    const direct = await env.pool.query<{ id: number }>(`INSERT INTO jobs (kind) VALUES ('noop') RETURNING id`);
    const role = await createTablesOnlyRole(env, 'bi_enqueue');
    const limited = role.pool;
    try {
      expect(await enqueueJobs(limited, 'noop', [{}, {}])).toEqual([direct.rows[0]!.id + 1, direct.rows[0]!.id + 2]);
      const { job } = await enqueueJob(limited, { kind: 'noop', dedupeKey: 'numbered' });
      expect(job.id).toBe(direct.rows[0]!.id + 3);
      // The role has no right on the sequence itself: an identity needs none, and neither does enqueue.
      await expect(limited.query(`SELECT nextval(pg_get_serial_sequence('jobs', 'id'))`)).rejects.toMatchObject({ code: '42501' });
    } finally {
      await role.drop();
    }
  });

  it("20261207060000: earlier actions of the run's own tenant's keys read as the tenant's, every other as an operator's", async () => {
    expect(await revertThrough('20261207060000_job_actions_by_operator')).toContain('20261207060000_job_actions_by_operator');
    const { apiKey } = await createApiKey(env.pool, { name: 'migrated-tenant-key', role: 'tenant', tenantId: 'migrated' });
    await createApiKey(env.pool, { name: 'migrated-operator-key', role: 'operator' });
    await createApiKey(env.pool, { name: 'migrated-elsewhere-key', role: 'tenant', tenantId: 'elsewhere' });
    const { rows } = await env.pool.query<{ id: number }>(`INSERT INTO jobs (kind, tenant_id) VALUES ('noop', 'migrated') RETURNING id`);
    const jobId = rows[0]!.id;
    await env.pool.query(
      `INSERT INTO job_actions (job_id, action, actor) VALUES ($1, 'submitted', $2), ($1, 'canceled', 'migrated-operator-key'),
         ($1, 'requeued', 'cli:alice'), ($1, 'finalized', 'migrated-elsewhere-key')`,
      [jobId, apiKey.name],
    );
    await migrate(env.databaseUrl);
    expect((await listJobActions(env.pool, jobId)).map((action) => [action.actor, action.byOperator])).toEqual([
      ['migrated-tenant-key', false],
      ['migrated-operator-key', true],
      ['cli:alice', true],
      // Another tenant's key cannot have acted on this run: read as an operator's.
      ['migrated-elsewhere-key', true],
    ]);
    // Judged when read, not rewritten: the column stays empty for them (the migration holds no lock for a rewrite).
    expect((await env.pool.query('SELECT count(*)::int AS n FROM job_actions WHERE by_operator IS NOT NULL')).rows[0].n).toBe(0);
    // An action recorded without it (by the previous release, during a deploy) is judged the same way; one recorded
    // with it is read as recorded.
    await env.pool.query(
      `INSERT INTO job_actions (job_id, action, actor, by_operator) VALUES ($1, 'finalized', 'migrated-tenant-key', NULL),
         ($1, 'rejected', 'migrated-tenant-key', true)`,
      [jobId],
    );
    expect((await listJobActions(env.pool, jobId)).slice(-2).map((action) => action.byOperator)).toEqual([false, true]);
    expect((await getRunRecord(env.pool, jobId))!.actions.map((action) => action.byOperator)).toEqual([false, true, true, true, false, true]);
    await env.pool.query('DELETE FROM jobs WHERE id = $1', [jobId]);
  });

  it('never holds the queue behind a migration waiting for a lock: it gives up the wait, lets claims pass, tries again', async () => {
    // 20261206213000 changes a constraint of jobs (ACCESS EXCLUSIVE). A transaction that wrote to jobs and is still
    // open (ROW EXCLUSIVE) makes it wait; a claim that comes after queues behind the migration's request, not the
    // transaction's, which it would not conflict with.
    const reverted = await revertThrough('20261206213000_kind_check_without_regex');
    const writer = await env.pool.connect();
    const retries: LockRetry[] = [];
    let migrating: Promise<string[]> | undefined;
    try {
      await writer.query('BEGIN');
      await writer.query('LOCK TABLE jobs IN ROW EXCLUSIVE MODE');
      migrating = migrate(env.databaseUrl, {
        lockTimeoutMs: 300,
        lockAttempts: 1_000,
        retryDelayMs: () => 0,
        onLockRetry: (retry) => retries.push(retry),
      });
      await waitFor(async () => {
        const { rows } = await env.pool.query(
          "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'bulk-import-migrate' AND wait_event_type = 'Lock'",
        );
        return rows.length > 0;
      });
      // Without the lock timeout this claim would wait as long as the writer's transaction stays open.
      expect(await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['none-queued'] })).toEqual([]);
      await waitFor(async () => retries.length > 0);
    } finally {
      await writer.query('COMMIT');
      writer.release();
    }
    expect(await migrating).toEqual([...reverted].reverse());
    expect(retries[0]).toMatchObject({ attempt: 1, attempts: 1_000, lockTimeoutMs: 300 });
  });

  it('fails with a clear error, and changes nothing, when every attempt waited for a lock in vain', async () => {
    const reverted = await revertThrough('20261206213000_kind_check_without_regex');
    const writer = await env.pool.connect();
    try {
      await writer.query('BEGIN');
      await writer.query('LOCK TABLE jobs IN ROW EXCLUSIVE MODE');
      await expect(migrate(env.databaseUrl, { lockTimeoutMs: 100, lockAttempts: 2, retryDelayMs: () => 0 })).rejects.toThrow(
        /migrations not applied: 2 attempts each waited 100 ms for a lock and gave up.*Nothing was changed/,
      );
      // The CLI says each retry on stderr, then why it gave up.
      const cli = await runCli(env, ['migrate', '--lock-timeout-ms', '100', '--lock-attempts', '2']);
      expect(cli.code).toBe(1);
      expect(cli.stderr).toMatch(/a migration waited 100 ms for a lock and was rolled back \(attempt 1 of 2\); trying again in \d+\.\d s\n/);
      expect(cli.stderr).toMatch(/bulk-import: migrations not applied: 2 attempts/);
      expect(cli.stdout).toBe('');
    } finally {
      await writer.query('COMMIT');
      writer.release();
    }
    const { rows } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pgmigrations WHERE name = ANY($1)', [reverted]);
    expect(rows[0]!.n).toBe(0);
    expect(await migrate(env.databaseUrl)).toEqual([...reverted].reverse());
  });

  it('is a no-op when the database is up to date', async () => {
    expect(await migrate(env.databaseUrl)).toEqual([]);
  });
});
