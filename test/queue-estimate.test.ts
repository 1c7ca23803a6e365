// The start and finish estimate of a submitted run, checked against what happened with a known workload: 4 slots,
// 200 ms runs, 40 runs ahead → the run should start about 2 s later. Stated error: 25 % of the wait, plus 0.5 s.
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { noopHandler } from '../worker/handlers/noop.js';
import { enqueueJobs } from '../worker/queue/enqueue.js';
import { estimateRun } from '../worker/queue/estimate.js';
import { getJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { testWorker, waitFor } from './support/in-process-worker.js';

const SLEEP_MS = 200;
const within = (actual: Date, estimated: Date, submittedAt: number) => {
  const wait = estimated.getTime() - submittedAt;
  return Math.abs(actual.getTime() - estimated.getTime()) <= 0.25 * Math.max(0, wait) + 500;
};

describe('estimates', () => {
  const env = useTestEnvironment();

  it('a run submitted behind 40 runs of 200 ms on 4 slots starts and finishes when the estimate said', async () => {
    const worker = testWorker(env, [noopHandler], { concurrency: 4, prefetchWindowMs: 0, kinds: ['noop'] });
    await worker.start();
    try {
      // Warm-up: the kind's duration is measured from finished runs.
      const warm = await enqueueJobs(env.pool, 'noop', Array.from({ length: 8 }, () => ({ sleepMs: SLEEP_MS })), { tenantId: 'load' });
      await waitFor(async () => (await getJob(env.pool, warm.at(-1)!))?.state === 'succeeded', 30_000);
      await enqueueJobs(env.pool, 'noop', Array.from({ length: 40 }, () => ({ sleepMs: SLEEP_MS })), { tenantId: 'load' });
      await waitFor(async () => worker.runningCount === 4, 10_000, 5);
      const submittedAt = Date.now();
      const { job, estimate } = await submitJob(env.pool, { kind: 'noop', tenantId: 'load', payload: { sleepMs: SLEEP_MS } });
      expect(estimate).toMatchObject({ basis: 'leases', running: 4, workers: 1 });
      expect(estimate!.ahead).toBeGreaterThanOrEqual(30);
      expect(estimate!.ahead).toBeLessThanOrEqual(40);
      expect(estimate!.runsPerSecond).toBeGreaterThan(10);
      expect(estimate!.runsPerSecond).toBeLessThan(21);
      // While it waits, `show`/`watch`/the API compute the same from the queue as it is then.
      const later = await estimateRun(env.pool, (await getJob(env.pool, job.id))!);
      expect(later!.ahead).toBeLessThanOrEqual(estimate!.ahead);

      const done = await waitFor(async () => {
        const row = await getJob(env.pool, job.id);
        return row?.state === 'succeeded' ? row : undefined;
      }, 60_000);
      expect(within(done.startedAt!, estimate!.startAt!, submittedAt), `start ${done.startedAt!.toISOString()} vs estimated ${estimate!.startAt!.toISOString()}`).toBe(true);
      expect(within(done.finishedAt!, estimate!.finishAt!, submittedAt), `finish ${done.finishedAt!.toISOString()} vs estimated ${estimate!.finishAt!.toISOString()}`).toBe(true);
      expect(await estimateRun(env.pool, done)).toBeNull();
    } finally {
      await worker.stop();
    }
  }, 120_000);
});
