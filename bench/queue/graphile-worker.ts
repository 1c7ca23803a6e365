// graphile-worker 0.18 with its batching on (local queue, batched completion), as its docs recommend for throughput.
import { makeWorkerUtils, run, type Runner, type WorkerUtils, Logger } from 'graphile-worker';
import pg from 'pg';
import { measure, type QueueAdapter } from './adapter.js';
import type { BenchSettings, QueueBenchResult } from './report.js';

export async function runGraphileWorker(databaseUrl: string, settings: BenchSettings): Promise<QueueBenchResult> {
  const logger = new Logger(() => () => {});
  const utils: WorkerUtils = await makeWorkerUtils({ connectionString: databaseUrl, logger });
  await utils.migrate();
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  let runner: Runner | undefined;
  let onJob: (seq: number) => void = () => {};
  const preset = {
    worker: {
      localQueue: { size: 500 },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    },
  };
  const adapter: QueueAdapter = {
    system: 'graphile-worker',
    describe: `0.18.0, concurrency ${settings.concurrency}, preset ${JSON.stringify(preset)}, pollInterval 1000 ms + LISTEN`,
    enqueueOne: async (seq) => {
      await utils.addJob('bench', { seq });
    },
    enqueueMany: async (seqs) => {
      await utils.addJobs(seqs.map((seq) => ({ identifier: 'bench', payload: { seq } })));
    },
    startWorker: async (callback) => {
      onJob = callback;
      runner = await run({
        connectionString: databaseUrl,
        concurrency: settings.concurrency,
        pollInterval: 1_000,
        noHandleSignals: true,
        logger,
        preset,
        taskList: {
          bench: async (payload) => {
            onJob((payload as { seq: number }).seq);
          },
        },
      });
    },
    stopWorker: async () => {
      await runner?.stop();
      runner = undefined;
    },
    unfinished: async () => {
      const { rows } = await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM graphile_worker._private_jobs');
      return rows[0]!.n;
    },
    reset: async () => {
      await pool.query('DELETE FROM graphile_worker._private_jobs');
    },
    close: async () => {
      await utils.release();
      await pool.end();
    },
  };
  return measure(adapter, settings);
}
