// The rollback of a backfill: a run with "saveBeforeImage": true keeps key + old value of every row it writes (in
// the batch's transaction, so images = rows written even when the run stops early), and `bulk-import backfill undo`
// writes the old values back — only to rows nothing wrote since (same row version, same value) — and is refused while
// a run is active; `backfill discard` drops the images of one run or all (keyset batches, refused while a run is
// active, --dry-run counts). Real Postgres, real worker, the real CLI.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { BackfillRegistry, defaultBackfills } from '../worker/backfills/registry.js';
import type { BackfillDefinition } from '../worker/backfills/types.js';
import { countBeforeImages, discardBeforeImages, undoBackfill } from '../worker/backfills/undo.js';
import type { Pool } from '../worker/db/pool.js';
import { backfillHandler, createBackfillHandler } from '../worker/handlers/backfill.js';
import { HandlerRegistry } from '../worker/handlers/registry.js';
import type { AnyJobHandler } from '../worker/handlers/types.js';
import { PermanentJobError } from '../worker/queue/errors.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { runCli, runCliJson } from './support/cli-runner.js';
import { testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const workers: Worker[] = [];
const HISTORICAL = 4_000;
const ALREADY_FILLED = 200;
const NAME = 'documents-file-extension';

beforeEach(async () => {
  await env.pool.query('ALTER TABLE documents DISABLE TRIGGER documents_file_extension_on_write');
  await insertDocuments(1, HISTORICAL);
  await env.pool.query('ALTER TABLE documents ENABLE TRIGGER documents_file_extension_on_write');
  await insertDocuments(HISTORICAL + 1, HISTORICAL + ALREADY_FILLED);
});
afterEach(async () => {
  await stopWorkers();
  await env.pool.query('TRUNCATE documents RESTART IDENTITY; TRUNCATE backfill_before_images; DELETE FROM jobs');
});

async function stopWorkers(): Promise<void> {
  await Promise.all(workers.splice(0).map((worker) => worker.stop()));
}

async function insertDocuments(from: number, to: number): Promise<void> {
  await env.pool.query(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
     SELECT 'tenant-' || (g % 3), 'inbox/' || g || (ARRAY['.Pdf', '.png', '', '.tar.gz'])[1 + g % 4], repeat('a', 64), g,
            'application/octet-stream', 'bucket', 'documents/' || g
     FROM generate_series($1::int, $2::int) AS g`,
    [from, to],
  );
}

async function run(payload: Record<string, unknown>, handlers: AnyJobHandler[] = [backfillHandler]): Promise<JobRow> {
  if (workers.length === 0) {
    const worker = testWorker(env, handlers, { concurrency: 2 });
    workers.push(worker);
    void worker.start();
  }
  const { job } = await submitJob(env.pool, { kind: 'backfill', payload }, { registry: new HandlerRegistry(handlers) });
  return waitFor(async () => {
    const current = await requireJob(env.pool, job.id);
    return ['succeeded', 'partial', 'failed', 'dead', 'canceled'].includes(current.state) ? current : undefined;
  }, 60_000, 50);
}

async function extensions(): Promise<Map<number, string | null>> {
  const { rows } = await env.pool.query<{ id: string; file_extension: string | null }>('SELECT id, file_extension FROM documents ORDER BY id');
  return new Map(rows.map((row) => [Number(row.id), row.file_extension]));
}

async function imageCount(): Promise<number> {
  return (await env.pool.query('SELECT count(*)::int AS n FROM backfill_before_images')).rows[0].n;
}

describe('backfill before-images and undo', () => {
  it('saves a before-image per written row and undo restores exactly the rows still holding what the backfill wrote', async () => {
    const before = await extensions();
    const job = await run({ name: NAME, saveBeforeImage: true, batchSize: 700, parallelism: 2 });
    expect(job.state).toBe('succeeded');
    expect(job.result).toMatchObject({ beforeImage: true, complete: true, rowsWritten: HISTORICAL });

    const images = await env.pool.query(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE old_value IS NULL)::int AS old_null,
              count(DISTINCT job_id)::int AS jobs, min(job_id) AS job_id, bool_and(table_name = 'documents' AND column_name = 'file_extension') AS target
       FROM backfill_before_images WHERE backfill = $1`,
      [NAME],
    );
    expect(images.rows[0]).toMatchObject({ n: HISTORICAL, old_null: HISTORICAL, jobs: 1, job_id: expect.anything(), target: true });
    expect(Number(images.rows[0].job_id)).toBe(job.id);
    const sample = await env.pool.query("SELECT new_value, tenant_id FROM backfill_before_images WHERE row_key = '1'");
    expect(sample.rows[0]).toEqual({ new_value: 'png', tenant_id: 'tenant-1' });

    // After the run, the application edits one filled row and deletes another: undo must leave both alone.
    await env.pool.query("UPDATE documents SET file_extension = 'edited' WHERE id = 5");
    await env.pool.query('DELETE FROM documents WHERE id = 7');

    const dry = await runCliJson<Record<string, unknown>>(env, ['backfill', 'undo', NAME, '--dry-run']);
    expect(dry).toEqual({ dryRun: true, backfill: NAME, saved: HISTORICAL, restorable: HISTORICAL - 2, changed: 1, deleted: 1 });
    expect(await imageCount()).toBe(HISTORICAL);

    const undo = await runCliJson<Record<string, unknown>>(env, ['backfill', 'undo', NAME, '--batch-size', '900']);
    expect(undo).toMatchObject({ backfill: NAME, restored: HISTORICAL - 2, skipped: 2, skippedKeys: ['5', '7'] });

    const after = await extensions();
    for (const [id, value] of before) {
      if (id === 7) expect(after.has(7)).toBe(false);
      else if (id === 5) expect(after.get(5)).toBe('edited');
      else expect(after.get(id), `row ${id}`).toBe(value);
    }
    // The skipped rows keep their before-images; an undo run again restores nothing more; discard drops them.
    expect(await imageCount()).toBe(2);
    const again = await runCliJson<Record<string, unknown>>(env, ['backfill', 'undo', NAME]);
    expect(again).toMatchObject({ restored: 0, skipped: 2 });
    const status = await runCliJson<{ missing: number }>(env, ['backfill', 'status', NAME]);
    expect(status.missing).toBe(HISTORICAL - 2);
    expect(await runCliJson(env, ['backfill', 'discard', NAME, '--all'])).toEqual({ backfill: NAME, discarded: 2 });
    expect(await imageCount()).toBe(0);
  });

  it('images equal rows written for a run stopped early, and undo can be limited to one tenant', async () => {
    const job = await run({ name: NAME, saveBeforeImage: true, batchSize: 500, maxRows: 1_700 });
    expect(job.result).toMatchObject({ rowsWritten: 1_700, stoppedBy: 'maxRows' });
    expect(await imageCount()).toBe(1_700);
    const perTenant = await env.pool.query<{ tenant_id: string; n: number }>(
      'SELECT tenant_id, count(*)::int AS n FROM backfill_before_images GROUP BY 1 ORDER BY 1',
    );
    const tenant0 = perTenant.rows.find((row) => row.tenant_id === 'tenant-0')!.n;

    const undo = await runCliJson<{ restored: number }>(env, ['backfill', 'undo', NAME, '--tenant', 'tenant-0', '--job', String(job.id)]);
    expect(undo.restored).toBe(tenant0);
    expect(await imageCount()).toBe(1_700 - tenant0);
    const filledTenant0 = await env.pool.query(
      "SELECT count(*)::int AS n FROM documents WHERE tenant_id = 'tenant-0' AND id <= $1 AND file_extension IS NOT NULL",
      [HISTORICAL],
    );
    expect(filledTenant0.rows[0].n).toBe(0);
  });

  it('undo is refused while a run of the backfill is queued or running', async () => {
    await run({ name: NAME, saveBeforeImage: true, maxRows: 100 });
    await stopWorkers();
    const { job } = await submitJob(env.pool, { kind: 'backfill', payload: { name: NAME } });
    const refused = await runCli(env, ['backfill', 'undo', NAME]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`run ${job.id} of backfill ${NAME} is active`);
    expect(await imageCount()).toBe(100);
  });

  it('restores non-NULL old values of a TypeScript compute, and refuses saveBeforeImage for a multi-column write', async () => {
    // "missing" is a placeholder value here, so the before-image holds a real value, not NULL.
    await env.pool.query("UPDATE documents SET file_extension = 'unknown' WHERE id <= 1000");
    const placeholder: BackfillDefinition = {
      name: 'extension-from-placeholder',
      description: 'test: replaces the placeholder',
      table: 'documents',
      key: { column: 'id', type: 'bigint' },
      tenantColumn: 'tenant_id',
      targetColumn: 'file_extension',
      sourceColumns: ['source_path'],
      missing: (row) => `${row}.file_extension = 'unknown'`,
      compute: { language: 'typescript', valueType: 'text', compute: (row) => String(row.source_path).split('.').at(-1)!.toLowerCase() },
    };
    const multiColumn: BackfillDefinition = {
      ...placeholder,
      name: 'writes-two-columns',
      write: (value) => `file_extension = ${value}, content_type = 'x'`,
    };
    const registry = new BackfillRegistry([placeholder, multiColumn]);
    const handler = createBackfillHandler(registry);
    expect(() => handler.parsePayload({ name: 'writes-two-columns', saveBeforeImage: true })).toThrow(PermanentJobError);

    const job = await run({ name: 'extension-from-placeholder', saveBeforeImage: true, batchSize: 300 }, [handler]);
    expect(job.result).toMatchObject({ rowsWritten: 1_000, complete: true });
    const images = await env.pool.query(
      "SELECT count(*)::int AS n FROM backfill_before_images WHERE backfill = 'extension-from-placeholder' AND old_value = '\"unknown\"'::jsonb",
    );
    expect(images.rows[0].n).toBe(1_000);

    const outcome = await undoBackfill(env.pool, registry.require('extension-from-placeholder'), { tenantId: null, jobId: null, batchSize: 256 });
    expect(outcome).toMatchObject({ restored: 1_000, skipped: 0, batches: 4 });
    const restored = await env.pool.query("SELECT count(*)::int AS n FROM documents WHERE id <= 1000 AND file_extension = 'unknown'");
    expect(restored.rows[0].n).toBe(1_000);
  });

  it('undo leaves a row written since the backfill, even with the value the backfill wrote; a lock or freezing is no write', async () => {
    const job = await run({ name: NAME, saveBeforeImage: true, batchSize: 1_000 });
    expect(job.result).toMatchObject({ rowsWritten: HISTORICAL, complete: true });
    const versions = await env.pool.query('SELECT count(*)::int AS n FROM backfill_before_images WHERE written_xid IS NOT NULL');
    expect(versions.rows[0].n).toBe(HISTORICAL);
    // "Changed since" is any write to the row after the backfill's: it makes a new row version.
    // 8: renamed by the application to another PDF; the trigger writes 'pdf' again, the value the backfill wrote.
    await env.pool.query("UPDATE documents SET source_path = 'inbox/renamed.PDF' WHERE id = 8");
    // 12: the application writes the column itself, with the value the backfill wrote.
    await env.pool.query("UPDATE documents SET file_extension = 'pdf' WHERE id = 12");
    // 13: the application changes another column only.
    await env.pool.query('UPDATE documents SET size_bytes = size_bytes + 1 WHERE id = 13');
    // 16: only locked (FOR UPDATE) by a committed transaction: no new version, so it is restored.
    await env.pool.query('BEGIN; SELECT id FROM documents WHERE id = 16 FOR UPDATE; COMMIT');
    // 21: an image saved before migration 20261207150000 (no version): the value rule, as before, restores it.
    await env.pool.query("UPDATE backfill_before_images SET written_xid = NULL WHERE row_key = '21'");
    await env.pool.query("UPDATE documents SET file_extension = 'png' WHERE id = 21");
    // Frozen tuples keep their xmin (Postgres 9.4 and later): the rows the backfill wrote stay restorable. VACUUM freezes
    // only what no running transaction can still see: a snapshot held elsewhere at that moment (another session of
    // this busy machine) leaves the rows as they are, so it is run until the table is frozen past the writes.
    const frozen = await waitFor(async () => {
      await env.pool.query('VACUUM (FREEZE) documents');
      const { rows } = await env.pool.query(
        "SELECT bool_and(age(d.relfrozenxid) < age(i.written_xid::xid)) AS frozen FROM pg_class d, backfill_before_images i WHERE d.oid = 'documents'::regclass AND i.written_xid IS NOT NULL",
      );
      return rows[0].frozen === true ? rows[0] : undefined;
    });
    expect(frozen.frozen).toBe(true);

    const dry = await runCliJson<Record<string, unknown>>(env, ['backfill', 'undo', NAME, '--dry-run']);
    expect(dry).toEqual({ dryRun: true, backfill: NAME, saved: HISTORICAL, restorable: HISTORICAL - 3, changed: 3, deleted: 0 });
    const undo = await runCliJson<Record<string, unknown>>(env, ['backfill', 'undo', NAME, '--batch-size', '1500']);
    expect(undo).toMatchObject({ restored: HISTORICAL - 3, skipped: 3, skippedKeys: ['12', '13', '8'] });
    const rows = await env.pool.query<{ id: string; file_extension: string | null }>(
      'SELECT id, file_extension FROM documents WHERE id IN (8, 12, 13, 16, 21) ORDER BY id',
    );
    expect(rows.rows.map((row) => [Number(row.id), row.file_extension])).toEqual([
      [8, 'pdf'],
      [12, 'pdf'],
      [13, 'png'],
      [16, null],
      [21, null],
    ]);
    expect(await imageCount()).toBe(3);
  });

  it('discard needs --job or --all, counts with --dry-run, and is refused while a run of the backfill is active', async () => {
    const job = await run({ name: NAME, saveBeforeImage: true, maxRows: 300 });
    const unnamed = await runCli(env, ['backfill', 'discard', NAME]);
    expect(unnamed.code).toBe(1);
    expect(unnamed.stderr).toContain('name the run (--job <id>), or every run of the backfill (--all)');
    const both = await runCli(env, ['backfill', 'discard', NAME, '--job', String(job.id), '--all']);
    expect(both.code).toBe(1);
    expect(both.stderr).toContain('--job and --all cannot be used together');
    // --job names a run of this backfill that saved images: a missing id, the dry run's id (the procedure makes both)
    // or a run without saveBeforeImage is refused, not "restored 0 rows".
    const dryRun = await run({ name: NAME, dryRun: true, maxRows: 10 });
    const plain = await run({ name: NAME, maxRows: 1 });
    for (const [id, reason] of [
      ['999999', 'job 999999 does not exist, and no before-image of backfill'],
      [String(dryRun.id), `job ${dryRun.id} is a dry run of backfill ${NAME}: it wrote nothing`],
      [String(plain.id), `job ${plain.id} ran without "saveBeforeImage"`],
    ] as const) {
      for (const command of [['undo', NAME, '--job', id], ['undo', NAME, '--job', id, '--dry-run'], ['discard', NAME, '--job', id]]) {
        const refusal = await runCli(env, ['backfill', ...command]);
        expect(refusal.code, command.join(' ')).toBe(1);
        expect(refusal.stderr, command.join(' ')).toContain(reason);
      }
    }
    // With --tenant, the run must be that tenant's; a run retention deleted is still named by its before-images.
    const tenantRun = await run({ name: NAME, tenant: 'tenant-1', saveBeforeImage: true, maxRows: 5 });
    const otherTenant = await runCli(env, ['backfill', 'undo', NAME, '--job', String(tenantRun.id), '--tenant', 'tenant-0', '--dry-run']);
    expect(otherTenant.code).toBe(1);
    expect(otherTenant.stderr).toContain(`job ${tenantRun.id} wrote tenant tenant-1's rows, not those of --tenant tenant-0`);
    await env.pool.query('DELETE FROM jobs WHERE id = $1', [tenantRun.id]);
    expect(await runCliJson(env, ['backfill', 'discard', NAME, '--job', String(tenantRun.id)])).toEqual({ backfill: NAME, discarded: 5 });
    expect(await runCliJson(env, ['backfill', 'discard', NAME, '--job', String(job.id), '--dry-run'])).toEqual({
      dryRun: true,
      backfill: NAME,
      wouldDiscard: 300,
      restorable: 300,
    });
    expect(await imageCount()).toBe(300);

    await stopWorkers();
    const { job: active } = await submitJob(env.pool, { kind: 'backfill', payload: { name: NAME } });
    const refused = await runCli(env, ['backfill', 'discard', NAME, '--job', String(job.id)]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`run ${active.id} of backfill ${NAME} is active: cancel it (bulk-import cancel ${active.id}) before a discard`);
    expect(await imageCount()).toBe(300);

    await env.pool.query('DELETE FROM jobs WHERE id = $1', [active.id]);
    expect(await runCliJson(env, ['backfill', 'discard', NAME, '--job', String(job.id)])).toEqual({ backfill: NAME, discarded: 300 });
    expect(await imageCount()).toBe(0);
  });

  it('discard reads each before-image once, however many batches it takes (keyset, no scan per batch)', async () => {
    const images = 40_000;
    await env.pool.query(
      `INSERT INTO backfill_before_images (backfill, row_key, table_name, column_name, tenant_id, old_value, new_value, job_id)
       SELECT $1, g::text, 'documents', 'file_extension', 'tenant-0', NULL, '"pdf"', 1 + g % 2 FROM generate_series(1, $2::int) AS g`,
      [NAME, images],
    );
    await env.pool.query('ANALYZE backfill_before_images');
    // One transaction, so that pg_stat_xact_user_tables counts exactly the discard's reads of the table.
    const client = await env.pool.connect();
    try {
      await client.query('BEGIN');
      const single = { query: (text: string, values?: unknown[]) => client.query(text, values) } as unknown as Pool;
      const compiled = defaultBackfills().require(NAME);
      const deleted = await discardBeforeImages(single, compiled, { tenantId: null, jobId: 1 }, 1_000);
      expect(deleted).toBe(images / 2);
      const { rows } = await client.query(
        `SELECT seq_scan::int, seq_tup_read::int, coalesce(idx_tup_fetch, 0)::int AS idx_tup_fetch
         FROM pg_stat_xact_user_tables WHERE relid = 'backfill_before_images'::regclass`,
      );
      // 20 batches: a scan of the table per batch read 20 × 40,000 rows and more; a keyset walk reads each once.
      expect(rows[0].seq_tup_read + rows[0].idx_tup_fetch).toBeLessThanOrEqual(images + 20 * 1_000);
      await client.query('COMMIT');
    } finally {
      client.release();
    }
    const left = await env.pool.query('SELECT count(*)::int AS n, bool_and(job_id = 2) AS others FROM backfill_before_images');
    expect(left.rows[0]).toEqual({ n: images / 2, others: true });
  });

  it('status --check fails for a tenant with no rows; --tenant is refused for a backfill without a tenant column', async () => {
    await run({ name: NAME });
    const typo = await runCli(env, ['backfill', 'status', NAME, '--tenant', 'tenant-9', '--check']);
    expect(typo.code).toBe(1);
    expect(typo.stderr).toContain('tenant tenant-9 has no rows in documents: nothing to check (is the tenant id right?)');
    expect(typo.stdout).toContain('tenant tenant-9 has no rows in documents');
    const right = await runCli(env, ['backfill', 'status', NAME, '--tenant', 'tenant-1', '--check']);
    expect(right.code).toBe(0);

    const untenanted: BackfillDefinition = {
      name: 'extension-without-tenant',
      description: 'test: a backfill whose table has no tenant column',
      table: 'documents',
      key: { column: 'id', type: 'bigint' },
      targetColumn: 'file_extension',
      sourceColumns: ['source_path'],
      compute: { language: 'sql', expression: (row) => `documents_file_extension(${row}.source_path)` },
    };
    const compiled = new BackfillRegistry([untenanted]).require('extension-without-tenant');
    const scope = { tenantId: 'tenant-1', jobId: null };
    const refusal = 'backfill extension-without-tenant has no tenant column: --tenant cannot be used';
    await expect(undoBackfill(env.pool, compiled, { ...scope, batchSize: 100 })).rejects.toThrow(refusal);
    await expect(countBeforeImages(env.pool, compiled, scope)).rejects.toThrow(refusal);
    await expect(discardBeforeImages(env.pool, compiled, scope)).rejects.toThrow(refusal);
  });

  it('undo --batch-size takes a whole number from 1 to 100,000 only', async () => {
    await run({ name: NAME, saveBeforeImage: true, maxRows: 100 });
    for (const value of ['1e3', '0x3e8', '2.5', '0', '100001']) {
      const refused = await runCli(env, ['backfill', 'undo', NAME, '--batch-size', value]);
      expect(refused.code, value).not.toBe(0);
      expect(refused.stderr, value).toContain('expected a whole number from 1 to 100,000');
    }
    expect(await imageCount()).toBe(100);
    expect(await runCliJson(env, ['backfill', 'undo', NAME, '--batch-size', '100000'])).toMatchObject({ restored: 100 });
  });
});

