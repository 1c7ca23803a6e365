// A worker draining its runs at a shutdown keeps their leases like a running one: a heartbeat lost to a connection
// that went silent (a failover) is made up on a new connection as soon as it gives up, not at the tick after. Left to
// the next tick, a lease renewed every 4 s for 10 s ran out before it (12 s after the last renewal), and a rescuer
// elsewhere would requeue the run, its attempt spent, while this worker still drains it.
import { afterEach, describe, expect, it } from 'vitest';
import type { AnyJobHandler } from '../worker/handlers/types.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { jobInState, testWorker, waitFor } from './support/in-process-worker.js';
import { startSilencingProxy, type SilencingProxy } from './support/silencing-proxy.js';

const env = useTestEnvironment();
let worker: Worker | undefined;
let proxy: SilencingProxy | undefined;
let finishHandler: () => void = () => {};
afterEach(async () => {
  finishHandler();
  await worker?.stop();
  await proxy?.close();
});

interface LeaseRow {
  heartbeat_at: Date;
  lease_expires_at: Date;
}

const leaseOf = async (id: number): Promise<LeaseRow> =>
  (await env.pool.query<LeaseRow>('SELECT heartbeat_at, lease_expires_at FROM jobs WHERE id = $1', [id])).rows[0]!;

describe('heartbeats during the shutdown drain', () => {
  it('a beat lost to a silent connection is made up at once, before the drained run’s lease runs out', async () => {
    proxy = await startSilencingProxy(env.databaseUrl);
    const handler: AnyJobHandler = {
      kind: 'drain',
      description: 'finishes its work before it stops (deaf to the shutdown)',
      parsePayload: (raw) => raw,
      run: () => new Promise<void>((resolve) => (finishHandler = resolve)),
    };
    // Beats every 4 s; a beat gives up after 4 s (leaseStatementTimeoutMs). Made up at once, the renewal after the
    // lost beat comes about 8 s after the last one; at the next tick, about 12 s: past the 10 s lease.
    worker = testWorker({ ...env, databaseUrl: proxy.url }, [handler], {
      kinds: ['drain'],
      concurrency: 1,
      leaseMs: 10_000,
      heartbeatMs: 4_000,
      shutdownGraceMs: 120_000,
      prefetchWindowMs: 0,
    });
    const { job } = await enqueueJob(env.pool, { kind: 'drain', payload: {} });
    await worker.start();
    const claimed = await jobInState(env.pool, job.id, ['running']);
    const stopped = worker.stop();

    // A beat during the drain renews the lease; right after it every open connection goes silent.
    const renewed = await waitFor(async () => {
      const lease = await leaseOf(job.id);
      return lease.heartbeat_at > claimed.heartbeatAt! ? lease : undefined;
    }, 30_000);
    expect(proxy.silenceExisting()).toBeGreaterThan(0);

    // The next beat is lost in the silence; the renewal after it (on a new connection) comes before the lease ends.
    const next = await waitFor(async () => {
      const lease = await leaseOf(job.id);
      return lease.heartbeat_at > renewed.heartbeat_at ? lease : undefined;
    }, 30_000);
    expect(next.heartbeat_at.getTime()).toBeLessThan(renewed.lease_expires_at.getTime());

    finishHandler();
    await stopped;
    expect((await jobInState(env.pool, job.id, ['succeeded'])).attempts).toBe(1);
  });
});
