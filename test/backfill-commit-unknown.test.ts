// A backfill batch whose COMMIT reaches the database but whose reply is lost (the connection drops in between, as in
// a failover): the attempt cannot know the batch committed, so it must not store its older progress over the one the
// batch committed. The next attempt resumes from what the database holds, and the run's counts are exact.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { loadConfig } from '../worker/config.js';
import { createPool, type Pool } from '../worker/db/pool.js';
import { backfillHandler } from '../worker/handlers/backfill.js';
import { HandlerRegistry } from '../worker/handlers/registry.js';
import { requireJob } from '../worker/queue/operator.js';
import { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { insertHistoricalDocuments } from './support/historical-documents.js';
import { startCommitReplyDropper, type CommitReplyDropper } from './support/commit-reply-dropper.js';
import { settledJob, silentLog, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
let proxy: CommitReplyDropper;
let handlerPool: Pool;
let worker: Worker | undefined;

beforeAll(async () => {
  proxy = await startCommitReplyDropper(env.databaseUrl);
  handlerPool = createPool(proxy.url, { max: 4, applicationName: 'backfill-through-proxy' });
});
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
});
afterAll(async () => {
  await handlerPool?.end();
  await proxy?.close();
});

describe('a backfill batch committed without the reply reaching the worker', () => {
  it('keeps the committed progress: the retry resumes after that batch and the final counts are exact', async () => {
    const total = 3_000;
    await insertHistoricalDocuments(env.pool, total);
    const config = loadConfig({ DATABASE_URL: env.databaseUrl });
    // The queue's own writes (claim, failure, completion) go straight to Postgres; the handler's batches through the
    // proxy, which loses the reply to one of their COMMITs.
    worker = new Worker(
      env.pool,
      new HandlerRegistry([backfillHandler]),
      { config, pool: handlerPool, s3: env.s3, bucket: env.bucket },
      { ...config.worker, workerId: 'commit-unknown', concurrency: 1, leaseMs: 10_000, heartbeatMs: 500, pollIntervalMs: 100, backoffBaseMs: 10, backoffMaxMs: 50, progressIntervalMs: 50 },
      silentLog,
      { database: env.databaseUrl, claimSession: true, listen: true },
    );
    await worker.start();
    const { job } = await submitJob(env.pool, { kind: 'backfill', payload: { name: 'documents-file-extension', batchSize: 100, parallelism: 1 } });
    await waitFor(async () => Number((await requireJob(env.pool, job.id)).progress?.done ?? 0) >= 500, 30_000, 10);
    await proxy.dropReplyToCommit();

    const done = await settledJob(env.pool, job.id, 60_000);
    expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
    // The lost reply failed the first attempt (as a database outage) and a second claim finished the run.
    expect(done.lastError).toMatchObject({ code: 'CONNECTION_LOST', attempt: 1 });
    expect(done.result).toMatchObject({ resumedFromCursors: [expect.any(Number)] });
    const missing = await env.pool.query(`SELECT count(*)::int AS n FROM documents WHERE file_extension IS NULL`);
    expect(missing.rows[0].n).toBe(0);
    // Every row was written once, by one of the two attempts, and the progress says so.
    expect(done.progress).toMatchObject({ done: total });
  });
});
