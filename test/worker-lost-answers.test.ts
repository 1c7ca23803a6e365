// Answers lost after the server committed (a failover or a cut connection just after the commit, or the client's own
// timeout). A claim's: the server leased runs this worker never heard of; the worker gives them back unstarted, their
// attempt not counted, before it claims again (left alone they would wait out their lease and the rescuer would spend
// their attempt: a run on its last attempt dead without ever running). A failure's: the retry finds the lease gone,
// and the worker reads what the run became instead of reporting the failure discarded.
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import type { AnyJobHandler } from '../worker/handlers/types.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { failureStoredEarlier } from '../worker/queue/finish.js';
import { requireJob } from '../worker/queue/operator.js';
import { TransientJobError } from '../worker/queue/errors.js';
import type { JobFinishedEvent, Worker } from '../worker/runner/worker.js';
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

  it("a failure stored by a try whose answer was lost is reported as stored, not as a lost lease", async () => {
    proxy = await startSilencingProxy(env.databaseUrl);
    let failNext: (error: Error) => void = () => {};
    const handler: AnyJobHandler = {
      kind: 'probe',
      description: 'succeeds, or fails when the test says so',
      parsePayload: (raw) => raw,
      run: (context) =>
        (context.job.payload as { gated?: boolean }).gated ? new Promise<void>((_resolve, reject) => (failNext = reject)) : Promise.resolve(),
    };
    const recorded = recordingLogger('info');
    worker = testWorker({ ...env, databaseUrl: proxy.url }, [handler], { kinds: ['probe'], concurrency: 2, prefetchWindowMs: 0 }, recorded.log);
    const ended: JobFinishedEvent[] = [];
    worker.on('jobFinished', (event) => ended.push(event));
    await worker.start();
    // A first run's outcome opens the outcome session; the second run's failure goes out on it.
    const { job: first } = await enqueueJob(env.pool, { kind: 'probe', payload: {} });
    await waitFor(async () => ended.some((event) => event.job.id === first.id));
    const { job } = await enqueueJob(env.pool, { kind: 'probe', payload: { gated: true }, maxAttempts: 1 });
    await waitFor(async () => ((await requireJob(env.pool, job.id)).state === 'running' ? true : undefined));
    await waitFor(async () => worker!.runningCount === 1);

    // The failure's first try commits; its answer waits in the proxy until the try gives up, and the next try, on a
    // new connection, finds the lease gone.
    expect(proxy.holdReplies()).toBeGreaterThan(0);
    failNext(new TransientJobError('the source went away'));
    await waitFor(async () => ended.some((event) => event.job.id === job.id), 30_000);
    expect(proxy.heldChunks()).toBeGreaterThan(0);
    expect(ended.find((event) => event.job.id === job.id)!.state).toBe('dead');
    expect((await requireJob(env.pool, job.id)).state).toBe('dead');
    const lines = recorded.lines();
    expect(lines.filter((line) => /failure discarded/.test(String(line.msg)))).toEqual([]);
    expect(lines.filter((line) => line.msg === 'job dead' && line.job_id === job.id)).toHaveLength(1);
  });

  it('the read-back of a failure matches only a run still as that failure left it', async () => {
    const error = { message: 'x', code: 'S3_SlowDown', class: 'transient' as const, attempt: 2, at: '2026-12-08T03:00:00.000Z', worker: 'w1' };
    const plant = async (state: string, attempts: number, extra: Record<string, unknown> = {}) => {
      const lastError = { ...error, ...extra };
      const { rows } = await env.pool.query<{ id: number }>(
        `INSERT INTO jobs (kind, state, attempts, last_error, finished_at) VALUES ('probe', $1, $2, $3, CASE WHEN $1 <> 'queued' THEN now() END) RETURNING id`,
        [state, attempts, JSON.stringify(lastError)],
      );
      return rows[0]!.id;
    };
    // Requeued by the failure: found.
    expect(await failureStoredEarlier(env.pool, await plant('queued', 2), error)).toMatchObject({ state: 'queued', waiting: false });
    // Claimed and completed since by another attempt (a claim and a completion keep last_error): not this failure's.
    expect(await failureStoredEarlier(env.pool, await plant('succeeded', 3), error)).toBeNull();
    expect(await failureStoredEarlier(env.pool, await plant('succeeded', 2), error)).toBeNull();
    // Dead past the outage budget: the outage's start comes from the record (outage_started_at is cleared).
    const overBudget = await plant('dead', 2, { code: 'DEPENDENCY_OUTAGE', context: { outageSince: '2026-12-08T02:00:00.000Z' } });
    expect(await failureStoredEarlier(env.pool, overBudget, error)).toMatchObject({
      state: 'dead',
      outageOverBudget: true,
      outageStartedAt: new Date('2026-12-08T02:00:00.000Z'),
    });
  });
});
