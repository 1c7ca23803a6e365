// JobContext.leaseConfirmed: a handler about to do what the database cannot fence (an S3 write) waits until its lease
// is known to hold. A worker whose heartbeats failed past its lease may have been replaced by another attempt.
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { JobHandler } from '../worker/handlers/types.js';
import { JOB_CANCEL_CHANNEL } from '../worker/queue/channels.js';
import { enqueueJobs } from '../worker/queue/enqueue.js';
import { LeaseLostError } from '../worker/queue/lease.js';
import { rescueExpiredLeases } from '../worker/queue/maintenance.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((worker) => worker.stop()));
  await env.pool.query('DELETE FROM jobs');
});

/**
 * A worker of one slot whose handler confirms its lease at once (just claimed), then — once the test opens the gate,
 * its lease run out — again, and says how that ended. Leases of 1.5 s and no heartbeat of its own: the lease runs out
 * while the database is reachable, as it would with every beat failing.
 */
function fencedWorker() {
  let open: () => void = () => {};
  const opened = new Promise<void>((resolve) => (open = resolve));
  const outcomes: string[] = [];
  const handler: JobHandler<unknown> = {
    kind: 'fenced',
    description: 'confirms its lease before an unfenced write',
    parsePayload: () => ({}),
    run: async ({ leaseConfirmed }) => {
      await leaseConfirmed();
      outcomes.push('fresh');
      await opened;
      try {
        await leaseConfirmed();
        outcomes.push('confirmed');
      } catch (error) {
        outcomes.push(error instanceof LeaseLostError ? 'lost' : String(error));
        throw error;
      }
    },
  };
  const worker = testWorker(env, [handler], { concurrency: 1, leaseMs: 1_500, heartbeatMs: 600_000, pollIntervalMs: 50, prefetchWindowMs: 0 });
  workers.push(worker);
  return { worker, outcomes, open };
}

/** Starts the worker on one job and waits until that job's lease ran out in the database (and so in the worker). */
async function leaseRunOut(worker: Worker, outcomes: string[]): Promise<number> {
  const [id] = await enqueueJobs(env.pool, 'fenced', [{}]);
  void worker.start();
  await waitFor(async () => outcomes.includes('fresh'));
  await waitFor(async () => (await env.pool.query('SELECT 1 FROM jobs WHERE id = $1 AND lease_expires_at < now()', [id])).rows.length === 1, 30_000);
  return id!;
}

/**
 * A run whose lease ran out, its handler at its second leaseConfirmed: the heartbeat that asks waits on the run's row,
 * which `holder` (a transaction left open for the test) locked first.
 */
async function handlerWaitingOnBeat(holder: pg.Client): Promise<{ id: number; outcomes: string[] }> {
  const { worker, outcomes, open } = fencedWorker();
  const id = await leaseRunOut(worker, outcomes);
  await holder.query('BEGIN');
  await holder.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [id]);
  open();
  await waitFor(beatWaiting);
  return { id, outcomes };
}

/**
 * Whether the worker's heartbeat waits on a lock (the run's row the test holds). Its lease sessions are two, both
 * named bulk-import-lease: the heartbeat's and the outcomes' (an outcome of the run would wait on the row too).
 */
async function beatWaiting(): Promise<boolean> {
  const { rows } = await env.pool.query(
    `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'bulk-import-lease'
       AND wait_event_type = 'Lock' AND query LIKE 'UPDATE jobs SET lease_expires_at%'`,
  );
  return rows.length === 1;
}

/** A connection of its own for the test's transaction, ended after `work`. */
async function withHolder(work: (holder: pg.Client) => Promise<void>): Promise<void> {
  const holder = new pg.Client({ connectionString: env.databaseUrl });
  await holder.connect();
  try {
    await work(holder);
  } finally {
    await holder.end();
  }
}

describe('leaseConfirmed', () => {
  it('past its lease, waits for a beat; the run taken over meanwhile: the handler stops before its write', async () => {
    await withHolder(async (holder) => {
      const { id, outcomes } = await handlerWaitingOnBeat(holder);
      expect(outcomes).toEqual(['fresh']);
      // Another worker's rescuer requeues the run meanwhile (due in an hour: nobody claims it in this test).
      expect((await rescueExpiredLeases(holder)).requeued).toEqual([id]);
      await holder.query("UPDATE jobs SET run_at = now() + interval '1 hour' WHERE id = $1", [id]);
      await holder.query('COMMIT');
      await waitFor(async () => outcomes.length === 2);
      expect(outcomes).toEqual(['fresh', 'lost']);
    });
  });

  it("past its lease, waits for a beat; the lease still this worker's: renewed, the handler goes on", async () => {
    await withHolder(async (holder) => {
      const { id, outcomes } = await handlerWaitingOnBeat(holder);
      expect(outcomes).toEqual(['fresh']);
      await holder.query('COMMIT');
      await waitFor(async () => outcomes.length === 2);
      expect(outcomes).toEqual(['fresh', 'confirmed']);
      await waitFor(async () => (await env.pool.query("SELECT 1 FROM jobs WHERE id = $1 AND state = 'succeeded'", [id])).rows.length === 1);
    });
  });

  it('a cancel while it waits for the beat ends the wait at once, with the cancel, though the beat is still held', async () => {
    await withHolder(async (holder) => {
      const { id, outcomes } = await handlerWaitingOnBeat(holder);
      // The operator's cancel, as the worker hears it (the run's row is held, so it comes as the notification alone).
      await env.pool.query('SELECT pg_notify($1, $2)', [JOB_CANCEL_CHANNEL, String(id)]);
      await waitFor(async () => outcomes.length === 2);
      expect(outcomes[1]).toMatch(/cancel/i);
      expect(await beatWaiting()).toBe(true);
      await holder.query('ROLLBACK');
    });
  });
});
