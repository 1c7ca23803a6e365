// pg-boss 12 in burst mode (burstWhenBatchFull), batches of 100 over 4 work() loops, LISTEN/NOTIFY on.
import { PgBoss } from 'pg-boss';
import pg from 'pg';
import { measure, type QueueAdapter } from './adapter.js';
import type { BenchSettings, QueueBenchResult } from './report.js';

const QUEUE = 'bench';

export async function runPgBoss(databaseUrl: string, settings: BenchSettings): Promise<QueueBenchResult> {
  const boss = new PgBoss({ connectionString: databaseUrl, useListenNotify: true, schedule: false, supervise: false, max: 20 });
  boss.on('error', () => {});
  await boss.start();
  await boss.createQueue(QUEUE, { notify: true } as never).catch(() => {});
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  const batchSize = 100;
  const loops = 4;
  const adapter: QueueAdapter = {
    system: 'pg-boss',
    describe: `12.38.0, ${loops} work() loops × batchSize ${batchSize}, burstWhenBatchFull, pollingIntervalSeconds 0.5, useListenNotify + queue notify`,
    enqueueOne: async (seq) => {
      await boss.send(QUEUE, { seq });
    },
    enqueueMany: async (seqs) => {
      await boss.insert(QUEUE, seqs.map((seq) => ({ data: { seq } })));
    },
    startWorker: async (onJob) => {
      for (let i = 0; i < loops; i += 1) {
        await boss.work<{ seq: number }>(
          QUEUE,
          { batchSize, burstWhenBatchFull: true, pollingIntervalSeconds: 0.5 },
          async (jobs) => {
            for (const job of jobs) onJob(job.data.seq);
          },
        );
      }
    },
    stopWorker: async () => {
      await boss.offWork(QUEUE);
    },
    unfinished: async () => {
      const { rows } = await pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pgboss.job WHERE name = $1 AND state <> 'completed'",
        [QUEUE],
      );
      return rows[0]!.n;
    },
    reset: async () => {
      await pool.query('DELETE FROM pgboss.job WHERE name = $1', [QUEUE]);
    },
    close: async () => {
      await boss.stop({ graceful: false, wait: true } as never);
      await pool.end();
    },
  };
  return measure(adapter, settings);
}
