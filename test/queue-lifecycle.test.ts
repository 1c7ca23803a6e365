import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { replayDead } from '../worker/actions/run-actions.js';
import type { JobHandler } from '../worker/handlers/types.js';
import { noopHandler } from '../worker/handlers/noop.js';
import { createLogger } from '../worker/logger.js';
import { backoffCeilingMs, backoffDelayMs } from '../worker/queue/backoff.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { classifyError, PermanentJobError, TransientJobError } from '../worker/queue/errors.js';
import { completeJobs, failJob, releaseJobs } from '../worker/queue/finish.js';
import { assertLeaseHeld, extendLeases, LeaseLostError, saveProgress } from '../worker/queue/lease.js';
import { deleteExpiredJobs, rescueExpiredLeases } from '../worker/queue/maintenance.js';
import { cancelJob, getJob, replayDeadJobs, requeueJob, requireJob, resolveJob, resumeParkedJob } from '../worker/queue/operator.js';
import { BACK_PROOF_DELAY_MS, DatabaseStatus } from '../worker/db/database-status.js';
import type { Queryable } from '../worker/db/pool.js';
import { createRescuer } from '../worker/maintenance/rescuer.js';
import { CompletionBatcher } from '../worker/runner/completion-batcher.js';
import type { WakeupListener } from '../worker/runner/wakeup-listener.js';
import type { Worker } from '../worker/runner/worker.js';
import type { Lease } from '../worker/queue/types.js';
import { useTestEnvironment } from './harness.js';
import { jobInState, testWorker, waitFor } from './support/in-process-worker.js';
import { recordingLogger } from './support/recording-logger.js';

const env = useTestEnvironment();
const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((worker) => worker.stop()));
});

function start(worker: Worker): Worker {
  workers.push(worker);
  void worker.start();
  return worker;
}

async function expireLease(jobId: number): Promise<void> {
  await env.pool.query("UPDATE jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1", [jobId]);
}

describe('fencing', () => {
  it('refuses progress, completion and failure from a worker whose lease was taken over', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'fence', maxAttempts: 5 });
    const [a] = await claimJobs(env.pool, { workerId: 'worker-a', limit: 1, leaseMs: 60_000, kinds: ['fence'] });
    await expireLease(job.id);
    expect((await rescueExpiredLeases(env.pool)).requeued).toEqual([job.id]);
    const [b] = await claimJobs(env.pool, { workerId: 'worker-b', limit: 1, leaseMs: 60_000, kinds: ['fence'] });
    expect(b!.attempt).toBe(2);

    const leaseA = { jobId: job.id, owner: 'worker-a', attempt: a!.attempt };
    expect(await saveProgress(env.pool, leaseA, { done: 99 })).toBe(false);
    expect(await completeJobs(env.pool, 'worker-a', [{ jobId: job.id, attempt: 1, state: 'succeeded' }])).toEqual(new Map());
    const error = { message: 'x', code: 'X', class: 'permanent' as const, attempt: 1, at: new Date().toISOString() };
    expect(await failJob(env.pool, { lease: leaseA, error, retryDelayMs: 0 })).toBeNull();
    expect((await extendLeases(env.pool, 'worker-a', [{ jobId: job.id, attempt: 1 }], 60_000)).lost).toEqual([job.id]);
    await expect(assertLeaseHeld(env.pool, leaseA)).rejects.toBeInstanceOf(LeaseLostError);
    // Even the same owner name with the old attempt number is refused: the attempt is the fencing token.
    expect(await saveProgress(env.pool, { ...leaseA, owner: 'worker-b' }, { done: 1 })).toBe(false);

    const current = await requireJob(env.pool, job.id);
    expect(current).toMatchObject({ state: 'running', leaseOwner: 'worker-b', attempts: 2, progress: null });
    const leaseB = { jobId: job.id, owner: 'worker-b', attempt: 2 };
    expect(await saveProgress(env.pool, leaseB, { done: 1 })).toBe(true);
    expect(await completeJobs(env.pool, 'worker-b', [{ jobId: job.id, attempt: 2, state: 'succeeded' }])).toEqual(new Map([[job.id, 'succeeded']]));
  });

  it('reports only the current attempt stored when two attempts of one run end in the same completion batch', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'fence-batch', maxAttempts: 5 });
    const [older] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 60_000, kinds: ['fence-batch'] });
    await expireLease(job.id);
    expect((await rescueExpiredLeases(env.pool)).requeued).toEqual([job.id]);
    // The same process claims the run again while its older attempt is still unwinding.
    const [newer] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 60_000, kinds: ['fence-batch'] });
    expect([older!.attempt, newer!.attempt]).toEqual([1, 2]);
    const batcher = new CompletionBatcher(env.pool, 'w', createLogger({ level: 'silent', format: 'json' }));
    const outcomes = await Promise.all([
      batcher.add({ jobId: job.id, attempt: older!.attempt, state: 'succeeded' }),
      batcher.add({ jobId: job.id, attempt: newer!.attempt, state: 'succeeded' }),
    ]);
    expect(outcomes).toEqual([null, 'succeeded']);
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'succeeded', attempts: 2 });
  });

  it('an outcome whose COMMIT answer was lost is reported stored, not lost, when the retry finds it', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'lost-answer' });
    const [claimed] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 60_000, kinds: ['lost-answer'] });
    // The first write reaches the database and commits; its answer never comes back (the connection drops).
    let calls = 0;
    const answerLost: Queryable = {
      query: (async (...args: Parameters<Queryable['query']>) => {
        const result = await (env.pool.query as (...a: unknown[]) => Promise<unknown>)(...args);
        calls += 1;
        if (calls === 1) throw new Error('Connection terminated unexpectedly');
        return result;
      }) as Queryable['query'],
    };
    const batcher = new CompletionBatcher(answerLost, 'w', createLogger({ level: 'silent', format: 'json' }));
    expect(await batcher.add({ jobId: job.id, attempt: claimed!.attempt, state: 'succeeded' })).toBe('succeeded');
    expect(calls).toBeGreaterThanOrEqual(3); // the write, its retry (which matched nothing), the look-up
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'succeeded', attempts: 1 });
  });

  it('a rescue of the attempt while its outcome waited is not taken for the stored outcome', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'rescued-meanwhile' });
    const [claimed] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 60_000, kinds: ['rescued-meanwhile'] });
    expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
    // The handler stopped for the cancel; its outcome's first write never reaches the database, whose rescuer then
    // ends the run (its lease ran out meanwhile) canceled too, with the attempt unchanged.
    let calls = 0;
    const unreachable: Queryable = {
      query: (async (...args: Parameters<Queryable['query']>) => {
        calls += 1;
        if (calls === 1) {
          await expireLease(job.id);
          expect((await rescueExpiredLeases(env.pool)).canceled).toEqual([job.id]);
          throw new Error('Connection terminated unexpectedly');
        }
        return (env.pool.query as (...a: unknown[]) => Promise<unknown>)(...args);
      }) as Queryable['query'],
    };
    const batcher = new CompletionBatcher(unreachable, 'w', createLogger({ level: 'silent', format: 'json' }));
    expect(await batcher.add({ jobId: job.id, attempt: claimed!.attempt, state: 'canceled' })).toBeNull();
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'canceled', lastError: { code: 'LEASE_EXPIRED' } });
  });

  it('the rescuer holds off for a lease length after the database came back, then rescues', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'rescue-hold', maxAttempts: 5 });
    await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 60_000, kinds: ['rescue-hold'] });
    const log = createLogger({ level: 'silent', format: 'json' });
    const status = new DatabaseStatus(log);
    const longHold = createRescuer(env.pool, 60_000, log, { status, holdAfterOutageMs: 60_000 });
    const shortHold = createRescuer(env.pool, 60_000, log, { status, holdAfterOutageMs: 300 });
    // A worker that has just started (maybe during an outage it never saw end) holds off as well.
    await expireLease(job.id);
    await longHold.runOnce();
    expect((await requireJob(env.pool, job.id)).state).toBe('running');
    // An outage this worker saw begin and end, during which the run's lease ran out.
    status.reportFailure(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), 'claim');
    await expireLease(job.id);
    // While the worker sees the database away no rescue is sent: when it returns, a rescue sent meanwhile would be the
    // first statement through, before any owner's renewal. A round held off proves nothing about the database.
    await shortHold.runOnce();
    expect((await requireJob(env.pool, job.id)).state).toBe('running');
    expect(status.health.state).toBe('unavailable');
    const backAt = Date.now();
    status.reportSuccess(Date.now() + BACK_PROOF_DELAY_MS);
    expect(status.health.state).toBe('ok');
    // Held: an owner still alive renews its lease first.
    await longHold.runOnce();
    expect((await requireJob(env.pool, job.id)).state).toBe('running');
    // Once the hold is over, the rescue goes on as always.
    await waitFor(async () => {
      await shortHold.runOnce();
      return (await requireJob(env.pool, job.id)).state === 'queued' || undefined;
    });
    expect(Date.now() - backAt).toBeGreaterThanOrEqual(300);
  });

  it('aborts the handler of a worker that lost its lease and discards its outcome', async () => {
    let sawAbort: unknown;
    const slow: JobHandler<unknown> = {
      kind: 'slow-fenced',
      description: 'waits for its signal',
      parsePayload: () => ({}),
      run: ({ signal }) =>
        new Promise((_, reject) => {
          signal.addEventListener('abort', () => {
            sawAbort = signal.reason;
            reject(signal.reason);
          });
        }),
    };
    const worker = start(testWorker(env, [slow], { heartbeatMs: 100 }));
    const { job } = await enqueueJob(env.pool, { kind: 'slow-fenced' });
    await waitFor(async () => (await getJob(env.pool, job.id))?.state === 'running');
    // Another worker takes the job over (as after a rescue).
    await env.pool.query("UPDATE jobs SET lease_owner = 'thief', attempts = attempts + 1 WHERE id = $1", [job.id]);
    await waitFor(async () => sawAbort !== undefined);
    expect(sawAbort).toBeInstanceOf(LeaseLostError);
    await waitFor(async () => worker.runningCount === 0);
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'running', leaseOwner: 'thief' });
  });
});

