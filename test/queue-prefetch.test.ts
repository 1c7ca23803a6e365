import { once } from 'node:events';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { JobHandler } from '../worker/handlers/types.js';
import { enqueueJobs } from '../worker/queue/enqueue.js';
import { rescueExpiredLeases } from '../worker/queue/maintenance.js';
import { cancelJob } from '../worker/queue/operator.js';
import { withTransaction } from '../worker/db/pool.js';
import { PrefetchBuffer } from '../worker/runner/prefetch.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { testWorker, waitFor } from './support/in-process-worker.js';
import { recordingLogger } from './support/recording-logger.js';
import { startSilencingProxy } from './support/silencing-proxy.js';

const env = useTestEnvironment();
const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((worker) => worker.stop()));
  await env.pool.query('DELETE FROM jobs');
});

describe('prefetch buffer sizing', () => {
  it('holds nothing until handlers have been timed, then about windowMs of work per slot, capped', () => {
    const buffer = new PrefetchBuffer({ concurrency: 4, windowMs: 1_000, max: 500 });
    expect(buffer.target()).toBe(0);
    buffer.observe(100); // 4 slots × 1000 ms / 100 ms = 40 jobs
    expect(buffer.target()).toBe(40);
    const fast = new PrefetchBuffer({ concurrency: 16, windowMs: 1_000, max: 500 });
    fast.observe(0.05);
    expect(fast.target()).toBe(500);
  });

  it('holds nothing for jobs that run longer than the window', () => {
    const buffer = new PrefetchBuffer({ concurrency: 4, windowMs: 1_000, max: 500 });
    buffer.observe(60_000);
    expect(buffer.target()).toBe(0);
    expect(buffer.wanted()).toBe(0);
  });

  it('asks for a refill only once the buffer is at most half full', () => {
    const buffer = new PrefetchBuffer({ concurrency: 1, windowMs: 100, max: 10 });
    buffer.observe(10);
    expect(buffer.wanted()).toBe(10);
    const job = { id: 1, kind: 'k', tenantId: null, payload: {}, attempt: 1, maxAttempts: 5, progress: null, leaseOwner: 'w', createdAt: new Date() };
    buffer.push(Array.from({ length: 6 }, (_, i) => ({ ...job, id: i + 1 })), 1_000);
    expect(buffer.wanted()).toBe(0);
    buffer.shift(0);
    expect(buffer.wanted()).toBe(5);
    expect(buffer.remove(3)?.id).toBe(3);
    expect(buffer.remove(3)).toBeUndefined();
    // Of one attempt only: a lease lost by attempt 1 says nothing of attempt 2, claimed since.
    buffer.push([{ ...job, id: 9, attempt: 2 }], 1_000);
    expect(buffer.remove(9, 1)).toBeUndefined();
    expect(buffer.remove(9, 2)?.attempt).toBe(2);
  });

  it('starts a buffered job only while its lease is known to hold; a heartbeat renews it', () => {
    const buffer = new PrefetchBuffer({ concurrency: 1, windowMs: 100, max: 10 });
    const job = { id: 1, kind: 'k', tenantId: null, payload: {}, attempt: 1, maxAttempts: 5, progress: null, leaseOwner: 'w', createdAt: new Date() };
    buffer.push([job, { ...job, id: 2 }], 1_000);
    buffer.push([{ ...job, id: 3 }], 2_000);
    expect(buffer.awaitingRenewal(999)).toBe(false);
    // At 1,000 the first claim's leases may have run out: the later claim's job starts, the others wait.
    expect(buffer.awaitingRenewal(1_000)).toBe(true);
    expect(buffer.shift(1_000)?.job.id).toBe(3);
    expect(buffer.shift(1_000)).toBeUndefined();
    expect(buffer.size).toBe(2);
    // A beat extended job 1's lease, and an attempt of job 2 other than the buffered one.
    buffer.renew([{ jobId: 1, attempt: 1 }, { jobId: 2, attempt: 2 }], 5_000);
    expect(buffer.shift(1_000)?.job.id).toBe(1);
    expect(buffer.shift(1_000)).toBeUndefined();
    expect(buffer.awaitingRenewal(1_000)).toBe(true);
  });

  it('is off with a zero window', () => {
    const buffer = new PrefetchBuffer({ concurrency: 4, windowMs: 0, max: 500 });
    buffer.observe(1);
    expect(buffer.target()).toBe(0);
  });
});

