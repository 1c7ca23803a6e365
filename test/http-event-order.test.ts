// The event streams' two sources — state notifications (LISTEN) and the poll of followed runs — crossing each other
// on the wire: neither may move a run's state backwards. A proxy holds one source's replies while the other moves on.
import type pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { createPool, withTransaction } from '../worker/db/pool.js';
import { JobEventHub, type JobEvent } from '../worker/http/event-hub.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { completeJobs } from '../worker/queue/finish.js';
import { useTestEnvironment } from './harness.js';
import { silentLog, waitFor } from './support/in-process-worker.js';
import { startSilencingProxy, type SilencingProxy } from './support/silencing-proxy.js';

const env = useTestEnvironment();
const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const step of cleanup.splice(0).reverse()) await step();
  await env.pool.query('DELETE FROM jobs');
});

async function proxy(): Promise<SilencingProxy> {
  const started = await startSilencingProxy(env.databaseUrl);
  cleanup.push(() => started.close());
  return started;
}

async function hub(database: string, pool: pg.Pool): Promise<JobEventHub> {
  const events = new JobEventHub({ database, pool, log: silentLog, pollMs: 50 });
  await events.start();
  cleanup.push(() => events.stop());
  return events;
}

/** Follows a run from its current state; returns the states its events show, in order. */
function follow(events: JobEventHub, jobId: number, state: 'queued' | 'running', attempts: number): () => unknown[] {
  const seen: JobEvent[] = [];
  const { unsubscribe } = events.subscribe(jobId, (event) => seen.push(event));
  cleanup.push(async () => unsubscribe());
  events.noteSnapshot(jobId, { state, attempts, progress: null });
  return () => seen.filter((event) => event.type === 'state').map((event) => event.data.state);
}

/** The database's clock now: statements that start after it began after whatever the test did before. */
async function databaseNow(): Promise<Date> {
  return (await env.pool.query<{ now: Date }>('SELECT clock_timestamp() AS now')).rows[0]!.now;
}

/** Whether the hub's poll (on connections named `application`) ran a read that started after `since` and ended. */
async function pollEndedSince(application: string, since: Date): Promise<boolean> {
  const { rows } = await env.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
     WHERE datname = current_database() AND application_name = $1 AND state = 'idle' AND query LIKE '%pg_current_snapshot%' AND query_start > $2`,
    [application, since],
  );
  return rows[0]!.n > 0;
}

describe('event streams: a notification and a poll that cross', () => {
  it('a poll read before a transition, answering after its notification, does not take the state back', async () => {
    const held = await proxy();
    const pollPool = createPool(held.url, { max: 1, applicationName: 'event-poll' });
    cleanup.push(() => pollPool.end());
    const { job } = await enqueueJob(env.pool, { kind: 'crossing' });
    const [claimed] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 60_000, kinds: ['crossing'] });
    const events = await hub(env.databaseUrl, pollPool);
    const states = follow(events, job.id, 'running', claimed!.attempt);
    await waitFor(async () => pollEndedSince('event-poll', new Date(0)));

    // A poll reads the run (running) and its answer waits in the proxy; then the run succeeds and its notification
    // reaches the hub at once. Only the poll's pool goes through the proxy, so a held chunk is a poll's answer, read
    // before the transition below. (A poll sent just before the hold is held too, and none can start after it.)
    held.holdReplies();
    await waitFor(async () => held.heldChunks() > 0);
    await completeJobs(env.pool, 'w', [{ jobId: job.id, attempt: claimed!.attempt, state: 'succeeded' }]);
    await waitFor(async () => states().includes('succeeded'));

    const releasedAt = await databaseNow();
    held.releaseReplies();
    // Polls take turns: one that starts after the release means the held answer was handled.
    await waitFor(async () => pollEndedSince('event-poll', releasedAt));
    expect(states()).toEqual(['succeeded']);
  });

  it('notifications of transitions a poll already saw, arriving after it, do not take the state back', async () => {
    const held = await proxy();
    const { job } = await enqueueJob(env.pool, { kind: 'crossing' });
    const events = await hub(held.url, env.pool);
    const states = follow(events, job.id, 'queued', 0);
    await waitFor(async () => {
      const { rows } = await env.pool.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'bulk-import-api-events' AND query LIKE 'LISTEN%'");
      return rows.length > 0;
    });

    // The run is claimed and succeeds in one transaction while its two notifications wait in the proxy; the poll
    // reads it succeeded.
    held.holdReplies();
    await withTransaction(env.pool, async (client) => {
      const [claimed] = await claimJobs(client, { workerId: 'w', limit: 1, leaseMs: 60_000, kinds: ['crossing'] });
      await completeJobs(client, 'w', [{ jobId: job.id, attempt: claimed!.attempt, state: 'succeeded' }]);
    });
    await waitFor(async () => states().includes('succeeded'));

    const read = events.notificationsRead;
    held.releaseReplies();
    await waitFor(async () => events.notificationsRead >= read + 2);
    expect(states()).toEqual(['succeeded']);
  });
});