describe('failures, backoff and the dead-letter state', () => {
  it('keeps the backoff within [0, min(max, base·2^(attempt-1))]', () => {
    const policy = { baseMs: 1_000, maxMs: 60_000 };
    expect([1, 2, 3, 4, 7, 8, 30].map((attempt) => backoffCeilingMs(policy, attempt))).toEqual([
      1_000, 2_000, 4_000, 8_000, 60_000, 60_000, 60_000,
    ]);
    for (let attempt = 1; attempt <= 12; attempt += 1) {
      for (const random of [0, 0.25, 0.999999]) {
        const delay = backoffDelayMs(policy, attempt, () => random);
        expect(delay).toBeGreaterThanOrEqual(0);
        expect(delay).toBeLessThanOrEqual(backoffCeilingMs(policy, attempt));
      }
    }
    expect(backoffDelayMs(policy, 3, () => 0.999999)).toBe(4_000);
    const samples = Array.from({ length: 2_000 }, () => backoffDelayMs(policy, 4));
    expect(Math.max(...samples)).toBeLessThanOrEqual(8_000);
    // Full jitter: spread over the whole range, not bunched at the ceiling.
    expect(samples.filter((delay) => delay < 4_000).length).toBeGreaterThan(600);
  });

  it('retries a transient failure with a delay, then moves the job to dead with a structured last_error', async () => {
    start(testWorker(env, [noopHandler], { backoffBaseMs: 20, backoffMaxMs: 40 }));
    const { job } = await enqueueJob(env.pool, { kind: 'noop', payload: { fail: 'transient' }, maxAttempts: 3 });
    const dead = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'dead' ? current : undefined;
    });
    expect(dead.attempts).toBe(3);
    expect(dead.finishedAt).not.toBeNull();
    expect(dead.lastError).toMatchObject({
      message: 'noop asked to fail (transient)',
      code: 'NOOP_TRANSIENT',
      class: 'transient',
      attempt: 3,
      context: { sleepMs: 0 },
    });
    expect(typeof dead.lastError!.worker).toBe('string');
    expect(new Date(dead.lastError!.at).getTime()).toBeGreaterThan(Date.now() - 60_000);
    // Our own message, written for the run's owner: not internal (a tenant reads it as it is).
    expect(dead.lastError!.internal).toBe(false);
  });

  it("marks an error that is not a JobError (a driver's, a bug's) internal, with its stack", async () => {
    const refused: JobHandler<unknown> = {
      kind: 'raw-failure',
      description: 'fails as a driver does',
      parsePayload: () => ({}),
      run: () => Promise.reject(Object.assign(new Error('relation "billing_secrets" does not exist'), { code: '42P01' })),
    };
    start(testWorker(env, [refused]));
    const { job } = await enqueueJob(env.pool, { kind: 'raw-failure', maxAttempts: 1 });
    const failed = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'failed' ? current : undefined;
    });
    expect(failed.lastError).toMatchObject({ code: '42P01', message: 'relation "billing_secrets" does not exist', internal: true });
    expect(failed.lastError!.stack).toContain('Error: relation "billing_secrets"');
  });

  it('fails a permanent error at once, without a retry', async () => {
    start(testWorker(env, [noopHandler]));
    const { job } = await enqueueJob(env.pool, { kind: 'noop', payload: { fail: 'permanent' }, maxAttempts: 5 });
    const failed = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'failed' ? current : undefined;
    });
    expect(failed.attempts).toBe(1);
    expect(failed.lastError).toMatchObject({ class: 'permanent', code: 'NOOP_PERMANENT', attempt: 1 });
  });

  it('fails an invalid payload permanently with a message naming the field', async () => {
    start(testWorker(env, [noopHandler]));
    const { job } = await enqueueJob(env.pool, { kind: 'noop', payload: { sleepMs: 'soon' } });
    const failed = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'failed' ? current : undefined;
    });
    expect(failed.lastError!.message).toMatch(/"sleepMs" must be a whole number/);
    expect(failed.lastError!.code).toBe('INVALID_PAYLOAD');
  });

  it('schedules a transient retry after the backoff delay', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'backoff-probe', maxAttempts: 5 });
    const [claimed] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['backoff-probe'] });
    const error = { message: 'S3 503', code: 'SlowDown', class: 'transient' as const, attempt: 1, at: new Date().toISOString() };
    const state = await failJob(env.pool, { lease: { jobId: job.id, owner: 'w', attempt: claimed!.attempt }, error, retryDelayMs: 30_000 });
    expect(state).toBe('queued');
    // Measured from the failure's own time (updated_at is the statement's now()), not from whenever this reads it.
    const { rows } = await env.pool.query('SELECT extract(epoch FROM run_at - updated_at) AS wait FROM jobs WHERE id = $1', [job.id]);
    expect(Number(rows[0].wait)).toBe(30);
    expect(await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['backoff-probe'] })).toEqual([]);
  });

  it('classifies errors: Postgres serialization/deadlock/connection, S3 5xx and throttling, network → transient', () => {
    expect(classifyError(Object.assign(new Error('x'), { code: '40001' })).errorClass).toBe('transient');
    expect(classifyError(Object.assign(new Error('x'), { code: '40P01' })).errorClass).toBe('transient');
    expect(classifyError(Object.assign(new Error('x'), { code: '08006' })).errorClass).toBe('transient');
    expect(classifyError(Object.assign(new Error('x'), { code: '23505' })).errorClass).toBe('permanent');
    expect(classifyError(Object.assign(new Error('x'), { code: 'ECONNRESET' })).errorClass).toBe('transient');
    expect(classifyError(Object.assign(new Error('x'), { name: 'SlowDown', $metadata: { httpStatusCode: 503 } })).errorClass).toBe('transient');
    expect(classifyError(Object.assign(new Error('x'), { name: 'InternalError', $metadata: { httpStatusCode: 500 } })).code).toBe('InternalError');
    expect(classifyError(Object.assign(new Error('x'), { name: 'AccessDenied', $metadata: { httpStatusCode: 403 } })).errorClass).toBe('permanent');
    expect(classifyError(new Error('Connection terminated unexpectedly')).errorClass).toBe('transient');
    expect(classifyError(new PermanentJobError('bad')).errorClass).toBe('permanent');
    expect(classifyError(new TransientJobError('later')).errorClass).toBe('transient');
  });
});

