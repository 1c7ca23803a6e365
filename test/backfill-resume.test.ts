// The documents-file-extension backfill run by real `bulk-import worker` processes: killed with SIGKILL mid-run, the
// next attempt resumes every range from the cursor committed with the last batch — rows done before the kill are not
// rewritten — and `bulk-import backfill status` proves 100% afterwards. Cancel and requeue resume the same way.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { cancelJob, requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import type { PartitionProgress } from '../worker/backfills/progress.js';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import { waitFor } from './support/in-process-worker.js';
import { killAll, killedSessionsEnded, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
afterEach(async () => {
  await killAll(spawned.splice(0));
  await env.pool.query('TRUNCATE documents RESTART IDENTITY; DELETE FROM jobs');
});
afterAll(async () => killAll(spawned));

const TIMINGS = {
  WORKER_LEASE_MS: '2000',
  WORKER_HEARTBEAT_MS: '500',
  WORKER_RESCUE_INTERVAL_MS: '300',
  WORKER_POLL_INTERVAL_MS: '200',
  WORKER_KINDS: 'backfill',
};

function worker(id: string): WorkerProcess {
  const process = spawnWorker(env, { entry: 'cli', env: { ...TIMINGS, WORKER_ID: id } });
  spawned.push(process);
  return process;
}

/** Documents imported before file_extension existed: the insert trigger that fills it is off while they go in. */
async function insertHistoricalDocuments(count: number): Promise<void> {
  await env.pool.query('ALTER TABLE documents DISABLE TRIGGER documents_file_extension_on_write');
  await env.pool.query(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
     SELECT 'tenant-' || (g % 4), 'scans/' || (g % 50) || '/doc-' || g || (ARRAY['.PDF', '.jpg', '', '.tar.gz'])[1 + g % 4],
            repeat('0', 64), g, 'application/octet-stream', 'bucket', 'documents/' || g
     FROM generate_series(1, $1::int) AS g`,
    [count],
  );
  await env.pool.query('ALTER TABLE documents ENABLE TRIGGER documents_file_extension_on_write');
  await env.pool.query('ANALYZE documents');
}

async function status(): Promise<{ rows: number; missing: number; complete: boolean; latestRun: { id: number; state: string } | null }> {
  const result = await runCli(env, ['backfill', 'status', 'documents-file-extension', '--json']);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout);
}

describe('backfill crash and resume (real worker processes)', () => {
  it('kill -9 mid-run: the rerun resumes from the committed cursors and does not rewrite rows already done', async () => {
    const total = 120_000;
    await insertHistoricalDocuments(total);
    expect(await status()).toMatchObject({ rows: total, missing: total, complete: false, latestRun: null });

    const { job } = await submitJob(env.pool, {
      kind: 'backfill',
      payload: { name: 'documents-file-extension', batchSize: 500, parallelism: 2 },
    });
    const doomed = worker('doomed');
    await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'running' && Number(current.progress?.done ?? 0) >= 20_000;
    }, 60_000, 20);
    doomed.kill('SIGKILL');
    expect((await doomed.exited).signal).toBe('SIGKILL');
    await killedSessionsEnded(env);

    // What the killed attempt committed: the progress and exactly the rows it counts, nothing else.
    const killed = await requireJob(env.pool, job.id);
    const progress = killed.progress as { done: number; partitions: PartitionProgress[] };
    expect(progress.done).toBeGreaterThanOrEqual(20_000);
    expect(progress.done).toBeLessThan(total);
    expect(progress.partitions).toHaveLength(2);
    const filledBefore = await env.pool.query<{ id: number; version: string }>(
      'SELECT id, xmin::text AS version FROM documents WHERE file_extension IS NOT NULL ORDER BY id',
    );
    expect(filledBefore.rows).toHaveLength(progress.done);
    // Each range is filled exactly up to its cursor: below it nothing is missing, above it nothing was written.
    for (const range of progress.partitions) {
      const { rows } = await env.pool.query(
        `SELECT count(*) FILTER (WHERE file_extension IS NULL AND ($2::bigint IS NULL OR id <= $2))::int AS gaps,
                count(*) FILTER (WHERE file_extension IS NOT NULL AND ($2::bigint IS NOT NULL AND id > $2))::int AS beyond
         FROM documents WHERE ($1::bigint IS NULL OR id > $1) AND ($3::bigint IS NULL OR id <= $3)`,
        [range.after, range.cursor, range.upTo],
      );
      expect(rows[0]).toEqual({ gaps: range.cursor === null ? rows[0].gaps : 0, beyond: 0 });
    }

    const survivor = worker('survivor');
    const done: JobRow = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'succeeded' || current.state === 'failed' || current.state === 'partial' ? current : undefined;
    }, 90_000, 100);
    survivor.kill('SIGTERM');

    expect(done).toMatchObject({ state: 'succeeded', attempts: 2 });
    expect(done.lastError).toMatchObject({ code: 'LEASE_EXPIRED', worker: 'doomed' });
    expect(done.result).toMatchObject({
      complete: true,
      remaining: 0,
      rowsWritten: total,
      // The second attempt started at the committed cursors and wrote only what was left.
      resumedFromCursors: progress.partitions.map((range) => range.cursor),
      rowsWrittenThisAttempt: total - progress.done,
    });
    const survivorLog = survivor.logs.find((line) => line.msg === 'resuming backfill from its saved cursors');
    expect(survivorLog).toMatchObject({ done: progress.done });

    // Rows done before the kill still carry the row version the first attempt wrote: not rewritten.
    const after = await env.pool.query<{ id: number; version: string }>(
      'SELECT id, xmin::text AS version FROM documents WHERE id = ANY($1::bigint[]) ORDER BY id',
      [filledBefore.rows.map((row) => row.id)],
    );
    expect(after.rows).toEqual(filledBefore.rows);
    const wrong = await env.pool.query(
      'SELECT count(*)::int AS n FROM documents WHERE file_extension IS DISTINCT FROM documents_file_extension(source_path)',
    );
    expect(wrong.rows[0].n).toBe(0);
    expect(await status()).toMatchObject({ rows: total, missing: 0, complete: true, latestRun: { id: job.id, state: 'succeeded' } });
    const check = await runCli(env, ['backfill', 'status', 'documents-file-extension', '--check']);
    expect(check.code).toBe(0);
    expect(check.stdout).toContain('missing    0 (100% filled)');
  });

  it('cancel stops at a batch boundary with the cursor saved; requeue resumes the same run from it', async () => {
    const total = 100_000;
    await insertHistoricalDocuments(total);
    const { job } = await submitJob(env.pool, {
      kind: 'backfill',
      payload: { name: 'documents-file-extension', batchSize: 100, parallelism: 1 },
    });
    worker('steady');
    await waitFor(async () => Number((await requireJob(env.pool, job.id)).progress?.done ?? 0) >= 4_000, 60_000, 20);
    // Through the queue function, not a CLI process: a CLI start-up takes longer than the rest of this backfill.
    expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
    const canceled = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'canceled' ? current : undefined;
    }, 30_000, 50);
    const progress = canceled.progress as { done: number; partitions: PartitionProgress[] };
    const filled = await env.pool.query('SELECT count(*)::int AS n, max(id)::int AS last FROM documents WHERE file_extension IS NOT NULL');
    expect(filled.rows[0]).toEqual({ n: progress.done, last: progress.partitions[0]!.cursor });
    expect(progress.done).toBeLessThan(total);

    const requeue = await runCli(env, ['requeue', String(job.id)]);
    expect(requeue.code, requeue.stderr).toBe(0);
    const done = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'succeeded' || current.state === 'partial' || current.state === 'failed' ? current : undefined;
    }, 60_000, 50);
    expect(done.result).toMatchObject({
      complete: true,
      remaining: 0,
      rowsWritten: total,
      resumedFromCursors: [progress.partitions[0]!.cursor],
      rowsWrittenThisAttempt: total - progress.done,
    });
  });
});
