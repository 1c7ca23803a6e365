// A claim whose answer is lost after the server committed it (a failover or a cut connection just after the commit,
// or the client's own timeout): the server leased runs this worker never heard of. The worker gives them back
// unstarted, their attempt not counted, before it claims again; left alone they would wait out their lease and the
// rescuer would spend their attempt (a run on its last attempt dead without ever running).
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { AnyJobHandler } from '../worker/handlers/types.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { requireJob } from '../worker/queue/operator.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { testWorker, waitFor } from './support/in-process-worker.js';
import { recordingLogger } from './support/recording-logger.js';
import { startSilencingProxy, type SilencingProxy } from './support/silencing-proxy.js';

const env = useTestEnvironment();
let worker: Worker | undefined;
let proxy: SilencingProxy | undefined;
afterEach(async () => {
  await worker?.stop();
  await proxy?.close();
});

describe('a claim whose answer was lost', () => {
  it('the runs it leased are given back unstarted and run once, their attempt not spent', async () => {
    proxy = await startSilencingProxy(env.databaseUrl);
    const ran: number[] = [];
    const handler: AnyJobHandler = {
      kind: 'probe',
      description: 'records its runs',
      parsePayload: (raw) => raw,
      async run(context) {
        ran.push(context.job.id);
      },
    };
    const recorded = recordingLogger('info');
    let job: { id: number };
    // The claim session's client-side bound is the lease within 5-35 s: 5 s here.
    worker = testWorker({ ...env, databaseUrl: proxy.url }, [handler], { kinds: ['probe'], concurrency: 2, leaseMs: 5_000, prefetchWindowMs: 0 }, recorded.log);
    await worker.start();
    // The run is enqueued in a transaction that also locks `jobs`: the worker's next claim waits for that lock (an
    // event the test sees), its answers are then held in the proxy, and the commit lets the claim lease the run.
    const holder = new pg.Client({ connectionString: env.databaseUrl });
    await holder.connect();
    try {
      await holder.query('BEGIN');
      const { job: enqueued } = await enqueueJob(holder, { kind: 'probe', payload: {}, maxAttempts: 1 });
      await holder.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
      await waitFor(async () => {
        const { rows } = await env.pool.query(
          "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'bulk-import-claim' AND wait_event_type = 'Lock'",
        );
        return rows.length === 1;
      });
      expect(proxy.holdReplies()).toBeGreaterThan(0);
      await holder.query('COMMIT');
      job = enqueued;
    } finally {
      await holder.end();
    }
    // The server leases the run to the worker; its answer never reaches the worker.
    await waitFor(async () => ((await requireJob(env.pool, job.id)).state === 'running' ? true : undefined));
    expect(ran).toEqual([]);

    // Once the claim has timed out, the worker finds the lease it never heard of and gives it back; a new claim runs it.
    await waitFor(async () => ((await requireJob(env.pool, job.id)).state === 'succeeded' ? true : undefined), 30_000);
    const after = await requireJob(env.pool, job.id);
    expect(after.attempts).toBe(1);
    expect(ran).toEqual([job.id]);
    const gaveBack = recorded.lines().filter((line) => line.msg === 'a claim whose answer was lost had leased these runs: giving them back unstarted');
    expect(gaveBack).toHaveLength(1);
    expect(gaveBack[0]).toMatchObject({ level: 40, jobs: [job.id] });
  });
});