describe('rescue, retention, cancel and requeue', () => {
  it('rescues expired leases back to queued, or to dead without attempts left', async () => {
    // The rescue takes every expired lease of the database: none of the earlier tests' runs may be among them (the
    // fencing test leaves a run held by 'thief' whose 2 s lease runs out whenever the tests in between are slow).
    await env.pool.query('DELETE FROM jobs');
    const { job: retry } = await enqueueJob(env.pool, { kind: 'rescue-me', maxAttempts: 3 });
    const { job: last } = await enqueueJob(env.pool, { kind: 'rescue-me', maxAttempts: 1 });
    await claimJobs(env.pool, { workerId: 'crashed', limit: 2, leaseMs: 60_000, kinds: ['rescue-me'] });
    expect(await rescueExpiredLeases(env.pool)).toEqual({ requeued: [], dead: [], canceled: [] });
    await expireLease(retry.id);
    await expireLease(last.id);
    const rescued = await rescueExpiredLeases(env.pool);
    expect(rescued).toEqual({ requeued: [retry.id], dead: [last.id], canceled: [] });
    expect(await requireJob(env.pool, retry.id)).toMatchObject({ state: 'queued', leaseOwner: null, attempts: 1 });
    const dead = await requireJob(env.pool, last.id);
    expect(dead.state).toBe('dead');
    expect(dead.lastError).toMatchObject({ code: 'LEASE_EXPIRED', class: 'transient', attempt: 1, worker: 'crashed', internal: true });
  });

  it('deletes only finished runs older than the retention, in batches, and keeps dead runs nobody resolved', async () => {
    await env.pool.query('DELETE FROM jobs');
    const old = await Promise.all([1, 2, 3].map(() => enqueueJob(env.pool, { kind: 'retained' })));
    const fresh = await enqueueJob(env.pool, { kind: 'retained' });
    const queuedOld = await enqueueJob(env.pool, { kind: 'retained' });
    // The dead-letter queue: a dead run stays until an operator replays, resolves or purges it (the DeadJobs alarm
    // stays on meanwhile), however old; a resolved one stays the retention from its resolution, as history.
    const deadOld = await enqueueJob(env.pool, { kind: 'retained' });
    const resolvedOld = await enqueueJob(env.pool, { kind: 'retained' });
    const resolvedLately = await enqueueJob(env.pool, { kind: 'retained' });
    await env.pool.query(
      "UPDATE jobs SET state = 'succeeded', finished_at = now() - interval '40 days' WHERE id = ANY($1)",
      [old.map((o) => o.job.id)],
    );
    await env.pool.query("UPDATE jobs SET state = 'failed', finished_at = now() - interval '2 days' WHERE id = $1", [fresh.job.id]);
    await env.pool.query("UPDATE jobs SET created_at = now() - interval '90 days' WHERE id = $1", [queuedOld.job.id]);
    await env.pool.query("UPDATE jobs SET state = 'dead', finished_at = now() - interval '40 days' WHERE id = ANY($1)", [
      [deadOld.job.id, resolvedOld.job.id, resolvedLately.job.id],
    ]);
    await env.pool.query("UPDATE jobs SET resolved_at = now() - interval '35 days', resolved_by = 'on-call' WHERE id = $1", [resolvedOld.job.id]);
    await resolveJob(env.pool, resolvedLately.job.id, { by: 'on-call', note: 'kept as history' });
    expect(await deleteExpiredJobs(env.pool, 30, 2)).toBe(2);
    expect(await deleteExpiredJobs(env.pool, 30, 2)).toBe(2);
    expect(await deleteExpiredJobs(env.pool, 30, 2)).toBe(0);
    const { rows } = await env.pool.query('SELECT id FROM jobs ORDER BY id');
    expect(rows.map((row) => row.id)).toEqual([fresh.job.id, queuedOld.job.id, deadOld.job.id, resolvedLately.job.id]);
  });

  it('deletes a run with many child rows in chunks: per-item rows go, business rows only lose the link', async () => {
    await env.pool.query(`
      CREATE TABLE retention_items (job_id bigint NOT NULL, n int);
      CREATE INDEX ON retention_items (job_id);
      CREATE TABLE retention_business (id serial, job_id bigint);
      INSERT INTO job_child_tables VALUES ('retention_items', 'job_id', 'cascade'), ('retention_business', 'job_id', 'set-null');`);
    const { job } = await enqueueJob(env.pool, { kind: 'retained-big' });
    const { job: keep } = await enqueueJob(env.pool, { kind: 'retained-big' });
    await env.pool.query('INSERT INTO retention_items SELECT $1, n FROM generate_series(1, 12000) AS n', [job.id]);
    await env.pool.query('INSERT INTO retention_items SELECT $1, n FROM generate_series(1, 10) AS n', [keep.id]);
    await env.pool.query('INSERT INTO retention_business (job_id) SELECT $1 FROM generate_series(1, 7000)', [job.id]);
    await env.pool.query("UPDATE jobs SET state = 'succeeded', finished_at = now() - interval '40 days' WHERE id = $1", [job.id]);
    const statements: string[] = [];
    // A pool whose connections record the statements they run (retention works in one transaction per batch).
    const counting = {
      connect: async () => {
        const client = await env.pool.connect();
        const query = client.query.bind(client) as (text: string, values?: unknown[]) => Promise<unknown>;
        const release = client.release.bind(client);
        Object.assign(client, {
          query: (text: string, values?: unknown[]) => (statements.push(text), query(text, values)),
          release: (error?: Error | boolean) => {
            Object.assign(client, { query, release });
            release(error);
          },
        });
        return client;
      },
    } as unknown as typeof env.pool;
    expect(await deleteExpiredJobs(counting, 30, 10, 5_000)).toBe(1);
    // 12,000 items in chunks of 5,000 take 3 statements; 7,000 links take 2.
    expect(statements.filter((text) => text.startsWith('DELETE FROM retention_items')).length).toBe(3);
    expect(statements.filter((text) => text.startsWith('UPDATE retention_business')).length).toBe(2);
    const left = await env.pool.query(
      `SELECT (SELECT count(*)::int FROM retention_items WHERE job_id = $1) AS items,
              (SELECT count(*)::int FROM retention_items WHERE job_id = $2) AS kept_items,
              (SELECT count(*)::int FROM retention_business WHERE job_id IS NULL) AS unlinked,
              (SELECT count(*)::int FROM jobs WHERE id = $1) AS jobs`,
      [job.id, keep.id],
    );
    expect(left.rows[0]).toEqual({ items: 0, kept_items: 10, unlinked: 7000, jobs: 0 });
    await env.pool.query("DROP TABLE retention_items, retention_business; DELETE FROM job_child_tables WHERE table_name LIKE 'retention\\_%'");
  });

  it('a requeue while retention deletes a run is refused at once: no run without its child rows, no long transaction', async () => {
    // Retention is held inside the deletion of a run's child rows (a trigger that waits on an advisory lock the test
    // holds) while an operator requeues the run.
    await env.pool.query(`
      CREATE TABLE retention_race (job_id bigint NOT NULL, n int);
      INSERT INTO job_child_tables VALUES ('retention_race', 'job_id', 'cascade');
      CREATE FUNCTION retention_race_gate() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_advisory_xact_lock(424242); RETURN OLD; END $$;
      CREATE TRIGGER retention_race_gate BEFORE DELETE ON retention_race FOR EACH ROW EXECUTE FUNCTION retention_race_gate();`);
    const { job } = await enqueueJob(env.pool, { kind: 'retained-race' });
    await env.pool.query('INSERT INTO retention_race SELECT $1, n FROM generate_series(1, 3) AS n', [job.id]);
    // Dead (and resolved: retention keeps an unresolved one): both a requeue and a replay would take it back.
    await env.pool.query("UPDATE jobs SET state = 'dead', finished_at = now() - interval '40 days', resolved_at = now() - interval '40 days' WHERE id = $1", [job.id]);
    const gate = await env.pool.connect();
    try {
      await gate.query('BEGIN; SELECT pg_advisory_xact_lock(424242)');
      const retention = deleteExpiredJobs(env.pool, 30, 10);
      await waitFor(async () => {
        const { rows } = await env.pool.query(
          "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM retention_race%'",
        );
        return rows.length > 0 || undefined;
      });
      // The mark is committed (the requeue sees it) while the child rows are still being deleted.
      await expect(requeueJob(env.pool, job.id)).rejects.toThrow(/being deleted/);
      await expect(replayDead(env.pool, { name: 'ops', tenantId: null }, { ids: [job.id] })).rejects.toThrow(/being deleted/);
      expect((await replayDead(env.pool, { name: 'ops', tenantId: null }, { all: true, kinds: ['retained-race'] })).replayed).toEqual([]);
      await gate.query('COMMIT');
      expect(await retention).toBe(1);
      const { rows } = await env.pool.query(
        'SELECT (SELECT count(*)::int FROM jobs WHERE id = $1) AS jobs, (SELECT count(*)::int FROM retention_race WHERE job_id = $1) AS children',
        [job.id],
      );
      expect(rows[0]).toEqual({ jobs: 0, children: 0 });
    } finally {
      await gate.query('ROLLBACK').catch(() => {});
      gate.release();
      await env.pool.query("DROP TABLE retention_race; DROP FUNCTION retention_race_gate(); DELETE FROM job_child_tables WHERE table_name = 'retention_race'");
    }
  });

  it('a run a retention round left marked (the process died) is taken again an hour on, not by a round in progress', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'retained-left' });
    await env.pool.query(
      "UPDATE jobs SET state = 'dead', resolved_at = now() - interval '40 days', finished_at = now() - interval '40 days', retention_started_at = now() - interval '5 minutes' WHERE id = $1",
      [job.id],
    );
    expect(await deleteExpiredJobs(env.pool, 30, 10)).toBe(0);
    await expect(requeueJob(env.pool, job.id)).rejects.toThrow(/being deleted/);
    await env.pool.query("UPDATE jobs SET retention_started_at = now() - interval '61 minutes' WHERE id = $1", [job.id]);
    expect(await deleteExpiredJobs(env.pool, 30, 10)).toBe(1);
  });

  it('retention skips a run an operator holds locked, and takes it on a later round', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'retained-held' });
    await env.pool.query("UPDATE jobs SET state = 'dead', resolved_at = now() - interval '40 days', finished_at = now() - interval '40 days' WHERE id = $1", [job.id]);
    const operator = await env.pool.connect();
    try {
      await operator.query('BEGIN');
      await operator.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [job.id]);
      expect(await deleteExpiredJobs(env.pool, 30, 10)).toBe(0);
      await operator.query('COMMIT');
      expect(await deleteExpiredJobs(env.pool, 30, 10)).toBe(1);
    } finally {
      await operator.query('ROLLBACK').catch(() => {});
      operator.release();
    }
  });

  it('rescues a cancel-requested job whose worker died as canceled, not back to the queue', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'cancel-orphan' });
    await claimJobs(env.pool, { workerId: 'gone', limit: 1, leaseMs: 60_000, kinds: ['cancel-orphan'] });
    expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
    await expireLease(job.id);
    expect((await rescueExpiredLeases(env.pool)).canceled).toEqual([job.id]);
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'canceled', leaseOwner: null });
  });

  it('cancels a queued run at once and aborts the handler of a running one', async () => {
    const queued = await enqueueJob(env.pool, { kind: 'noop', runAt: new Date(Date.now() + 3_600_000) });
    expect(await cancelJob(env.pool, queued.job.id)).toMatchObject({ pending: false, job: { state: 'canceled' } });

    let aborted = false;
    const waits: JobHandler<unknown> = {
      kind: 'waits',
      description: 'waits for its signal',
      parsePayload: () => ({}),
      run: ({ signal }) =>
        new Promise((_, reject) =>
          signal.addEventListener('abort', () => {
            aborted = true;
            reject(signal.reason);
          }),
        ),
    };
    // Heartbeats far apart: the cancel must arrive through NOTIFY, not the next heartbeat.
    const worker = start(testWorker(env, [waits], { heartbeatMs: 60_000, leaseMs: 120_000 }));
    const started = new Promise<void>((resolve) => worker.on('jobStarted', () => resolve()));
    const { job } = await enqueueJob(env.pool, { kind: 'waits' });
    // The handler runs (the row says `running` as soon as the claim commits, before the worker has its answer).
    await started;
    const cancel = await cancelJob(env.pool, job.id);
    expect(cancel.pending).toBe(true);
    const ended = await jobInState(env.pool, job.id, ['canceled'], 30_000); // half the heartbeat interval: only the NOTIFY can be this quick
    expect(aborted).toBe(true);
    expect(ended.finishedAt).not.toBeNull();
    await expect(cancelJob(env.pool, job.id)).rejects.toThrow(/is canceled: cannot cancel it/);
  });

  it('a cancel heard before the claim that leased the run has answered ends it canceled, its handler never started', async () => {
    // The claim commits, its reply is slow to come back; the cancel's NOTIFY overtakes it, for a job the worker does
    // not hold yet. Dropped, the run would go on until the next heartbeat (a minute here) told the worker again.
    let started = false;
    const waits: JobHandler<unknown> = {
      kind: 'waits-cancel-race',
      description: 'waits for its signal',
      parsePayload: () => ({}),
      run: ({ signal }) => {
        started = true;
        return new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason)));
      },
    };
    const recorded = recordingLogger('info');
    const worker = start(testWorker(env, [waits], { heartbeatMs: 60_000, leaseMs: 120_000 }, recorded.log));
    const { job } = await enqueueJob(env.pool, { kind: 'waits-cancel-race', runAt: new Date(Date.now() + 3_600_000) });
    // White box: the claim's answer is held once it holds this job, until the worker has heard the cancel.
    const claim = claimSession(worker);
    const cancelHeard = claim.cancelHeard(job.id);
    let answered!: () => void;
    const claimAnswered = new Promise<void>((resolve) => (answered = resolve));
    claim.wrap(async (run) => {
      const result = await run();
      if (result.rows.some((row) => row.id === job.id)) {
        answered();
        await cancelHeard;
      }
      return result;
    });
    await env.pool.query('UPDATE jobs SET run_at = now() WHERE id = $1', [job.id]);
    await claimAnswered;
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'running' });
    expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
    const ended = await jobInState(env.pool, job.id, ['canceled'], 30_000); // half the heartbeat interval: the cancel was kept, not left to the next beat
    expect(started).toBe(false);
    expect(ended).toMatchObject({ leaseOwner: null, attempts: 0 }); // given back unstarted: no attempt counted
    // No attempt writes `job finished` for it: the release says how the run ended.
    const line = await waitFor(async () => recorded.lines().find((entry) => entry.job_id === job.id && entry.outcome === 'canceled'));
    expect(line).toMatchObject({ msg: 'job canceled at its release: a cancel was asked for it', kind: 'waits-cancel-race' });
    expect(recorded.lines().filter((entry) => entry.msg === 'released jobs back to the queue' && (entry.jobs as number[]).includes(job.id))).toEqual([]);
  });

  it('a cancel heard while a claim runs, for an earlier run of a job since requeued, does not cancel the new run', async () => {
    // The claim waits before its snapshot (for the tenant ceilings' lock, say) while an operator cancels the run on
    // another worker, which ends it canceled, and then requeues it: the claim then leases the new run. The cancel it
    // heard was for the old one: it must not end this one canceled unasked.
    let started = false;
    const runs: JobHandler<unknown> = {
      kind: 'stale-cancel',
      description: 'runs at once',
      parsePayload: () => ({}),
      run: async () => {
        started = true;
      },
    };
    const worker = start(testWorker(env, [runs], { heartbeatMs: 60_000, leaseMs: 120_000, pollIntervalMs: 50 }));
    // White box: the worker's next claim waits here, before it reaches the database, until the gate opens.
    const claim = claimSession(worker);
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let entered!: () => void;
    const claimWaits = new Promise<void>((resolve) => (entered = resolve));
    claim.wrap(async (run) => {
      entered();
      await gate;
      return run();
    });
    await claimWaits;
    try {
      const { job } = await enqueueJob(env.pool, { kind: 'stale-cancel' });
      const [other] = await claimJobs(env.pool, { workerId: 'other', limit: 1, leaseMs: 60_000, kinds: ['stale-cancel'] });
      expect(other?.id).toBe(job.id);
      const heard = claim.cancelHeard(job.id);
      expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
      await heard;
      expect(await completeJobs(env.pool, 'other', [{ jobId: job.id, attempt: other!.attempt, state: 'canceled' }])).toEqual(new Map([[job.id, 'canceled']]));
      expect(await requeueJob(env.pool, job.id)).toMatchObject({ state: 'queued' });
      open();
      const ended = await jobInState(env.pool, job.id, ['succeeded', 'canceled']);
      expect(ended.state).toBe('succeeded');
      expect(started).toBe(true);
    } finally {
      open();
    }
  });

  it('requeues failed, dead and canceled runs, and replays dead ones', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'requeue-me', maxAttempts: 1 });
    const [claimed] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['requeue-me'] });
    const error = { message: 'boom', code: 'X', class: 'transient' as const, attempt: 1, at: new Date().toISOString() };
    expect(await failJob(env.pool, { lease: { jobId: job.id, owner: 'w', attempt: claimed!.attempt }, error, retryDelayMs: 0 })).toBe('dead');
    const again = await requeueJob(env.pool, job.id);
    expect(again).toMatchObject({ state: 'queued', attempts: 1, maxAttempts: 2, finishedAt: null });
    await expect(requeueJob(env.pool, job.id)).rejects.toThrow(/is queued: cannot requeue it/);
    await env.pool.query("UPDATE jobs SET state = 'dead', finished_at = now() WHERE id = $1", [job.id]);
    const { replayed } = await replayDeadJobs(env.pool, { kinds: ['requeue-me'], resetAttempts: true });
    expect(replayed.map((row) => [row.id, row.state, row.attempts])).toEqual([[job.id, 'queued', 0]]);
  });

  it('a replay of all leaves dead the runs whose dedupe key is in use, and replays the others', async () => {
    const dead = async (tenantId: string, dedupeKey: string | null): Promise<number> => {
      const { job } = await enqueueJob(env.pool, { kind: 'replay-keys', tenantId, dedupeKey });
      await env.pool.query("UPDATE jobs SET state = 'dead', finished_at = now(), attempts = 5 WHERE id = $1", [job.id]);
      return job.id;
    };
    // The key K died, the client submitted K again and that died too; key L died and its resubmit is queued.
    const olderK = await dead('shop', 'K');
    const newerK = await dead('shop', 'K');
    const deadL = await dead('shop', 'L');
    const { job: activeL } = await enqueueJob(env.pool, { kind: 'replay-keys', tenantId: 'shop', dedupeKey: 'L' });
    const sameKeyOtherTenant = await dead('other', 'K');
    const plain = await dead('shop', null);

    const { replayed, skipped } = await replayDeadJobs(env.pool, { kinds: ['replay-keys'] });
    expect(replayed.map((row) => row.id)).toEqual([newerK, sameKeyOtherTenant, plain]);
    expect(replayed.every((row) => row.state === 'queued')).toBe(true);
    expect(skipped).toEqual([
      { id: olderK, kind: 'replay-keys', tenantId: 'shop', dedupeKey: 'K', heldBy: newerK },
      { id: deadL, kind: 'replay-keys', tenantId: 'shop', dedupeKey: 'L', heldBy: activeL.id },
    ]);
    expect((await requireJob(env.pool, olderK)).state).toBe('dead');
    expect((await requireJob(env.pool, deadL)).state).toBe('dead');
    // Asked for by id, the refusal names the run that holds the key.
    await expect(requeueJob(env.pool, olderK)).rejects.toThrow(`job ${newerK} (queued) is active with the same dedupe key "K"`);
    await expect(requeueJob(env.pool, deadL)).rejects.toThrow(`job ${activeL.id} (queued) is active with the same dedupe key "L"`);
  });

  it('a dead run whose key a client submits while the replay runs is skipped, the others replayed', async () => {
    const dead = async (key: string | null): Promise<number> => {
      const { job } = await enqueueJob(env.pool, { kind: 'replay-race', tenantId: 'racing-shop', dedupeKey: key });
      await env.pool.query("UPDATE jobs SET state = 'dead', finished_at = now(), attempts = 5 WHERE id = $1", [job.id]);
      return job.id;
    };
    const raced = await dead('K');
    const other = await dead('M');
    // The client's submit of K is under way, not committed: the replay's candidates cannot see it.
    const client = await env.pool.connect();
    try {
      await client.query('BEGIN');
      const submitted = await client.query<{ id: number }>(
        "INSERT INTO jobs (kind, tenant_id, dedupe_key, payload) VALUES ('replay-race', 'racing-shop', 'K', '{}') RETURNING id",
      );
      const submitter = await backendPid(client);
      const replay = replayDeadJobs(env.pool, { kinds: ['replay-race'] });
      // The requeue waits on the submit's key; the submit then commits.
      await waitFor(
        async () =>
          (await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [submitter])).rows[0]!.n > 0,
      );
      await client.query('COMMIT');
      const { replayed, skipped } = await replay;
      expect(replayed.map((row) => row.id)).toEqual([other]);
      expect(skipped).toEqual([{ id: raced, kind: 'replay-race', tenantId: 'racing-shop', dedupeKey: 'K', heldBy: Number(submitted.rows[0]!.id) }]);
      expect((await requireJob(env.pool, raced)).state).toBe('dead');
      expect((await requireJob(env.pool, other)).state).toBe('queued');
    } finally {
      await client.query('ROLLBACK').catch(() => {});
      client.release();
    }
  });

  it('a cancel asked for while the attempt fails or is released at shutdown ends the run canceled, not retried', async () => {
    const error = { message: 'boom', code: 'X', class: 'transient' as const, attempt: 1, at: new Date().toISOString() };
    const { job: failing } = await enqueueJob(env.pool, { kind: 'cancel-race', maxAttempts: 5 });
    const [claimed] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['cancel-race'] });
    // The operator's cancel commits after the handler threw and before its failure is recorded.
    expect((await cancelJob(env.pool, failing.id)).pending).toBe(true);
    expect(await failJob(env.pool, { lease: { jobId: failing.id, owner: 'w', attempt: claimed!.attempt }, error, retryDelayMs: 0 })).toBe('canceled');
    expect(await requireJob(env.pool, failing.id)).toMatchObject({ state: 'canceled', leaseOwner: null, finishedAt: expect.any(Date) });

    const { job: released } = await enqueueJob(env.pool, { kind: 'cancel-race' });
    const [held] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['cancel-race'] });
    expect((await cancelJob(env.pool, released.id)).pending).toBe(true);
    expect((await releaseJobs(env.pool, 'w', [{ jobId: released.id, attempt: held!.attempt }])).map((job) => [job.id, job.state])).toEqual([[released.id, 'canceled']]);
    expect(await requireJob(env.pool, released.id)).toMatchObject({ state: 'canceled', finishedAt: expect.any(Date) });
    expect(await claimJobs(env.pool, { workerId: 'w2', limit: 5, leaseMs: 10_000, kinds: ['cancel-race'] })).toEqual([]);
  });

  it('a cancel asked for while an attempt ends in review_ready ends the run canceled, not parked for a later approval', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'cancel-review' });
    const [claimed] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['cancel-review'] });
    // The operator's cancel commits after the validation ended and before its outcome is recorded.
    expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
    // The state stored is what the worker reports (its log, metrics and jobFinished), not the one the handler asked for.
    expect(await completeJobs(env.pool, 'w', [{ jobId: job.id, attempt: claimed!.attempt, state: 'review_ready', result: { valid: 3 } }])).toEqual(
      new Map([[job.id, 'canceled']]),
    );
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'canceled', finishedAt: expect.any(Date), result: { valid: 3 } });

    // A run parked with the request before this rule: resuming it (an approval) clears it, and no heartbeat cancels it.
    const { job: parked } = await enqueueJob(env.pool, { kind: 'cancel-review' });
    const [held] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['cancel-review'] });
    await completeJobs(env.pool, 'w', [{ jobId: parked.id, attempt: held!.attempt, state: 'review_ready' }]);
    await env.pool.query('UPDATE jobs SET cancel_requested_at = now() WHERE id = $1', [parked.id]);
    expect(await resumeParkedJob(env.pool, parked.id)).toMatchObject({ state: 'queued', cancelRequestedAt: null });
    const [again] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['cancel-review'] });
    expect((await extendLeases(env.pool, 'w', [{ jobId: parked.id, attempt: again!.attempt }], 10_000)).cancelRequested).toEqual([]);
  });

  it('releases leases without counting the attempt', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'release-me' });
    const [claimed] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['release-me'] });
    expect((await releaseJobs(env.pool, 'w', [{ jobId: job.id, attempt: claimed!.attempt }])).map((job) => job.id)).toEqual([job.id]);
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'queued', attempts: 0, leaseOwner: null });
  });

  it('releases a job whose handler stopped for the shutdown before the poll loop ended', async () => {
    // The race a CI run caught: the handler returns at once on stop(), leaves the running set, and only then does
    // the poll loop (here in a claim held by a table lock) end and stop() look at what to release.
    const stopsAtOnce: JobHandler<unknown> = {
      kind: 'stops-at-once',
      description: 'returns as soon as it is asked to stop',
      parsePayload: () => ({}),
      run: ({ signal }) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
    };
    const worker = start(testWorker(env, [stopsAtOnce], { pollIntervalMs: 50 }));
    const { job } = await enqueueJob(env.pool, { kind: 'stops-at-once' });
    await waitFor(async () => (await getJob(env.pool, job.id))?.state === 'running');
    const locker = await env.pool.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
      await waitFor(claimWaitingOnLock);
      // White box: no cancel for this claim (the next test covers it), so it is still waiting when the handler returns.
      (worker as unknown as { claimClient: unknown }).claimClient = undefined;
      const stopping = worker.stop();
      await waitFor(releaseWaitingOnLock); // the handler has returned, and its release waits as the claim does
      await locker.query('ROLLBACK');
      await stopping;
    } finally {
      locker.release();
    }
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'queued', attempts: 0, leaseOwner: null });
  });

  it('gives a job stopped for the shutdown back at once, while another job still drains', async () => {
    // Its lease is not renewed once its handler has returned: left for the release at the end of the drain (a large
    // upload may take most of the grace time), it ran out, and the rescuer counted the attempt, the last one here.
    const stopsAtOnce: JobHandler<unknown> = {
      kind: 'stops-at-once',
      description: 'returns as soon as it is asked to stop',
      parsePayload: () => ({}),
      run: ({ signal }) => new Promise((_, reject) => signal.addEventListener('abort', () => reject(signal.reason))),
    };
    const { handler: drainsLong, started: slowStarted, letGo: drained } = drainsUntilLetGo('drains-long');
    const worker = start(testWorker(env, [stopsAtOnce, drainsLong], { pollIntervalMs: 50, shutdownGraceMs: 120_000 }));
    const quickStarted = new Promise<void>((resolve) => worker.on('jobStarted', (job) => job.kind === 'stops-at-once' && resolve()));
    const { job: quick } = await enqueueJob(env.pool, { kind: 'stops-at-once', maxAttempts: 1 });
    const { job: slow } = await enqueueJob(env.pool, { kind: 'drains-long' });
    // Both handlers running, not only leased: a job still in the prefetch buffer is released with the buffer.
    await Promise.all([quickStarted, slowStarted]);
    const stopping = worker.stop();
    await waitFor(async () => (await getJob(env.pool, quick.id))?.state === 'queued');
    expect(await requireJob(env.pool, quick.id)).toMatchObject({ attempts: 0, leaseOwner: null });
    expect(await requireJob(env.pool, slow.id)).toMatchObject({ state: 'running', leaseOwner: expect.any(String) });
    drained();
    await stopping;
    expect(await requireJob(env.pool, slow.id)).toMatchObject({ state: 'succeeded' });
  });

  it('a run canceled while its stopped handler drains ends canceled, and its attempt says so', async () => {
    // The shutdown has stopped the handler already, so an operator's cancel during the drain never reaches it; the
    // release ends the run canceled, and `job finished` (and the event, and JobsFinished) must say canceled, not released.
    let letGo!: () => void;
    const stopAsked = new Promise<void>((resolve) => (letGo = resolve));
    let stopping!: () => void;
    const handlerStopping = new Promise<void>((resolve) => (stopping = resolve));
    const drainsWhenLetGo: JobHandler<unknown> = {
      kind: 'drains-then-stops',
      description: 'once asked to stop, stops when the test lets it',
      parsePayload: () => ({}),
      run: ({ signal }) =>
        new Promise((_, reject) =>
          signal.addEventListener('abort', () => {
            stopping();
            void stopAsked.then(() => reject(signal.reason));
          }),
        ),
    };
    const recorded = recordingLogger('info');
    const worker = start(testWorker(env, [drainsWhenLetGo], { pollIntervalMs: 50, shutdownGraceMs: 120_000 }, recorded.log));
    const ended: string[] = [];
    worker.on('jobFinished', (event) => ended.push(event.state));
    const started = new Promise<void>((resolve) => worker.on('jobStarted', () => resolve()));
    const { job } = await enqueueJob(env.pool, { kind: 'drains-then-stops' });
    await started;
    const stopped = worker.stop();
    try {
      await handlerStopping;
      expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
    } finally {
      letGo();
    }
    await stopped;
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'canceled', attempts: 0, leaseOwner: null });
    expect(ended).toEqual(['canceled']);
    const finishedLine = recorded.lines().find((line) => line.msg === 'job finished' && line.job_id === job.id);
    expect(finishedLine).toMatchObject({ outcome: 'canceled' });
  });

  it('heartbeats the lease of a stopped run whose release failed, with nothing else running', async () => {
    // The stop may wait long for a claim (up to its timeouts) with no handler left: a lease whose release the database
    // refused is tried again at the end, and must not run out meanwhile (the rescuer would count the attempt).
    const worker = testWorker(env, [noopHandler], { leaseMs: 10_000 });
    const internals = worker as unknown as { options: { workerId: string }; stoppedForShutdown: Lease[]; heartbeat(): Promise<void> };
    const { job } = await enqueueJob(env.pool, { kind: 'stopped-release-failed' });
    const [held] = await claimJobs(env.pool, { workerId: internals.options.workerId, limit: 1, leaseMs: 1_000, kinds: ['stopped-release-failed'] });
    expect(held?.id).toBe(job.id);
    const before = await requireJob(env.pool, job.id);
    internals.stoppedForShutdown.push({ jobId: job.id, attempt: held!.attempt, owner: internals.options.workerId });
    await internals.heartbeat();
    const after = await requireJob(env.pool, job.id);
    expect(after.leaseExpiresAt!.getTime()).toBeGreaterThan(before.leaseExpiresAt!.getTime() + 5_000);
    await worker.stop(); // closes its sessions, and releases the lease
    expect(await requireJob(env.pool, job.id)).toMatchObject({ state: 'queued', attempts: 0, leaseOwner: null });
  });

  it('gives jobs claimed but not started back at once when it stops, while a job drains', async () => {
    // Prefetched jobs wait in the buffer for a slot; at a stop nothing starts them, and another task can.
    const { handler: drainsLong, started: slowStarted, letGo: drained } = drainsUntilLetGo('drains-long-buffered');
    const worker = start(testWorker(env, [noopHandler, drainsLong], { pollIntervalMs: 50, concurrency: 1, shutdownGraceMs: 120_000 }));
    // Quick jobs first: the buffer holds nothing until jobs have shown how long they take.
    const warm = await Promise.all([1, 2, 3].map(() => enqueueJob(env.pool, { kind: 'noop' })));
    await waitFor(async () => (await Promise.all(warm.map(({ job }) => getJob(env.pool, job.id)))).every((job) => job?.state === 'succeeded'));
    const { job: slow } = await enqueueJob(env.pool, { kind: 'drains-long-buffered' });
    await slowStarted;
    // The one slot is taken: what the worker leases now waits in its buffer.
    const waiting = await Promise.all([1, 2, 3].map(() => enqueueJob(env.pool, { kind: 'noop' })));
    const leased = await waitFor(async () => {
      const jobs = await Promise.all(waiting.map(({ job }) => requireJob(env.pool, job.id)));
      const running = jobs.filter((job) => job.state === 'running').map((job) => job.id);
      return running.length > 0 ? running : undefined;
    });
    const stopping = worker.stop();
    try {
      await waitFor(async () => (await Promise.all(leased.map((id) => requireJob(env.pool, id)))).every((job) => job.state === 'queued' && job.attempts === 0));
      expect(await requireJob(env.pool, slow.id)).toMatchObject({ state: 'running', leaseOwner: expect.any(String) });
    } finally {
      drained(); // a failure above must not leave the stop (and afterEach) waiting for the drain
    }
    await stopping;
    expect(await requireJob(env.pool, slow.id)).toMatchObject({ state: 'succeeded' });
    // The wake-up tests below start from an empty queue.
    await env.pool.query('DELETE FROM jobs WHERE id = ANY($1)', [[slow.id, ...waiting.map(({ job }) => job.id)]]);
  });

  it('gives back at once what a claim took after the stop began, while a job drains', async () => {
    // The claim's cancel is best effort: one that commits first returns its runs to a stopping worker. Held for the
    // release at the end of the drain, they waited for a long upload (a loaded CI run saw jobs leased to a stopping
    // worker for as long as its drain). White box: the worker does not know its claim's connection, so it sends no
    // cancel, and the claim waits behind a lock until the stop has begun.
    const released: number[][] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) {
          const entry = JSON.parse(line) as { msg: string; jobs?: number[] };
          if (entry.msg === 'released jobs back to the queue' && entry.jobs) released.push(entry.jobs);
        }
        done();
      },
    });
    const log = createLogger({ level: 'info', format: 'json', destination });
    const { handler: drainsLong, started: slowStarted, letGo: drained } = drainsUntilLetGo('drains-long-late-claim');
    const worker = start(testWorker(env, [noopHandler, drainsLong], { pollIntervalMs: 50, concurrency: 1, shutdownGraceMs: 120_000 }, log));
    // Quick jobs first: the worker claims beyond its one slot only once jobs have shown how long they take.
    const warm = await Promise.all([1, 2, 3].map(() => enqueueJob(env.pool, { kind: 'noop' })));
    await waitFor(async () => (await Promise.all(warm.map(({ job }) => getJob(env.pool, job.id)))).every((job) => job?.state === 'succeeded'));
    const { job: slow } = await enqueueJob(env.pool, { kind: 'drains-long-late-claim' });
    await slowStarted;
    const locker = await env.pool.connect();
    let waiting: number[] = [];
    let stopping: Promise<void> | undefined;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
      // Committed with the lock's release: the claim waiting now sees them and takes them.
      waiting = (await Promise.all([1, 2, 3].map(() => enqueueJob(locker, { kind: 'noop' })))).map(({ job }) => job.id);
      await waitFor(claimWaitingOnLock);
      (worker as unknown as { claimClient: unknown }).claimClient = undefined;
      stopping = worker.stop();
      await locker.query('COMMIT');
    } catch (error) {
      await locker.query('ROLLBACK');
      drained();
      throw error;
    } finally {
      locker.release();
    }
    try {
      const took = await waitFor(async () => released.find((jobs) => jobs.some((id) => waiting.includes(id))));
      expect(took.length).toBeGreaterThan(0);
      expect(took.every((id) => waiting.includes(id))).toBe(true);
      for (const id of took) expect(await requireJob(env.pool, id)).toMatchObject({ state: 'queued', attempts: 0, leaseOwner: null });
      expect(await requireJob(env.pool, slow.id)).toMatchObject({ state: 'running', leaseOwner: expect.any(String) });
    } finally {
      drained();
    }
    await stopping;
    expect(await requireJob(env.pool, slow.id)).toMatchObject({ state: 'succeeded' });
    await env.pool.query('DELETE FROM jobs WHERE id = ANY($1)', [[slow.id, ...waiting]]);
  });

  // The bound: a claim that was not canceled would hold the stop for its own timeouts (30 s with this lease).
  it('cancels a claim waiting behind a lock when it stops: the stop does not wait for it, and it leases nothing', { timeout: 15_000 }, async () => {
    // A deploy's migration holding a lock on jobs, say: the claim would wait up to its timeout and then lease runs
    // that the stopping worker could only release again (or, once it has exited, leave to their leases' expiry).
    const worker = start(testWorker(env, [noopHandler], { pollIntervalMs: 50, leaseMs: 60_000, shutdownGraceMs: 120_000 }));
    const locker = await env.pool.connect();
    let jobId: number;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
      // Committed with the lock's release: the claim waiting now would see it and take it.
      jobId = (await enqueueJob(locker, { kind: 'noop' })).job.id;
      await waitFor(claimWaitingOnLock);
      // With two minutes of grace, the stop ends while the lock is held only because the claim was canceled.
      await worker.stop();
      expect(worker.loopMode).toBe('stopped');
    } finally {
      await locker.query('COMMIT');
      locker.release();
    }
    expect(await requireJob(env.pool, jobId)).toMatchObject({ state: 'queued', attempts: 0, leaseOwner: null });
    await env.pool.query('DELETE FROM jobs WHERE id = $1', [jobId]); // the wake-up tests below start from an empty queue
  });

  it('a claim slower than its bound is ended by the server, not dropped by the client', async () => {
    // Client bound = the lease (5 s here), the server's 2 s shorter: the server cancels the claim and rolls it back.
    // A client that gave up first would leave a claim that might still commit, leasing runs to nobody.
    const lines: Array<{ msg: string; err?: { code?: string; message?: string } }> = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as (typeof lines)[number]);
        done();
      },
    });
    const log = createLogger({ level: 'error', format: 'json', destination });
    const worker = start(testWorker(env, [noopHandler], { pollIntervalMs: 50, leaseMs: 5_000 }, log));
    const locker = await env.pool.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
      const failed = await waitFor(async () => lines.find((line) => line.msg === 'claim failed; retrying'));
      expect(failed.err).toMatchObject({ code: '57014', message: 'canceling statement due to statement timeout' });
    } finally {
      await locker.query('ROLLBACK');
      locker.release();
    }
    await worker.stop();
  });

  it('releases what a claim it could not cancel took after the grace, before the stop returns', async () => {
    // The cancel is best effort (a proxy may drop it, the server may be slow to act on it): white box, the worker
    // here does not know its claim's connection, so it sends none, and the claim outlives the grace.
    const worker = start(testWorker(env, [noopHandler], { pollIntervalMs: 50, leaseMs: 60_000, shutdownGraceMs: 0 }));
    const inside = worker as unknown as { claimClient: unknown; claimPool: { ending: boolean } };
    const locker = await env.pool.connect();
    let jobId: number;
    let stopping: Promise<void>;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
      jobId = (await enqueueJob(locker, { kind: 'noop' })).job.id;
      await waitFor(claimWaitingOnLock);
      inside.claimClient = undefined;
      stopping = worker.stop();
      // The first release is over (nothing was buffered yet): the stop now waits for the claim's connection.
      await waitFor(async () => inside.claimPool.ending);
    } finally {
      await locker.query('COMMIT');
      locker.release();
    }
    await stopping;
    expect(await requireJob(env.pool, jobId)).toMatchObject({ state: 'queued', attempts: 0, leaseOwner: null });
    await env.pool.query('DELETE FROM jobs WHERE id = $1', [jobId]);
  });
});

