// An in-process Worker against the test database, with short timings, for tests that need to reach inside.
import { loadConfig } from '../../worker/config.js';
import { HandlerRegistry } from '../../worker/handlers/registry.js';
import type { AnyJobHandler } from '../../worker/handlers/types.js';
import type { S3Client } from '@aws-sdk/client-s3';
import type { Pool, Queryable } from '../../worker/db/pool.js';
import { createLogger, type Logger } from '../../worker/logger.js';
import { requireJob } from '../../worker/queue/operator.js';
import type { JobRow } from '../../worker/queue/types.js';
import { Worker, type WorkerOptions } from '../../worker/runner/worker.js';
import type { TestEnvironment } from '../harness.js';

export const silentLog = createLogger({ level: 'silent', format: 'json' });

/** What a test worker runs with instead of the test environment's own: a pool of its own, an S3 client, settings. */
export interface TestWorkerServices {
  pool?: Pool;
  s3?: S3Client | undefined;
  /** Settings beyond DATABASE_URL, as environment variables (IMPORT_ROOT …). */
  settings?: Record<string, string>;
}

export function testWorker(
  env: TestEnvironment,
  handlers: AnyJobHandler[],
  overrides: Partial<WorkerOptions> = {},
  log: Logger = silentLog,
  services: TestWorkerServices = {},
): Worker {
  const config = loadConfig({ ...services.settings, DATABASE_URL: env.databaseUrl });
  const pool = services.pool ?? env.pool;
  return new Worker(
    pool,
    new HandlerRegistry(handlers),
    { config, pool, s3: 's3' in services ? services.s3 : env.s3, bucket: env.bucket },
    {
      ...config.worker,
      workerId: `test-${Math.random().toString(36).slice(2, 8)}`,
      concurrency: 4,
      // Fifty beats to a lease: a loaded machine that stalls this process for a second or two loses no lease (and adds
      // no attempt to tests that count them). Tests about lost leases expire them themselves or set their own.
      leaseMs: 10_000,
      heartbeatMs: 200,
      pollIntervalMs: 200,
      shutdownGraceMs: 2_000,
      backoffBaseMs: 10,
      backoffMaxMs: 50,
      progressIntervalMs: 50,
      ...overrides,
    },
    log,
    { database: env.databaseUrl, claimSession: true, listen: true },
  );
}

export async function waitFor<T>(probe: () => Promise<T | undefined | null | false>, timeoutMs = 15_000, stepMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, stepMs));
  }
}

/** Waits until a run is in one of `states` and returns it. */
export async function jobInState(db: Queryable, jobId: number, states: readonly string[], timeoutMs = 60_000): Promise<JobRow> {
  return waitFor(async () => {
    const job = await requireJob(db, jobId);
    return states.includes(job.state) ? job : undefined;
  }, timeoutMs, 20);
}

/** Waits until a run has left `queued` and `running` (ended, or parked in review_ready) and returns it. */
export async function settledJob(db: Queryable, jobId: number, timeoutMs = 30_000): Promise<JobRow> {
  return waitFor(async () => {
    const job = await requireJob(db, jobId);
    return job.state === 'queued' || job.state === 'running' ? undefined : job;
  }, timeoutMs);
}
