// Every operator command against a real database, in both output modes (aligned tables for people, --json for
// scripts), through the real CLI entry point: jobs, show, watch, cancel, requeue, dead list/replay/purge, stats.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { useTestEnvironment } from './harness.js';
import { runCli, runCliIntoClosedPipe, runCliJson, spawnCli } from './support/cli-runner.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
afterEach(async () => {
  await killAll(spawned.splice(0));
  await env.pool.query('DELETE FROM jobs');
});
afterAll(async () => killAll(spawned));

/** The header line of a human table and the row that starts with `first`. */
function tableRow(output: string, first: string | number): string[] {
  const row = output.split('\n').find((line) => line.split(/\s{2,}/)[0] === String(first));
  if (!row) throw new Error(`no row starting with ${first} in:\n${output}`);
  return row.split(/\s{2,}/);
}

async function plantDead(kind: string, deadForDays: number, tenant: string | null = null): Promise<number> {
  const { rows } = await env.pool.query<{ id: number }>(
    `INSERT INTO jobs (kind, tenant_id, payload, state, attempts, max_attempts, finished_at, last_error)
     VALUES ($1, $2, '{}', 'dead', 3, 3, now() - $3 * interval '1 day',
             jsonb_build_object('message', 'S3 unavailable', 'code', 'ServiceUnavailable', 'class', 'transient', 'attempt', 3, 'at', now()))
     RETURNING id`,
    [kind, tenant, deadForDays],
  );
  return rows[0]!.id;
}

async function plantRunning(kind: string, progress: Record<string, unknown> | null = null): Promise<number> {
  const { rows } = await env.pool.query<{ id: number }>(
    `INSERT INTO jobs (kind, payload, state, attempts, lease_owner, lease_expires_at, started_at, progress)
     VALUES ($1, '{}', 'running', 1, 'elsewhere', now() + interval '1 hour', now(), $2) RETURNING id`,
    [kind, progress],
  );
  return rows[0]!.id;
}