/** A handler whose first run is instant (it times the jobs: the buffer fills) and whose later runs wait for `open`. */
function heldHandler(): { held: JobHandler<unknown>; runs: Array<[number, number]>; open: () => void } {
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => (open = resolve));
  const runs: Array<[number, number]> = [];
  const held: JobHandler<unknown> = {
    kind: 'held',
    description: 'the first run is instant, the rest wait for the test',
    parsePayload: () => ({}),
    run: async ({ job }) => {
      runs.push([job.id, job.attempt]);
      if (runs.length > 1) await opened;
    },
  };
  return { held, runs, open: () => open() };
}

/** Starts the worker on one instant job, then enqueues three: the first runs (and waits), two wait in the buffer. */
async function oneRunningTwoBuffered(worker: Worker, runs: Array<[number, number]>): Promise<number[]> {
  workers.push(worker);
  const [first] = await enqueueJobs(env.pool, 'held', [{}]);
  void worker.start();
  await waitFor(async () => runs.some(([id]) => id === first));
  const ids = await enqueueJobs(env.pool, 'held', [{}, {}, {}]);
  await waitFor(async () => worker.bufferedCount === 2 && runs.some(([id]) => id === ids[0]));
  return ids;
}

describe('a worker with buffered jobs', () => {
  // One slot; jobs wait until released, so the rest of the claim stays in the buffer.
  let release: () => void = () => {};
  let gate = new Promise<void>((resolve) => (release = resolve));
  const started: number[] = [];
  const gated: JobHandler<unknown> = {
    kind: 'gated',
    description: 'waits for the test',
    parsePayload: () => ({}),
    run: async ({ job, signal }) => {
      started.push(job.id);
      if (started.length > 1) await Promise.race([gate, new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)))]);
    },
  };

  it('buffers leased jobs for short handlers, cancels a buffered job at once, and releases the rest on shutdown', async () => {
    const worker = testWorker(env, [gated], { concurrency: 1, prefetchWindowMs: 60_000, prefetchMax: 50, pollIntervalMs: 100 });
    workers.push(worker);
    const [first] = await enqueueJobs(env.pool, 'gated', [{}]);
    void worker.start();
    // The first (instant) job teaches the buffer that jobs are short; the next claim prefetches.
    await waitFor(async () => started.includes(first!));
    const ids = await enqueueJobs(env.pool, 'gated', Array.from({ length: 10 }, () => ({})));
    await waitFor(async () => worker.bufferedCount === 9 && worker.runningCount === 1);
    // The first job's outcome stored (the batcher may still be writing it).
    await waitFor(async () => (await env.pool.query('SELECT state FROM jobs WHERE id = $1', [first])).rows[0].state === 'succeeded');
    const { rows } = await env.pool.query("SELECT count(*)::int AS n FROM jobs WHERE state = 'running' AND lease_owner IS NOT NULL");
    expect(rows[0].n).toBe(10);

    const buffered = ids.find((id) => !started.includes(id))!;
    expect((await cancelJob(env.pool, buffered)).pending).toBe(true);
    await waitFor(async () => {
      const { rows: state } = await env.pool.query('SELECT state FROM jobs WHERE id = $1', [buffered]);
      return state[0].state === 'canceled';
    });
    expect(started).not.toContain(buffered);
    expect(worker.bufferedCount).toBe(8);

    await worker.stop();
    const after = await env.pool.query<{ state: string; n: number; attempts: number }>(
      'SELECT state, count(*)::int AS n, max(attempts) AS attempts FROM jobs WHERE id = ANY($1) GROUP BY state ORDER BY state',
      [ids],
    );
    // 8 buffered + the running one went back to the queue without using an attempt; the canceled one never ran, and
    // its attempt is not counted either.
    expect(after.rows).toEqual([
      { state: 'canceled', n: 1, attempts: 0 },
      { state: 'queued', n: 9, attempts: 0 },
    ]);
    release();
    gate = new Promise<void>((resolve) => (release = resolve));
  });

  it('a buffered job whose lease ran out and that is claimed again runs once, as the new attempt', async () => {
    const { held, runs, open } = heldHandler();
    // No heartbeat within the test: a lease runs out only when the test says so.
    const worker = testWorker(env, [held], { concurrency: 1, prefetchWindowMs: 60_000, prefetchMax: 50, pollIntervalMs: 50, leaseMs: 120_000, heartbeatMs: 60_000 });
    const [running, kept, rescued] = await oneRunningTwoBuffered(worker, runs);
    // The lease of a buffered job runs out and another worker's rescuer requeues it; this worker's next prefetch
    // claims it again.
    await env.pool.query("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", [rescued]);
    expect((await rescueExpiredLeases(env.pool)).requeued).toEqual([rescued]);
    await waitFor(async () => {
      const { rows } = await env.pool.query<{ attempts: number; state: string }>('SELECT attempts, state FROM jobs WHERE id = $1', [rescued]);
      return rows[0]!.state === 'running' && rows[0]!.attempts === 2;
    });
    // Committed is not yet received: the worker's next turn of its loop comes after it took in the claim's answer
    // (claims run only inside the loop). Opened before that, the first handler's end would race the answer.
    await once(worker, 'loop');
    expect(worker.bufferedCount).toBe(2);
    open();
    await waitFor(async () => {
      const { rows } = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1) AND state = 'succeeded'", [[running, kept, rescued]]);
      return rows[0]!.n === 3;
    });
    expect(runs.filter(([id]) => id === rescued)).toEqual([[rescued, 2]]);
    expect(runs.filter(([id]) => id === kept)).toEqual([[kept, 1]]);
  });
  it('a buffered job held past its lease waits for a heartbeat: dropped if the run was rescued, else started', async () => {
    const { held, runs, open } = heldHandler();
    const recorded = recordingLogger('info');
    // Short leases and no heartbeat of its own within the test: the leases run out while the database is reachable, as
    // they would with every beat failing (an outage) — which this worker's beats would otherwise prevent.
    const worker = testWorker(
      env,
      [held],
      { concurrency: 1, prefetchWindowMs: 60_000, prefetchMax: 50, pollIntervalMs: 50, leaseMs: 1_500, heartbeatMs: 600_000 },
      recorded.log,
    );
    const [running, kept, rescued] = await oneRunningTwoBuffered(worker, runs);
    // The database's expiry is no earlier than the one the worker keeps (it dates the lease from before its claim).
    await waitFor(async () => {
      const { rows } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1) AND lease_expires_at < now()', [[kept, rescued]]);
      return rows[0]!.n === 2;
    }, 30_000);
    // Another worker's rescuer requeues one of them (kept out of this worker's claims: it is due in an hour); the
    // other's lease ran out unnoticed and is still this worker's. The running job's lease is left alone.
    await withTransaction(env.pool, async (client) => {
      await client.query("UPDATE jobs SET lease_expires_at = now() + interval '1 hour' WHERE id = ANY($1)", [[running, kept]]);
      expect((await rescueExpiredLeases(client)).requeued).toEqual([rescued]);
      await client.query("UPDATE jobs SET run_at = now() + interval '1 hour' WHERE id = $1", [rescued]);
    });
    // The slot frees: neither buffered job starts on what the worker knew; the beat that asks drops one, starts the other.
    open();
    await waitFor(async () => {
      const { rows } = await env.pool.query<{ state: string }>('SELECT state FROM jobs WHERE id = $1', [kept]);
      return rows[0]!.state === 'succeeded';
    });
    expect(runs.filter(([id]) => id === rescued)).toEqual([]);
    expect(runs.filter(([id]) => id === kept)).toEqual([[kept, 1]]);
    expect(recorded.lines().filter((line) => line.job_id === rescued).map((line) => line.msg)).toEqual([
      'buffered job lost its lease; dropped',
    ]);
    const { rows } = await env.pool.query<{ state: string; attempts: number }>('SELECT state, attempts FROM jobs WHERE id = $1', [rescued]);
    expect(rows[0]).toEqual({ state: 'queued', attempts: 1 });
  });
  it('a beat that starts a buffered job while a claim is out: the claim starts only what still fits', async () => {
    const started: number[] = [];
    const gates = new Map<number, () => void>();
    const release = (id: number) => gates.get(id)!();
    const gated: JobHandler<unknown> = {
      kind: 'held',
      description: 'the first run is instant, the rest wait for the test',
      parsePayload: () => ({}),
      run: async ({ job }) => {
        started.push(job.id);
        if (started.length > 1) await new Promise<void>((resolve) => gates.set(job.id, resolve));
      },
    };
    // The worker's own sessions (claim, leases, wake-ups) go through a proxy that can hold their answers.
    const proxy = await startSilencingProxy(env.databaseUrl);
    const holder = new pg.Client({ connectionString: env.databaseUrl });
    await holder.connect();
    const worker = testWorker({ ...env, databaseUrl: proxy.url }, [gated], {
      concurrency: 1,
      prefetchWindowMs: 60_000,
      prefetchMax: 1,
      pollIntervalMs: 60_000,
      leaseMs: 1_500,
      heartbeatMs: 600_000,
    });
    workers.push(worker);
    try {
      const [first] = await enqueueJobs(env.pool, 'held', [{}]);
      void worker.start();
      await waitFor(async () => started.includes(first!));
      const [running, kept] = await enqueueJobs(env.pool, 'held', [{}, {}]);
      await waitFor(async () => worker.bufferedCount === 1 && started.includes(running!));
      await waitFor(async () => {
        const { rows } = await env.pool.query('SELECT 1 FROM jobs WHERE id = $1 AND lease_expires_at < now()', [kept]);
        return rows.length === 1;
      }, 30_000);

      // The beat the freed slot asks for waits on the buffered run's row, and the claim that follows it (a slot is
      // free, the next run is due) waits in the proxy for its answer. No claim comes between: the buffer is full
      // (prefetchMax 1) and the one slot taken. The hold comes before the freed slot is handled (same tick), and the
      // lease session connects only for that beat, after the hold: its answers pass.
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [kept]);
      const [next] = await enqueueJobs(env.pool, 'held', [{}]);
      const heldFrom = (await env.pool.query<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0]!.now;
      release(running!);
      proxy.holdReplies();
      await waitFor(async () => {
        const { rows } = await env.pool.query<{ claimed: number; beating: number }>(
          `SELECT count(*) FILTER (WHERE application_name = 'bulk-import-claim' AND state = 'idle' AND query_start > $1)::int AS claimed,
                  count(*) FILTER (WHERE application_name = 'bulk-import-lease' AND wait_event_type = 'Lock')::int AS beating
           FROM pg_stat_activity WHERE datname = current_database()`,
          [heldFrom],
        );
        return rows[0]!.claimed === 1 && rows[0]!.beating === 1;
      });
      // The beat renews the lease and starts the buffered job in the slot the claim counted free when it was sent.
      await holder.query('COMMIT');
      await waitFor(async () => started.includes(kept!));
      const answered = once(worker, 'loop');
      proxy.releaseReplies();
      await answered;
      expect(started).not.toContain(next);
      expect(worker.runningCount).toBe(1);

      release(kept!);
      await waitFor(async () => started.includes(next!));
      release(next!);
      await waitFor(async () => {
        const { rows } = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1) AND state = 'succeeded'", [[kept, next]]);
        return rows[0]!.n === 2;
      });
    } finally {
      await holder.end();
      await worker.stop();
      await proxy.close();
    }
  });
});