/** The test worker's claim session is waiting for a lock (testWorker claims on a connection of its own). */
/** A handler of `kind` deaf to its signal: it runs until `letGo()`; `started` once it runs (not only leased). */
function drainsUntilLetGo(kind: string): { handler: JobHandler<unknown>; started: Promise<void>; letGo: () => void } {
  let release: (() => void) | undefined;
  let runs!: () => void;
  const started = new Promise<void>((resolve) => (runs = resolve));
  const handler: JobHandler<unknown> = {
    kind,
    description: 'finishes only when the test lets it',
    parsePayload: () => ({}),
    run: () =>
      new Promise<void>((resolve) => {
        release = resolve;
        runs();
      }),
  };
  return { handler, started, letGo: () => release?.() };
}

async function releaseWaitingOnLock(): Promise<boolean> {
  const { rows } = await env.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
     WHERE datname = current_database() AND query LIKE '%WITH released AS%' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()`,
  );
  return rows[0]!.n > 0;
}

type ClaimAnswer = { rows: Array<{ id: number }> };

/**
 * White box: a worker's claim session, to hold a claim where a test needs it. `wrap` runs each statement of the
 * claim connection through `around` (given the statement to run); `cancelHeard` resolves once the worker has heard
 * the cancel of a job (its own listener was registered first, so it has acted on it by then).
 */
function claimSession(worker: Worker) {
  const internals = worker as unknown as { claimPool: { query: (...args: unknown[]) => Promise<ClaimAnswer> }; listener: WakeupListener };
  const query = internals.claimPool.query.bind(internals.claimPool);
  return {
    wrap(around: (run: () => Promise<ClaimAnswer>) => Promise<ClaimAnswer>): void {
      internals.claimPool.query = (...args: unknown[]) => around(() => query(...args));
    },
    cancelHeard: (jobId: number) => new Promise<void>((resolve) => internals.listener.on('cancel', (id) => id === jobId && resolve())),
  };
}

async function claimWaitingOnLock(): Promise<boolean> {
  const { rows } = await env.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
     WHERE datname = current_database() AND application_name = 'bulk-import-claim' AND wait_event_type = 'Lock'`,
  );
  return rows[0]!.n > 0;
}

