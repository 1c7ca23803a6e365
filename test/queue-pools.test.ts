// Claim pools (worker/runner/pools.ts): a kind with a ceiling and kinds without one, run by one worker, each get
// their share of the slots. Neither backlog starves the other, and the ceiling holds.
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { JobHandler } from '../worker/handlers/types.js';
import { enqueueJobs } from '../worker/queue/enqueue.js';
import { buildPools, reservedForCappedPools } from '../worker/runner/pools.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((worker) => worker.stop()));
  await env.pool.query('DELETE FROM jobs');
});

describe('claim pools', () => {
  it('a capped kind gets a pool of its own, the others share one that alone prefetches', () => {
    const pools = buildPools(['noop', 'csv-import', 'mass-import'], { 'csv-import': 2, backfill: 1 }, 8);
    expect(pools.map(({ name, kinds, slots, prefetch }) => ({ name, kinds, slots, prefetch }))).toEqual([
      { name: 'csv-import', kinds: ['csv-import'], slots: 2, prefetch: false },
      { name: 'shared', kinds: ['noop', 'mass-import'], slots: 8, prefetch: true },
    ]);
    pools[0]!.running = 1;
    expect(reservedForCappedPools(pools)).toBe(1);
    pools[0]!.mayHaveWork = false;
    expect(reservedForCappedPools(pools)).toBe(0);
  });

  it('a worker runs a capped and an uncapped kind side by side: neither backlog starves the other', async () => {
    const finished: string[] = [];
    let cappedRunning = 0;
    let cappedMax = 0;
    const handler = (kind: string, capped: boolean): JobHandler<unknown> => ({
      kind,
      description: 'test: a short job',
      parsePayload: (raw) => raw,
      async run() {
        if (capped) cappedMax = Math.max(cappedMax, ++cappedRunning);
        await sleep(15);
        if (capped) cappedRunning -= 1;
        finished.push(kind);
      },
    });
    // The uncapped backlog is enqueued first, so it is ahead of the capped one in the claim order.
    await enqueueJobs(env.pool, 'uncapped', Array.from({ length: 30 }, () => ({})));
    await enqueueJobs(env.pool, 'capped', Array.from({ length: 30 }, () => ({})));
    const worker = testWorker(env, [handler('uncapped', false), handler('capped', true)], {
      concurrency: 3,
      kinds: ['uncapped', 'capped'],
      kindConcurrency: { capped: 1 },
      prefetchWindowMs: 1_000,
      prefetchMax: 50,
    });
    workers.push(worker);
    await worker.start();
    await waitFor(async () => finished.length === 60, 30_000);
    const countBefore = (kind: string, position: number) => finished.slice(0, position).filter((k) => k === kind).length;
    const nth = (kind: string, n: number) => finished.findIndex((k, index) => k === kind && countBefore(kind, index + 1) === n) + 1;
    // While the uncapped backlog drains, capped jobs keep finishing (its pool claims first and keeps its slot) …
    expect(countBefore('capped', nth('uncapped', 15))).toBeGreaterThanOrEqual(3);
    // … and the capped backlog never takes more than its ceiling, so uncapped jobs keep finishing too.
    expect(countBefore('uncapped', nth('capped', 10))).toBeGreaterThanOrEqual(10);
    expect(cappedMax).toBe(1);
  });
});