describe('jobs, show, cancel, requeue', () => {
  it('jobs filters by state, kind, tenant and since, as a table and as JSON', async () => {
    const a = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', payload: { sleepMs: 1 } })).job;
    const b = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'other', payload: { sleepMs: 2 } })).job;
    const old = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', payload: { sleepMs: 3 } })).job;
    await env.pool.query(`UPDATE jobs SET created_at = now() - interval '3 hours' WHERE id = $1`, [old.id]);
    const dead = await plantDead('mass-import', 1, 'acme');

    // Read-only commands: run them side by side.
    const [acme, recent, deadOnes, table, bad, newest, longestWaiting] = await Promise.all([
      runCliJson<JobRow[]>(env, ['jobs', '--tenant', 'acme']),
      runCliJson<JobRow[]>(env, ['jobs', '--tenant', 'acme', '--since', '1h', '--kind', 'noop']),
      runCliJson<JobRow[]>(env, ['jobs', '--state', 'dead,failed']),
      runCli(env, ['jobs', '--kind', 'noop']),
      runCli(env, ['jobs', '--state', 'sleeping']),
      runCliJson<JobRow[]>(env, ['jobs', '--state', 'queued', '--limit', '2']),
      runCliJson<JobRow[]>(env, ['jobs', '--state', 'queued', '--limit', '2', '--oldest-first']),
    ]);
    expect(acme.map((job) => job.id).sort()).toEqual([a.id, old.id, dead].sort());
    expect(newest.map((job) => job.id)).toEqual([old.id, b.id]);
    expect(longestWaiting.map((job) => job.id)).toEqual([a.id, b.id]);
    expect(recent.map((job) => job.id)).toEqual([a.id]);
    expect(deadOnes.map((job) => job.id)).toEqual([dead]);

    expect(table.code).toBe(0);
    const [header] = table.stdout.split('\n');
    expect(header!.split(/\s{2,}/)).toEqual(['ID', 'KIND', 'STATE', 'TENANT', 'ATTEMPTS', 'PROGRESS', 'CREATED', 'AGE']);
    expect(tableRow(table.stdout, b.id).slice(1, 5)).toEqual(['noop', 'queued', 'other', '0/5']);
    // Columns line up: every row's STATE column starts where the header's does.
    const stateAt = header!.indexOf('STATE');
    for (const line of table.stdout.trim().split('\n').slice(1)) expect(line.slice(stateAt, stateAt + 6)).toBe('queued');

    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('unknown state(s) sleeping');
  });

  it('show lists state, attempts, progress, last error and the failed items of the kind', async () => {
    const id = await plantDead('mass-import', 0, 'acme');
    await env.pool.query(`UPDATE jobs SET progress = '{"done": 3, "total": 5, "phase": "importing"}' WHERE id = $1`, [id]);
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       VALUES ($1, 0, 'a/ok.pdf', 10, 'done', NULL, NULL, NULL, 1),
              ($1, 1, 'a/broken.pdf', 20, 'failed', 'UNREADABLE', 'permission denied', 'permanent', 1),
              ($1, 2, 'b/link', 0, 'failed', 'UNSAFE_ENTRY', 'symlink leaves the import root', 'permanent', 1)`,
      [id],
    );
    const [json, human, missing, notAnId] = await Promise.all([
      runCliJson<JobRow & { errors: { total: number; columns: string[]; rows: Array<Record<string, unknown>> } }>(env, ['show', String(id)]),
      runCli(env, ['show', String(id), '--errors', '1']),
      runCli(env, ['show', '999999']),
      runCli(env, ['show', 'abc']),
    ]);
    expect(json).toMatchObject({ id, kind: 'mass-import', state: 'dead', attempts: 3, lastError: { code: 'ServiceUnavailable' } });
    expect(json.errors.total).toBe(2);
    expect(json.errors.rows.map((row) => row.path).sort()).toEqual(['a/broken.pdf', 'b/link']);

    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^state\s+dead$/m);
    expect(human.stdout).toMatch(/^attempts\s+3\/3$/m);
    expect(human.stdout).toMatch(/^progress\s+3\/5 \(60%\)$/m);
    expect(human.stdout).toMatch(/^last error\s+\[transient ServiceUnavailable, attempt 3, .*\] S3 unavailable$/m);
    expect(human.stdout).toMatch(/^errors\s+2 failed item\(s\)\/row\(s\), newest 1 below/m);
    expect(human.stdout).toMatch(/^ITEM\s+PATH\s+SIZE\s+CODE\s+ERROR\s+TRIES$/m);

    expect(missing).toMatchObject({ code: 1 });
    expect(missing.stderr).toContain('job 999999 does not exist');
    expect(notAnId.code).toBe(1);
    expect(notAnId.stderr).toContain('expected a job id');
  });

  it('cancel and requeue, in both modes', async () => {
    const first = (await enqueueJob(env.pool, { kind: 'noop' })).job;
    const second = (await enqueueJob(env.pool, { kind: 'noop' })).job;
    expect(await runCliJson(env, ['cancel', String(first.id)])).toEqual({ id: first.id, state: 'canceled', cancelPending: false });
    const human = await runCli(env, ['cancel', String(second.id)]);
    expect(human.stdout.trim()).toBe(`Job ${second.id} canceled.`);
    expect(await runCliJson(env, ['requeue', String(first.id)])).toMatchObject({ id: first.id, state: 'queued' });
    const requeued = await runCli(env, ['requeue', String(second.id)]);
    expect(requeued.stdout).toMatch(new RegExp(`^Job ${second.id} requeued \\(attempts 0/`));
    expect((await requireJob(env.pool, second.id)).state).toBe('queued');
    const again = await runCli(env, ['requeue', String(second.id)]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('is queued: cannot requeue it');
  });
});

describe('output', () => {
  it('a command whose reader went away (| head) ends quietly with 141, no stack trace', async () => {
    await plantRunning('noop');
    const piped = await runCliIntoClosedPipe(env, ['jobs']);
    expect(piped.stderr).toBe('');
    expect(piped.code).toBe(141);
  });
});

describe('watch', () => {
  it('follows a running job with counter, rate and ETA as plain lines; exits 0 when it succeeds', async () => {
    const id = await plantRunning('mass-import', { done: 10, total: 100, phase: 'importing' });
    const watching = spawnCli(env, ['watch', String(id), '--interval', '200']);
    await watching.waitForOutput(/10\/100/);
    // Each value once the watcher has shown the one before, however slow the machine: it sees every value.
    for (const done of [30, 50, 70]) {
      await new Promise((resolve) => setTimeout(resolve, 300));
      await env.pool.query(`UPDATE jobs SET progress = jsonb_build_object('done', $2::int, 'total', 100, 'phase', 'importing') WHERE id = $1`, [id, done]);
      await watching.waitForOutput(new RegExp(`${done}/100`));
    }
    await env.pool.query(
      `UPDATE jobs SET state = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, finished_at = now(),
         progress = '{"done": 100, "total": 100}' WHERE id = $1`,
      [id],
    );
    const result = await watching.done;
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines[0]).toMatch(new RegExp(`job ${id}  mass-import  running  10/100 \\(10%\\)  importing  rate -  eta -$`));
    // Later lines carry a measured rate (20 items in at least 300 ms: at most about 67/s) and an ETA.
    const withRate = lines.filter((line) => /rate \d+(\.\d)?\/s {2}eta \S+$/.test(line));
    expect(withRate.length).toBeGreaterThanOrEqual(2);
    const rate = Number(/rate (\d+(?:\.\d)?)\/s/.exec(withRate.at(-1)!)![1]);
    expect(rate).toBeGreaterThan(0);
    expect(rate).toBeLessThan(100);
    expect(lines.at(-1)).toMatch(new RegExp(`job ${id} mass-import succeeded after`));
  });

  it('Ctrl-C ends the wait between two refreshes at once: exit 130, however long the interval', async () => {
    const id = await plantRunning('mass-import', { done: 1, total: 4 });
    // An hour between refreshes: the old wait let Ctrl-C take effect only after it.
    const watching = spawnCli(env, ['watch', String(id), '--interval', '3600000', '--json']);
    await watching.waitForOutput(/"state":"running"/);
    watching.kill('SIGINT');
    expect((await watching.done).code).toBe(130);
    expect((await runCli(env, ['watch', String(id), '--interval', '10'])).stderr).toContain('100-3600000');
  });

  it('--json gives JSON lines and a final line; the exit code reflects the outcome (failed → 4, dead → 5)', async () => {
    const id = await plantRunning('mass-import', { done: 1, total: 4 });
    const watching = spawnCli(env, ['watch', String(id), '--interval', '100', '--json']);
    await watching.waitForOutput(/"state":"running"/);
    await env.pool.query(
      `UPDATE jobs SET state = 'failed', lease_owner = NULL, lease_expires_at = NULL, finished_at = now(),
         last_error = '{"message": "mount missing", "code": "IMPORT_ROOT_MISSING", "class": "permanent", "attempt": 1, "at": "x"}'
       WHERE id = $1`,
      [id],
    );
    const result = await watching.done;
    expect(result.code).toBe(4);
    const lines = result.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ id, kind: 'mass-import', state: 'running', done: 1, total: 4, percent: 25 });
    expect(lines.at(-1)).toMatchObject({ id, state: 'failed', final: true, lastError: { code: 'IMPORT_ROOT_MISSING' } });

    const dead = await plantDead('noop', 0);
    expect((await runCli(env, ['watch', String(dead)])).code).toBe(5);

    // A partial run keeps the last error of an attempt its worker lost: that is not why it ended partial.
    const partial = await plantRunning('mass-import');
    await env.pool.query(
      `UPDATE jobs SET state = 'partial', lease_owner = NULL, lease_expires_at = NULL, finished_at = now(),
         last_error = '{"message": "lease of worker w expired", "code": "LEASE_EXPIRED", "class": "transient", "attempt": 1, "at": "x"}'
       WHERE id = $1`,
      [partial],
    );
    const watchedPartial = await runCli(env, ['watch', String(partial)]);
    expect(watchedPartial.code).toBe(3);
    expect(watchedPartial.stdout).toContain(`partial`);
    expect(watchedPartial.stdout).toContain(`some of its items or rows failed: bulk-import errors ${partial}`);
    expect(watchedPartial.stdout).not.toContain('LEASE_EXPIRED');
    // A partial backfill failed no item (rows were left unfilled): pointed at its record, not at \`errors\`.
    const backfill = await plantRunning('backfill');
    await env.pool.query(`UPDATE jobs SET state = 'partial', lease_owner = NULL, lease_expires_at = NULL, finished_at = now() WHERE id = $1`, [backfill]);
    const watchedBackfill = await runCli(env, ['watch', String(backfill)]);
    expect(watchedBackfill.code).toBe(3);
    expect(watchedBackfill.stdout).toContain(`it left work undone: bulk-import show ${backfill} says what`);
  });

  it('without an id follows every running job until none is running or queued', async () => {
    // The runs end when the test says so, after watch has shown them running: on a busy machine the CLI may take
    // seconds to start, and jobs that end by themselves could be over before its first frame.
    const jobs = [await plantRunning('noop'), await plantRunning('noop')];
    const watching = spawnCli(env, ['watch', '--interval', '200']);
    for (const id of jobs) await watching.waitForOutput(new RegExp(`job ${id}  noop  running  rate -  eta -\n`));
    for (const id of jobs) {
      await env.pool.query(
        `UPDATE jobs SET state = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, finished_at = now() WHERE id = $1`,
        [id],
      );
      await watching.waitForOutput(new RegExp(`job ${id} noop succeeded after`));
    }
    const result = await watching.done;
    expect(result.code).toBe(0);
    for (const id of jobs) {
      expect(result.stdout).toMatch(new RegExp(`job ${id}  noop  running  rate -  eta -\n`));
      expect(result.stdout).toMatch(new RegExp(`job ${id} noop succeeded after`));
    }
    expect(result.stdout.trim().split('\n').at(-1)).toMatch(/No job is running or queued\.$/);
  });
});

describe('dead letters', () => {
  it('dead list shows dead runs with their last error; dead replay <id> brings one back and a worker runs it', async () => {
    const first = await plantDead('noop', 2, 'acme');
    const second = await plantDead('noop', 1);
    const listed = await runCliJson<Array<{ id: number; lastError: { code: string } }>>(env, ['dead', 'list']);
    expect(listed.map((job) => job.id)).toEqual([second, first]); // most recently dead first
    expect(listed[0]!.lastError.code).toBe('ServiceUnavailable');
    const table = await runCli(env, ['dead', 'list']);
    expect(table.stdout.split('\n')[0]!.split(/\s{2,}/)).toEqual(['ID', 'KIND', 'TENANT', 'ATTEMPTS', 'DEAD FOR', 'ERROR', 'MESSAGE']);
    expect(tableRow(table.stdout, first)).toEqual([String(first), 'noop', 'acme', '3/3', expect.stringMatching(/^\d+h\d\dm$/), 'ServiceUnavailable', 'S3 unavailable']);

    // All or nothing: one id that is not dead refuses the whole replay.
    const queued = (await enqueueJob(env.pool, { kind: 'noop' })).job;
    const refused = await runCli(env, ['dead', 'replay', String(first), String(queued.id)]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`not dead: ${queued.id} (queued)`);
    expect((await requireJob(env.pool, first)).state).toBe('dead');
    await env.pool.query('DELETE FROM jobs WHERE id = $1', [queued.id]);

    const replayed = await runCliJson<Array<{ id: number; state: string; attempts: number; maxAttempts: number }>>(env, ['dead', 'replay', String(first)]);
    expect(replayed).toEqual([{ id: first, kind: 'noop', state: 'queued', attempts: 3, maxAttempts: 4 }]);
    const worker = spawnWorker(env, { args: ['--exit-when-idle'] });
    spawned.push(worker);
    expect((await worker.exited).code).toBe(0);
    expect(await requireJob(env.pool, first)).toMatchObject({ state: 'succeeded', attempts: 4 });
    expect((await requireJob(env.pool, second)).state).toBe('dead');

    // A dead run whose dedupe key an active run holds (the client submitted again) stays dead, said on stderr.
    const held = await plantDead('noop', 1, 'acme');
    await env.pool.query(`UPDATE jobs SET dedupe_key = 'nightly-sync' WHERE id = $1`, [held]);
    const holder = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', dedupeKey: 'nightly-sync' })).job;
    const all = await runCli(env, ['dead', 'replay', '--all', '--reset-attempts']);
    expect(all.code).toBe(0);
    expect(all.stdout).toContain('Replayed 1 dead job(s)');
    expect(tableRow(all.stdout, second)).toEqual([String(second), 'noop', 'queued', '0/3']);
    expect(all.stderr).toContain(`left dead: job ${held} (noop): its dedupe key "nightly-sync" is in use by job ${holder.id}`);
    // A tenant chose that key: a control sequence in it reaches the operator's terminal as text.
    const hostile = await plantDead('noop', 1, 'acme');
    await env.pool.query(`UPDATE jobs SET dedupe_key = E'sync\\u009b2J\\u202e' WHERE id = $1`, [hostile]);
    const hostileHolder = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', dedupeKey: 'sync\u009b2J\u202e' })).job;
    const escaped = await runCli(env, ['dead', 'replay', '--all']);
    expect(escaped.stderr).toContain(`left dead: job ${hostile} (noop): its dedupe key "sync\\x9b2J\\u202E" is in use by job ${hostileHolder.id}`);
    expect(escaped.stderr).not.toMatch(/[\u009b\u202e]/);
    await env.pool.query('DELETE FROM jobs WHERE id = ANY($1::bigint[])', [[hostile, hostileHolder.id]]);
    expect((await requireJob(env.pool, held)).state).toBe('dead');
    await env.pool.query('DELETE FROM jobs WHERE id = ANY($1::bigint[])', [[held, holder.id]]);
    expect((await runCli(env, ['dead', 'replay'])).stderr).toContain('give the ids of dead jobs to replay, or --all');
  });

  it('dead purge deletes only runs dead longer than --older-than; --dry-run deletes nothing', async () => {
    const old = await plantDead('noop', 10);
    const recent = await plantDead('noop', 1);
    const dry = await runCliJson<{ dryRun: boolean; count: number; jobs: Array<{ id: number }> }>(env, ['dead', 'purge', '--older-than', '7d', '--dry-run']);
    expect(dry).toMatchObject({ dryRun: true, count: 1, jobs: [{ id: old }] });
    expect((await requireJob(env.pool, old)).state).toBe('dead');
    const human = await runCli(env, ['dead', 'purge', '--older-than', '7d']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^Deleted 1 dead job\(s\) dead for longer than 168h00m\.$/m);
    expect(tableRow(human.stdout, old).slice(0, 2)).toEqual([String(old), 'noop']);
    const { rows } = await env.pool.query('SELECT id FROM jobs ORDER BY id');
    expect(rows).toEqual([{ id: recent }]);
    expect((await runCli(env, ['dead', 'purge'])).stderr).toContain("required option '--older-than <duration>'");
  });
});

describe('stats', () => {
  it('counts per kind and state, and throughput in the last hour', async () => {
    await enqueueJob(env.pool, { kind: 'noop' });
    await plantDead('noop', 0);
    await plantRunning('mass-import');
    await env.pool.query(
      `INSERT INTO jobs (kind, state, attempts, started_at, finished_at) VALUES
         ('noop', 'succeeded', 1, now() - interval '70 seconds', now() - interval '10 seconds'),
         ('noop', 'succeeded', 1, now() - interval '30 seconds', now() - interval '20 seconds'),
         ('noop', 'succeeded', 1, now() - interval '3 hours', now() - interval '2 hours')`,
    );
    const json = await runCliJson<{ counts: Array<{ kind: string; state: string; count: number }>; throughput: Array<Record<string, unknown>> }>(env, ['stats']);
    expect(json.counts).toEqual([
      { kind: 'mass-import', state: 'running', count: 1 },
      { kind: 'noop', state: 'dead', count: 1 },
      { kind: 'noop', state: 'queued', count: 1 },
      { kind: 'noop', state: 'succeeded', count: 3 },
    ]);
    // Last hour: two succeeded and the dead one (finished now); the run from two hours ago is outside.
    expect(json.throughput).toEqual([
      expect.objectContaining({ kind: 'noop', finished: 3, succeeded: 2, dead: 1, failed: 0, perMinute: 3 / 60 }),
    ]);

    const human = await runCli(env, ['stats']);
    expect(human.code).toBe(0);
    expect(tableRow(human.stdout, 'noop')).toEqual(['noop', '1', '0', '0', '3', '0', '0', '1', '0', '5']);
    expect(tableRow(human.stdout, 'total')).toEqual(['total', '1', '1', '0', '3', '0', '0', '1', '0', '6']);
    expect(human.stdout).toContain('Finished in the last 1h00m');
    const throughputRow = human.stdout.split('\n').filter((line) => line.startsWith('noop')).at(-1)!.split(/\s{2,}/);
    expect(throughputRow.slice(0, 8)).toEqual(['noop', '3', '0.1', '2', '0', '0', '1', '0']);
  });
});