describe('start and stop', () => {
  it('a worker stopped while it starts does not start its heartbeat afterwards', async () => {
    const worker = testWorker(env, [noopHandler]);
    const starting = worker.start(); // connects its listener first
    await worker.stop();
    await starting;
    expect(worker.loopMode).toBe('stopped');
    // The timer start() sets once its listener is up: the shutdown, already over, would never clear it (white box:
    // with no jobs its beats write nothing).
    expect((worker as unknown as { heartbeatTimer?: NodeJS.Timeout }).heartbeatTimer).toBeUndefined();
  });
});

describe('wake-ups', () => {
  it('a wake-up that arrives while a claim is running is not lost when that claim finds nothing', async () => {
    // The race a loaded CI run hit: the claim's snapshot predates a job; its NOTIFY arrives before the claim returns;
    // the empty claim must not then mark the backlog empty and sleep through the poll interval.
    // No noop job waiting: a first claim that took a job left over by a failed test above would not be empty, and the
    // worker, its backlog drained, would wait out the poll interval (as it should) with no wake-up to test.
    const { rows: left } = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM jobs WHERE kind = 'noop' AND state IN ('queued', 'running')");
    expect(left[0]!.n, 'jobs left over by an earlier test').toBe(0);
    const worker = testWorker(env, [noopHandler], { pollIntervalMs: 60_000 });
    const claiming = worker as unknown as { claim(free: number, prefetch: number): Promise<number> };
    const claim = claiming.claim.bind(worker);
    let jobId: number | undefined;
    claiming.claim = async (free, prefetch) => {
      const claimed = await claim(free, prefetch);
      if (jobId === undefined && claimed === 0) {
        // The job's NOTIFY reaches the worker before this claim returns (white box: the signal it counts, read before
        // the insert, whose NOTIFY may be handled before the insert's own answer).
        const signals = (worker as unknown as { newWorkSignals: number }).newWorkSignals;
        jobId = (await enqueueJob(env.pool, { kind: 'noop' })).job.id;
        await waitFor(async () => (worker as unknown as { newWorkSignals: number }).newWorkSignals > signals, 30_000, 5);
      }
      return claimed;
    };
    start(worker);
    // Well before the poll interval (60 s): the wake-up was kept.
    await waitFor(async () => jobId !== undefined && (await getJob(env.pool, jobId))?.state === 'succeeded', 30_000);
  });

  it('still runs jobs after the LISTEN connection is killed, and the listener reconnects', async () => {
    const worker = start(testWorker(env, [noopHandler], { pollIntervalMs: 300 }));
    await waitFor(async () => {
      const { rows } = await env.pool.query("SELECT 1 FROM pg_stat_activity WHERE application_name = 'bulk-import-listener' AND datname = current_database()");
      return rows.length === 1;
    });
    const killed = await env.pool.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bulk-import-listener' AND datname = current_database()",
    );
    expect(killed.rowCount).toBe(1);
    const { job } = await enqueueJob(env.pool, { kind: 'noop' });
    await waitFor(async () => (await getJob(env.pool, job.id))?.state === 'succeeded', 10_000);
    await waitFor(async () => {
      const { rows } = await env.pool.query("SELECT 1 FROM pg_stat_activity WHERE application_name = 'bulk-import-listener' AND datname = current_database()");
      return rows.length === 1;
    }, 10_000);
    expect(worker.runningCount).toBe(0);
  });

  it('picks up a new job through NOTIFY well before the poll interval', async () => {
    const worker = start(testWorker(env, [noopHandler], { pollIntervalMs: 60_000 }));
    // Its first claim (empty) done, it waits out the poll interval: only the NOTIFY can wake it now.
    await waitFor(async () => worker.loopMode === 'waiting', 30_000, 5);
    const enqueuedAt = Date.now();
    const { job } = await enqueueJob(env.pool, { kind: 'noop' });
    await waitFor(async () => (await getJob(env.pool, job.id))?.state === 'succeeded', 30_000, 10);
    expect(Date.now() - enqueuedAt).toBeLessThan(30_000);
  });
});

async function backendPid(client: { query: (text: string) => Promise<{ rows: Array<{ pid: number }> }> }): Promise<number> {
  return (await client.query('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
}
