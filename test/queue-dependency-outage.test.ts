// The queue's rules for a dependency outage (queue/outage.ts, finish.ts recordFailure), against real Postgres: an
// outage failure requeues the run without counting its attempt, remembers since when the dependency is away (kept
// across attempts that never saw it work, restarted by one that did), waits longer as the outage goes on (never past
// the budget's end), ends `dead` with DEPENDENCY_OUTAGE once the outage outlasts the budget, and any other outcome
// clears the outage.
import { afterEach, describe, expect, it } from 'vitest';
import type { JobHandler } from '../worker/handlers/types.js';
import { jobMetricPoints } from '../worker/ops/metrics.js';
import type { JobFinishedEvent, Worker } from '../worker/runner/worker.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { PermanentJobError, TransientJobError, toErrorRecord } from '../worker/queue/errors.js';
import { completeJobs, recordFailure } from '../worker/queue/finish.js';
import {
  DependencyOutageError, MAX_OUTAGE_RESTARTS, markOutage, markProgressKept, outageFailure, outageOf, type OutageFailure, type OutagePolicy,
} from '../worker/queue/outage.js';
import { requeueJob, requireJob, resumeParkedJob } from '../worker/queue/operator.js';
import { describeOutage } from '../worker/cli/commands/jobs.js';
import { useTestEnvironment } from './harness.js';
import { testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const POLICY: OutagePolicy = { budgetMs: 60_000, baseMs: 1_000, maxMs: 20_000 };

async function claim(kind: string) {
  const [job] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 60_000, kinds: [kind] });
  expect(job).toBeDefined();
  return { jobId: job!.id, owner: 'w', attempt: job!.attempt };
}

/** Makes the queued job due now (the test does not wait out the backoff). */
async function dueNow(jobId: number): Promise<void> {
  await env.pool.query('UPDATE jobs SET run_at = now() WHERE id = $1', [jobId]);
}

/** Moves the stored outage start into the past, as if the dependency had been away that long. */
async function outageBegan(jobId: number, msAgo: number): Promise<void> {
  await env.pool.query(`UPDATE jobs SET outage_started_at = now() - $2 * interval '1 millisecond' WHERE id = $1`, [jobId, msAgo]);
}

function s3Outage(overrides: Partial<OutageFailure> = {}): OutageFailure {
  return { dependency: 's3', sinceMsAgo: 0, progressed: false, progressKept: false, policy: POLICY, jitter: 1, ...overrides };
}

const outageError = (attempt: number) =>
  toErrorRecord(new DependencyOutageError('S3 unavailable: 16 files in a row failed', 's3', new Date(), false), attempt, 'w');

