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

  it('a kind with a tenant ceiling gets a pool of its own that never prefetches', () => {
    const pools = buildPools(['noop', 'mass-import', 'csv-import'], { 'csv-import': 2 }, 8, { 'mass-import': 2, 'csv-import': 1 });
    expect(pools.map(({ name, kinds, slots, prefetch }) => ({ name, kinds, slots, prefetch }))).toEqual([
      { name: 'mass-import', kinds: ['mass-import'], slots: 8, prefetch: false },
      { name: 'csv-import', kinds: ['csv-import'], slots: 2, prefetch: false },
      { name: 'shared', kinds: ['noop'], slots: 8, prefetch: true },
    ]);
  });

  it('TENANT_KIND_CONCURRENCY through the runner: tenant A never has more than its ceiling running, B runs beside it', async () => {
    const handler: JobHandler<unknown> = {
      kind: 'tenant-capped',
      description: 'test: a short job',
      parsePayload: (raw) => raw,
      async run() {
        await sleep(20);
      },
    };
    await enqueueJobs(env.pool, 'tenant-capped', Array.from({ length: 30 }, () => ({})), { tenantId: 'A' });
    await enqueueJobs(env.pool, 'tenant-capped', Array.from({ length: 6 }, () => ({})), { tenantId: 'B' });
    const worker = testWorker(env, [handler], {
      concurrency: 8,
      kinds: ['tenant-capped'],
      kindConcurrency: {},
      tenantKindConcurrency: { 'tenant-capped': 2 },
      pollIntervalMs: 50,
      prefetchWindowMs: 1_000,
      prefetchMax: 50,
    });
    workers.push(worker);
    const samples: Array<{ A: number; B: number }> = [];
    let buffered = 0;
    // Sampled from the jobs table on every state change of a run (the worker's jobStarted/jobFinished) and on
    // every poll of the wait, until all 36 runs are done.
    const sample = async () => {
      const { rows } = await env.pool.query<{ tenant_id: string; n: number }>(
        `SELECT tenant_id, count(*)::int AS n FROM jobs WHERE state = 'running' GROUP BY tenant_id`,
      );
      const count = (tenant: string) => rows.find((row) => row.tenant_id === tenant)?.n ?? 0;
      samples.push({ A: count('A'), B: count('B') });
      buffered = Math.max(buffered, worker.bufferedCount);
    };
    worker.on('jobStarted', () => void sample());
    worker.on('jobFinished', () => void sample());
    await worker.start();
    await waitFor(async () => {
      await sample();
      const { rows } = await env.pool.query(`SELECT count(*)::int AS n FROM jobs WHERE state = 'succeeded'`);
      return rows[0].n === 36;
    }, 30_000, 5);
    expect(samples.length).toBeGreaterThan(20);
    expect(Math.max(...samples.map((s) => s.A))).toBe(2);
    expect(Math.max(...samples.map((s) => s.B))).toBeLessThanOrEqual(2);
    // B's runs ran while A held its places: the ceiling is per tenant, not per kind.
    expect(samples.some((s) => s.A > 0 && s.B > 0)).toBe(true);
    expect(buffered).toBe(0);
  });

  it('a worker runs a capped and an uncapped kind side by side: neither backlog starves the other', async () => {
    const finished: string[] = [];
    let cappedRunning = 0;
    let cappedMax = 0;
    let uncappedRunning = 0;
    let uncappedMaxBesideCapped = 0;
    const handler = (kind: string, capped: boolean): JobHandler<unknown> => ({
      kind,
      description: 'test: a short job',
      parsePayload: (raw) => raw,
      async run() {
        if (capped) cappedMax = Math.max(cappedMax, ++cappedRunning);
        else {
          uncappedRunning += 1;
          // A capped run not yet finished: the capped pool holds a slot (running, or kept free for its next claim).
          if (finished.filter((k) => k === 'capped').length < 30) uncappedMaxBesideCapped = Math.max(uncappedMaxBesideCapped, uncappedRunning);
        }
        // Long beside a claim's round trip, which each capped run needs and an uncapped one from the buffer does not:
        // the counts below compare slots, not the machine's latency.
        await sleep(100);
        if (capped) cappedRunning -= 1;
        else uncappedRunning -= 1;
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
    await waitFor(async () => finished.length === 60, 60_000);
    const countBefore = (kind: string, position: number) => finished.slice(0, position).filter((k) => k === kind).length;
    const nth = (kind: string, n: number) => finished.findIndex((k, index) => k === kind && countBefore(kind, index + 1) === n) + 1;
    // While the uncapped backlog drains, capped jobs keep finishing (its pool claims first and keeps its slot) …
    expect(uncappedMaxBesideCapped).toBe(2);
    expect(countBefore('capped', nth('uncapped', 15))).toBeGreaterThanOrEqual(3);
    // … and the capped backlog never takes more than its ceiling, so uncapped jobs keep finishing too.
    expect(countBefore('uncapped', nth('capped', 10))).toBeGreaterThanOrEqual(10);
    expect(cappedMax).toBe(1);
  });
});
