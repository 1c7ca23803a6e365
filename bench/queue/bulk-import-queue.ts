// This project's queue, in-process: the same Worker class the worker command runs.
import pg from 'pg';
import { loadConfig } from '../../worker/config.js';
import { createPool } from '../../worker/db/pool.js';
import { HandlerRegistry } from '../../worker/handlers/registry.js';
import type { JobHandler } from '../../worker/handlers/types.js';
import { createLogger } from '../../worker/logger.js';
import { enqueueJob, enqueueJobs } from '../../worker/queue/enqueue.js';
import { stateNotificationOption, Worker } from '../../worker/runner/worker.js';
import { measure, type QueueAdapter } from './adapter.js';
import type { BenchSettings, QueueBenchResult } from './report.js';

export async function runBulkImportQueue(
  databaseUrl: string,
  settings: BenchSettings,
  stateNotifications = true,
): Promise<QueueBenchResult> {
  const pool = createPool(databaseUrl, { max: 20, sessionOptions: stateNotificationOption(stateNotifications) });
  const config = loadConfig({ DATABASE_URL: databaseUrl, JOB_STATE_NOTIFICATIONS: String(stateNotifications) });
  const log = createLogger({ level: 'silent', format: 'json' });
  let onJob: (seq: number) => void = () => {};
  const handler: JobHandler<{ seq: number }> = {
    kind: 'bench',
    description: 'no-op',
    parsePayload: (raw) => ({ seq: raw.seq as number }),
    run: async ({ payload }) => {
      onJob(payload.seq);
    },
  };
  let worker: Worker | undefined;
  const options = { ...config.worker, concurrency: settings.concurrency, workerId: 'bench', pollIntervalMs: 1_000 };
  const adapter: QueueAdapter = {
    system: stateNotifications ? 'bulk-import-worker' : 'ours, notifications off',
    describe: `Worker concurrency ${options.concurrency}, lease ${options.leaseMs} ms, poll ${options.pollIntervalMs} ms + LISTEN, batched completion, adaptive prefetch (window ${options.prefetchWindowMs} ms, max ${options.prefetchMax}), state notifications ${stateNotifications ? 'on (every transition published)' : 'off'}`,
    enqueueOne: async (seq) => {
      await enqueueJob(pool, { kind: 'bench', payload: { seq } });
    },
    enqueueMany: async (seqs) => {
      await enqueueJobs(pool, 'bench', seqs.map((seq) => ({ seq })));
    },
    startWorker: async (callback) => {
      onJob = callback;
      worker = new Worker(pool, new HandlerRegistry([handler]), { config, pool, s3: undefined, bucket: undefined }, options, log, { database: databaseUrl, claimSession: true, listen: true });
      await worker.start();
    },
    stopWorker: async () => {
      await worker?.stop();
    },
    unfinished: async () => {
      const { rows } = await pool.query<{ n: number }>("SELECT count(*)::int AS n FROM jobs WHERE state <> 'succeeded'");
      return rows[0]!.n;
    },
    reset: async () => {
      await pool.query('TRUNCATE jobs CASCADE');
    },
    close: () => pool.end(),
  };
  return measure(adapter, settings);
}

export { pg };