describe('classification', () => {
  it('knows outages of S3 and of the database, and leaves everything else to the ordinary rules', () => {
    const sdk = (name: string, status?: number, code?: string) =>
      Object.assign(new Error(name), { name, code, $metadata: status === undefined ? {} : { httpStatusCode: status } });
    expect(outageOf(sdk('SlowDown', 503))).toMatchObject({ dependency: 's3' });
    expect(outageOf(sdk('InternalError', 500))).toMatchObject({ dependency: 's3' });
    expect(outageOf(sdk('Error', undefined, 'ECONNREFUSED'))).toMatchObject({ dependency: 's3' });
    expect(outageOf(sdk('TimeoutError'))).toMatchObject({ dependency: 's3' });
    expect(outageOf(sdk('NoSuchKey', 404))).toBeUndefined();
    expect(outageOf(sdk('AccessDenied', 403))).toBeUndefined();

    expect(outageOf(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }))).toMatchObject({ dependency: 'database' });
    expect(outageOf(new Error('Connection terminated unexpectedly'))).toMatchObject({ dependency: 'database' });
    expect(outageOf(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }))).toMatchObject({ dependency: 'database' });
    expect(outageOf(Object.assign(new Error('the database system is starting up'), { code: '57P03' }))).toMatchObject({ dependency: 'database' });
    expect(outageOf(Object.assign(new Error('duplicate key'), { code: '23505' }))).toBeUndefined();
    expect(outageOf(Object.assign(new Error('deadlock detected'), { code: '40P01' }))).toBeUndefined();

    // A handler's own classification stands; a marked error is what the mark says.
    expect(outageOf(new TransientJobError('2 files failed', 'ITEMS_FAILED_TRANSIENTLY'))).toBeUndefined();
    expect(outageOf(new PermanentJobError('bad payload'))).toBeUndefined();
    const reset = markOutage(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }), { dependency: 's3', progressed: true });
    expect(outageOf(reset)).toEqual({ dependency: 's3', progressed: true });
    expect(outageOf(new Error('wrapped', { cause: Object.assign(new Error('x'), { code: '08006' }) }))).toMatchObject({ dependency: 'database' });
  });

  it('outageFailure: off with a zero budget; an unmarked outage after a long attempt starts a new outage', () => {
    const error = Object.assign(new Error('Connection terminated unexpectedly'), {});
    expect(outageFailure(error, { ...POLICY, budgetMs: 0 }, 10)).toBeUndefined();
    expect(outageFailure(new Error('a bug'), POLICY, 10)).toBeUndefined();
    expect(outageFailure(error, POLICY, 10, 0, () => 0)).toMatchObject({ dependency: 'database', progressed: false, progressKept: false, jitter: 0.5 });
    expect(outageFailure(error, POLICY, POLICY.maxMs + 1)).toMatchObject({ progressed: true, progressKept: false });
    // A CSV's bytes read are not kept (validation reads again from the top); a mass import's files are.
    const cut = markOutage(new Error('socket hang up'), { dependency: 's3', progressed: true });
    expect(outageFailure(cut, POLICY, 10)).toMatchObject({ progressed: true, progressKept: false });
    // A finalize that committed batches before its read was cut keeps them: the next attempt resumes after them.
    expect(outageFailure(markProgressKept(cut), POLICY, 10)).toMatchObject({ dependency: 's3', progressed: true, progressKept: true });
    const plain = new Error('a bug');
    expect(markProgressKept(plain)).toBe(plain);
    expect(outageOf(plain)).toBeUndefined();
    expect(outageFailure(new DependencyOutageError('down', 's3', new Date(), true), POLICY, 10)).toMatchObject({ progressed: true, progressKept: true });
    const known = new DependencyOutageError('down', 's3', new Date(1_000), false);
    expect(outageFailure(known, POLICY, POLICY.maxMs + 1, 5_000)).toMatchObject({ sinceMsAgo: 4_000, progressed: false, progressKept: false });
  });
});

