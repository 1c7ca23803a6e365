// A backfill never needs more pool connections than it holds: each stream holds one connection per batch, and the end
// of a batch (lease check, progress write, COMMIT) goes through that connection, never a second one from the pool.
// Before, after each COMMIT the progress was written again through the pool while every other stream held its
// connection in an open transaction waiting to commit: with as many streams as connections, that write waited for the
// pool's connect timeout (15 s), with the other streams' row locks held, and every attempt failed so. Wired as a worker
// process wires it: one pool for the handlers and the progress reporter, sized here to the run's parallelism.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { backfillHandler } from '../worker/handlers/backfill.js';
import { createPool, type Pool } from '../worker/db/pool.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { insertHistoricalDocuments } from './support/historical-documents.js';
import { silentLog, testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const ROWS = 12_000;
let running: { worker: Worker; pool: Pool } | undefined;

beforeEach(async () => {
  await insertHistoricalDocuments(env.pool, ROWS);
});
afterEach(async () => {
  if (running) {
    await running.worker.stop();
    await running.pool.end();
    running = undefined;
  }
  await env.pool.query('TRUNCATE documents RESTART IDENTITY; TRUNCATE backfill_before_images; DELETE FROM jobs');
});

/** A worker whose handlers and progress reporter share one pool of `poolMax` connections (worker-process.ts). */
function startWorker(poolMax: number): void {
  const pool = createPool(env.databaseUrl, { max: poolMax, applicationName: 'backfill-pool-test' });
  const worker = testWorker(env, [backfillHandler], { workerId: `pool-${poolMax}`, concurrency: 1 }, silentLog, { pool, s3: undefined });
  running = { worker, pool };
  void worker.start();
}

async function run(payload: Record<string, unknown>): Promise<JobRow> {
  const { job } = await submitJob(env.pool, { kind: 'backfill', payload });
  // Ended, or an attempt failed (the pool's connect timeout, 15 s, failed every attempt before the fix).
  return waitFor(async () => {
    const current = await requireJob(env.pool, job.id);
    const ended = ['succeeded', 'partial', 'failed', 'dead', 'canceled'].includes(current.state);
    return ended || current.lastError !== null || current.attempts > 1 ? current : undefined;
  }, 60_000, 50);
}

describe('backfill streams and the pool', () => {
  for (const poolMax of [4, 16]) {
    it(`parallelism ${poolMax} on a pool of ${poolMax}: the run completes in its first attempt`, async () => {
      startWorker(poolMax);
      const job = await run({ name: 'documents-file-extension', batchSize: 200, parallelism: poolMax, saveBeforeImage: true });
      expect(job.lastError).toBeNull();
      expect(job).toMatchObject({ state: 'succeeded', attempts: 1 });
      expect(job.result).toMatchObject({ complete: true, remaining: 0, rowsWritten: ROWS, partitions: poolMax });
      expect(job.progress).toMatchObject({ phase: 'done', done: ROWS });
      const images = await env.pool.query('SELECT count(*)::int AS n FROM backfill_before_images');
      expect(images.rows[0].n).toBe(ROWS);
    });
  }

  it('a pool of one connection: the one stream commits every batch through it', async () => {
    startWorker(1);
    const job = await run({ name: 'documents-file-extension', batchSize: 1_000, parallelism: 2 });
    expect(job.lastError).toBeNull();
    expect(job).toMatchObject({ state: 'succeeded', attempts: 1 });
    expect(job.result).toMatchObject({ complete: true, remaining: 0, rowsWritten: ROWS, partitions: 2 });
  });
});