describe('recordFailure during an outage', () => {
  it('requeues without counting the attempt, keeps the outage start across attempts, waits longer as it goes on', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'outage-wait', maxAttempts: 2 });
    const first = await claim('outage-wait');
    const recorded = await recordFailure(env.pool, { lease: first, error: outageError(1), retryDelayMs: 0, outage: s3Outage({ sinceMsAgo: 2_000 }) });
    expect(recorded).toMatchObject({ state: 'queued', waiting: true, outageOverBudget: false });
    // The first wait is the base (the outage is younger than it would grow to), jitter 1.
    expect(recorded!.retryInMs).toBe(2_000);
    let row = await requireJob(env.pool, job.id);
    expect(row).toMatchObject({ state: 'queued', attempts: 0, outageDependency: 's3' });
    expect(Date.now() - row.outageStartedAt!.getTime()).toBeGreaterThanOrEqual(1_500);
    expect(row.lastError).toMatchObject({ code: 'S3_UNAVAILABLE', class: 'transient', context: { dependency: 's3', attemptCounted: false } });
    expect(describeOutage(row)).toMatch(/^waiting for S3 since .* next try at .*attempts are not counted/);

    // More outage failures than the run has attempts: none is counted, the start stays, the wait grows.
    const started = row.outageStartedAt!;
    for (let i = 0; i < 3; i += 1) {
      await outageBegan(job.id, 10_000 * (i + 1));
      await dueNow(job.id);
      const lease = await claim('outage-wait');
      expect(lease.attempt).toBe(1);
      const again = await recordFailure(env.pool, { lease, error: outageError(1), retryDelayMs: 0, outage: s3Outage() });
      expect(again).toMatchObject({ state: 'queued', waiting: true });
      // As long as the outage has lasted so far (10, 20, 30 s), capped at 20 s. Its length is taken at the failure's
      // statement: those since outageBegan add to it (seconds on a stalled machine), never past the cap.
      expect(again!.retryInMs).toBeGreaterThanOrEqual(Math.min(20_000, 10_000 * (i + 1)));
      expect(again!.retryInMs).toBeLessThanOrEqual(Math.min(20_000, 10_000 * (i + 1) + 5_000));
    }
    row = await requireJob(env.pool, job.id);
    expect(row.attempts).toBe(0);
    expect(row.outageStartedAt!.getTime()).toBeLessThan(started.getTime());

    // Success clears the outage.
    await dueNow(job.id);
    const last = await claim('outage-wait');
    await completeJobs(env.pool, 'w', [{ jobId: job.id, attempt: last.attempt, state: 'succeeded' }]);
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'succeeded', attempts: 1, outageStartedAt: null, outageDependency: null });
  });

  it('an attempt that saw the dependency work starts a new outage; another dependency starts its own', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'outage-new', maxAttempts: 3 });
    await recordFailure(env.pool, { lease: await claim('outage-new'), error: outageError(1), retryDelayMs: 0, outage: s3Outage() });
    await outageBegan(job.id, 50_000);
    await dueNow(job.id);
    await recordFailure(env.pool, { lease: await claim('outage-new'), error: outageError(1), retryDelayMs: 0, outage: s3Outage({ progressed: true, sinceMsAgo: 1_000 }) });
    let row = await requireJob(env.pool, job.id);
    expect(Date.now() - row.outageStartedAt!.getTime()).toBeLessThan(10_000);

    await outageBegan(job.id, 50_000);
    await dueNow(job.id);
    await recordFailure(env.pool, { lease: await claim('outage-new'), error: outageError(1), retryDelayMs: 0, outage: s3Outage({ dependency: 'database' }) });
    row = await requireJob(env.pool, job.id);
    expect(row).toMatchObject({ outageDependency: 'database', attempts: 0 });
    expect(Date.now() - row.outageStartedAt!.getTime()).toBeLessThan(10_000);

    // A failure that is no outage counts its attempt and ends the waiting.
    await dueNow(job.id);
    const lease = await claim('outage-new');
    const other = toErrorRecord(new TransientJobError('2 files failed', 'ITEMS_FAILED_TRANSIENTLY'), lease.attempt, 'w');
    expect(await recordFailure(env.pool, { lease, error: other, retryDelayMs: 0 })).toMatchObject({ state: 'queued', waiting: false });
    expect(await requireJob(env.pool, job.id)).toMatchObject({ attempts: 1, outageStartedAt: null, outageDependency: null });
  });

  it('never waits past the budget, and ends dead with DEPENDENCY_OUTAGE once the outage outlasts it', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'outage-budget', maxAttempts: 5 });
    await recordFailure(env.pool, { lease: await claim('outage-budget'), error: outageError(1), retryDelayMs: 0, outage: s3Outage() });
    // 55 s into a 60 s budget: the wait is cut to what is left of it.
    await outageBegan(job.id, 55_000);
    await dueNow(job.id);
    const near = await recordFailure(env.pool, { lease: await claim('outage-budget'), error: outageError(1), retryDelayMs: 0, outage: s3Outage() });
    expect(near).toMatchObject({ state: 'queued', waiting: true });
    expect(near!.retryInMs).toBeLessThanOrEqual(5_000);

    await outageBegan(job.id, 61_000);
    await dueNow(job.id);
    const over = await recordFailure(env.pool, { lease: await claim('outage-budget'), error: outageError(1), retryDelayMs: 0, outage: s3Outage() });
    expect(over).toMatchObject({ state: 'dead', waiting: false, outageOverBudget: true, retryInMs: null });
    const dead = await requireJob(env.pool, job.id);
    expect(dead).toMatchObject({ state: 'dead', attempts: 1, outageStartedAt: null });
    expect(dead.lastError).toMatchObject({
      code: 'DEPENDENCY_OUTAGE',
      class: 'transient',
      context: { dependency: 's3', outageBudgetMs: 60_000, lastCode: 'S3_UNAVAILABLE' },
    });
    // 61 s and what the statements since outageBegan took (a few seconds at most, even on a stalled machine).
    const message = /^S3 unavailable since \d{4}-\d\d-\d\dT.*Z \((\d+) s\), longer than the dependency outage budget of 60 s/.exec(dead.lastError!.message);
    expect(message, dead.lastError!.message).not.toBeNull();
    expect(Number(message![1])).toBeGreaterThanOrEqual(61);
    expect(Number(message![1])).toBeLessThanOrEqual(65);
    expect(dead.lastError!.context!.outageSince).toMatch(/Z$/);

    // Replay starts afresh: no outage remembered.
    await requeueJob(env.pool, job.id);
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'queued', outageStartedAt: null, outageDependency: null });
  });

  it('a run that keeps breaking its connection after running a while waits out at most MAX_OUTAGE_RESTARTS new outages', async () => {
    // A statement a DBA kills, a backend the run's own query runs out of memory: each attempt sees the database work,
    // then loses it, so each failure is a new outage. Given back every time, the run would come back for ever (and
    // take the database down again each time); past MAX_OUTAGE_RESTARTS new outages its attempts count, up to dead.
    const { job } = await enqueueJob(env.pool, { kind: 'outage-restarts', maxAttempts: 2 });
    const killed = (attempt: number) =>
      toErrorRecord(Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' }), attempt, 'w');
    const fail = async () => {
      await dueNow(job.id);
      const lease = await claim('outage-restarts');
      // Unmarked, after a long attempt: the runner guesses the database worked first (outageFailure).
      return recordFailure(env.pool, {
        lease, error: killed(lease.attempt), retryDelayMs: 0, outage: s3Outage({ dependency: 'database', progressed: true }),
      });
    };
    // More new outages than the run has attempts are given back (a flapping dependency is no fault of the run) …
    for (let restart = 1; restart <= MAX_OUTAGE_RESTARTS; restart += 1) {
      expect(await fail()).toMatchObject({ state: 'queued', waiting: true });
      expect(await requireJob(env.pool, job.id)).toMatchObject({ attempts: 0, lastError: { context: { attemptCounted: false, outageRestarts: restart } } });
    }
    // … up to the bound: then each counts its attempt.
    expect(await fail()).toMatchObject({ state: 'queued', waiting: false, outageOverBudget: false });
    let row = await requireJob(env.pool, job.id);
    expect(row).toMatchObject({ attempts: 1, outageStartedAt: null });
    expect(row.lastError).toMatchObject({ code: '57P01', context: { dependency: 'database', attemptCounted: true, outageRestarts: MAX_OUTAGE_RESTARTS } });
    // An attempt that finds the database away from its start (nothing done, no outage stored) waits as ever: the bound
    // is on outages an attempt begins after getting somewhere, not on waiting.
    await dueNow(job.id);
    const away = await claim('outage-restarts');
    expect(await recordFailure(env.pool, { lease: away, error: killed(away.attempt), retryDelayMs: 0, outage: s3Outage({ dependency: 'database' }) })).toMatchObject({
      state: 'queued',
      waiting: true,
    });
    expect(await requireJob(env.pool, job.id)).toMatchObject({ attempts: 1 });
    expect(await fail()).toMatchObject({ state: 'dead', waiting: false });
    row = await requireJob(env.pool, job.id);
    expect(row).toMatchObject({ state: 'dead', attempts: 2 });
    expect(row.lastError).toMatchObject({ code: '57P01', context: { attemptCounted: true, outageRestarts: MAX_OUTAGE_RESTARTS } });

    // The count goes with the run's failures: a replay starts without it, and waits out outages again.
    await requeueJob(env.pool, job.id);
    expect(await fail()).toMatchObject({ state: 'queued', waiting: true });
  });

  it('new outages after progress the run keeps are never spent: a campaign meeting S3 throttling now and then', async () => {
    // A mass import that imported files between streaks of SlowDown: each streak is a new outage, each is evidence of
    // a dependency that comes and goes, and a one-attempt run waits them all out however many there are.
    const { job } = await enqueueJob(env.pool, { kind: 'outage-flapping', maxAttempts: 1 });
    const worked = () => s3Outage({ progressed: true, progressKept: true });
    for (let streak = 1; streak <= MAX_OUTAGE_RESTARTS + 3; streak += 1) {
      await dueNow(job.id);
      const lease = await claim('outage-flapping');
      expect(await recordFailure(env.pool, { lease, error: outageError(lease.attempt), retryDelayMs: 0, outage: worked() })).toMatchObject({ state: 'queued', waiting: true });
    }
    expect(await requireJob(env.pool, job.id)).toMatchObject({ attempts: 0, lastError: { context: { outageRestarts: 0 } } });

    // Other new outages count up from there, and kept progress starts the count again.
    const guessed = () => s3Outage({ dependency: 'database', progressed: true });
    for (let i = 0; i < 3; i += 1) {
      await dueNow(job.id);
      const lease = await claim('outage-flapping');
      await recordFailure(env.pool, { lease, error: outageError(lease.attempt), retryDelayMs: 0, outage: guessed() });
    }
    expect(await requireJob(env.pool, job.id)).toMatchObject({ lastError: { context: { outageRestarts: 3 } } });
    await dueNow(job.id);
    const lease = await claim('outage-flapping');
    await recordFailure(env.pool, { lease, error: outageError(lease.attempt), retryDelayMs: 0, outage: worked() });
    expect(await requireJob(env.pool, job.id)).toMatchObject({ attempts: 0, lastError: { context: { outageRestarts: 0 } } });
  });

  it('an approval starts the count again: the finalize is a new stretch of the run', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'outage-review', maxAttempts: 1 });
    const guessed = s3Outage({ dependency: 'database', progressed: true });
    for (let i = 0; i < 2; i += 1) {
      await dueNow(job.id);
      const lease = await claim('outage-review');
      await recordFailure(env.pool, { lease, error: outageError(lease.attempt), retryDelayMs: 0, outage: guessed });
    }
    await dueNow(job.id);
    const lease = await claim('outage-review');
    await completeJobs(env.pool, 'w', [{ jobId: job.id, attempt: lease.attempt, state: 'review_ready' }]);
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'review_ready', lastError: { context: { outageRestarts: 2 } } });
    const resumed = await resumeParkedJob(env.pool, job.id);
    expect(resumed?.lastError?.context).not.toHaveProperty('outageRestarts');
    expect(resumed?.lastError).toMatchObject({ code: 'S3_UNAVAILABLE' });
  });

  it('a permanent error is never an outage', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'outage-permanent' });
    const lease = await claim('outage-permanent');
    const error = toErrorRecord(new PermanentJobError('bad', 'INVALID_PAYLOAD'), 1, 'w');
    expect(await recordFailure(env.pool, { lease, error, retryDelayMs: 0, outage: s3Outage() })).toMatchObject({ state: 'failed', waiting: false });
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'failed', attempts: 1, outageStartedAt: null });
  });
});

describe('the worker', () => {
  const workers: Worker[] = [];
  afterEach(async () => {
    await Promise.all(workers.splice(0).map((worker) => worker.stop()));
  });

  it('reports a run waiting out an outage as waiting (metric outcome outage_wait), not as a failed attempt', async () => {
    // The repeated-failures alarm sums the failure outcomes: a routine failover must not page through the runs that
    // wait for it (the runbook: a shorter outage does not page).
    let calls = 0;
    const flaky: JobHandler<unknown> = {
      kind: 'outage-once',
      description: 'S3 away on its first attempt',
      parsePayload: () => ({}),
      run: async () => {
        calls += 1;
        if (calls === 1) throw new DependencyOutageError('S3 unavailable', 's3', new Date(), false);
      },
    };
    const events: JobFinishedEvent[] = [];
    const worker = testWorker(env, [flaky], { pollIntervalMs: 50, backoffBaseMs: 10, outageBackoffMaxMs: 20, outageBudgetMs: 60_000 });
    workers.push(worker);
    worker.on('jobFinished', (event) => events.push(event));
    void worker.start();
    const { job } = await enqueueJob(env.pool, { kind: 'outage-once', maxAttempts: 1 });
    await waitFor(async () => (await requireJob(env.pool, job.id)).state === 'succeeded');
    await waitFor(async () => events.length === 2);
    expect(events.map((event) => event.state)).toEqual(['waiting', 'succeeded']);
    expect(events.map((event) => jobMetricPoints(event)[0]?.dimensions)).toEqual([
      { Kind: 'outage-once', Outcome: 'outage_wait' },
      { Kind: 'outage-once', Outcome: 'succeeded' },
    ]);
  });
});
