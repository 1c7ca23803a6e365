// Log lines of a real worker process (`bulk-import worker`, JSON): every line about a job carries job_id, kind,
// attempt and tenant_id, and failures carry their structured context.
import { afterAll, describe, expect, it } from 'vitest';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { cancelJob, requireJob } from '../worker/queue/operator.js';
import { STARTED_LINE_AFTER_MS } from '../worker/runner/run-log.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { killAll, spawnWorker, type LogLine, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
afterAll(async () => killAll(spawned));

describe('job log lines', () => {
  it('carry job_id, kind, attempt and tenant_id on every line; failures carry code, class and context', async () => {
    const worker = spawnWorker(env, {
      env: { LOG_LEVEL: 'debug', RETRY_BACKOFF_BASE_MS: '10', RETRY_BACKOFF_MAX_MS: '20', WORKER_POLL_INTERVAL_MS: '100' },
    });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');

    const ok = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', payload: { sleepMs: 1 } })).job;
    const permanent = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', payload: { fail: 'permanent', sleepMs: 2 } })).job;
    const transient = (await enqueueJob(env.pool, { kind: 'noop', tenantId: null, payload: { fail: 'transient', sleepMs: 3 }, maxAttempts: 2 })).job;
    const canceled = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'beta', payload: { sleepMs: 60_000 } })).job;
    // Its handler running, not only its row: a cancel that reaches a run claimed but not started yet gives it back
    // canceled without an attempt (no `job canceled` line), and the row says `running` from the claim's commit on.
    await worker.waitForLog((line) => line.job_id === canceled.id && line.msg === 'job started');
    await cancelJob(env.pool, canceled.id);
    const ids = [ok.id, permanent.id, transient.id, canceled.id];
    await waitFor(async () => {
      const states = await Promise.all(ids.map(async (id) => (await requireJob(env.pool, id)).state));
      return states.join() === 'succeeded,failed,dead,canceled';
    });
    await worker.waitForLog((line) => line.job_id === canceled.id && line.msg === 'job canceled');
    worker.kill('SIGTERM');
    await worker.exited;

    const aboutJobs = worker.logs.filter((line) => line.job_id !== undefined);
    const tenants: Record<number, string | null> = { [ok.id]: 'acme', [permanent.id]: 'acme', [transient.id]: null, [canceled.id]: 'beta' };
    for (const line of aboutJobs) {
      expect(line, line.msg).toMatchObject({ kind: 'noop', tenant_id: tenants[line.job_id as number] });
      expect(line.attempt, line.msg).toEqual(expect.any(Number));
    }
    const messages = (id: number) => aboutJobs.filter((line) => line.job_id === id).map((line) => `${line.attempt} ${line.msg}`);
    expect(messages(ok.id)).toEqual(['1 job started', '1 noop done', '1 job succeeded', '1 job finished']);
    expect(messages(transient.id)).toEqual([
      '1 job started', '1 job failed; retry scheduled', '1 job finished', '2 job started', '2 job dead', '2 job finished',
    ]);
    expect(messages(canceled.id)).toContain('1 job canceled');

    // `job finished` at info, every attempt: the outcome, the duration and the run's counts. At debug every attempt
    // writes `job started` at once, and the outcome line (`job succeeded` …) repeats `job finished` at debug.
    const lineOf = (id: number, msg: string, attempt = 1) =>
      aboutJobs.find((line) => line.job_id === id && line.msg === msg && line.attempt === attempt) as LogLine;
    expect(lineOf(ok.id, 'job started')).toMatchObject({ level: 20, tenant_id: 'acme', max_attempts: 5, resumed: false });
    expect(lineOf(ok.id, 'job succeeded')).toMatchObject({ level: 20 });
    expect(lineOf(ok.id, 'job finished')).toMatchObject({ level: 30, outcome: 'succeeded', duration_ms: expect.any(Number), counts: {} });
    expect(lineOf(transient.id, 'job finished', 1)).toMatchObject({ level: 30, outcome: 'queued' });
    expect(lineOf(transient.id, 'job finished', 2)).toMatchObject({ level: 30, outcome: 'dead' });
    expect(lineOf(canceled.id, 'job finished')).toMatchObject({ level: 30, outcome: 'canceled', tenant_id: 'beta' });
    // Tracing is off in this process: no trace fields.
    expect(aboutJobs.some((line) => 'trace_id' in line)).toBe(false);

    const failure = aboutJobs.find((line) => line.job_id === permanent.id && line.msg === 'job failed') as LogLine;
    expect(failure).toMatchObject({ error_code: 'NOOP_PERMANENT', error_class: 'permanent', state: 'failed', context: { sleepMs: 2 } });
    expect((failure.err as { message: string }).message).toBe('noop asked to fail (permanent)');
    const retry = aboutJobs.find((line) => line.job_id === transient.id && line.msg === 'job failed; retry scheduled') as LogLine;
    expect(retry).toMatchObject({ error_code: 'NOOP_TRANSIENT', error_class: 'transient', state: 'queued', context: { sleepMs: 3 } });
    expect(retry.retry_in_ms).toEqual(expect.any(Number));
  });

  it('at info: one line per short job, and `job started` too for a run still going after a second', async () => {
    const worker = spawnWorker(env, { env: { LOG_LEVEL: 'info', WORKER_POLL_INTERVAL_MS: '100' } });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
    const short = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', payload: {} })).job;
    const long = (await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', payload: { sleepMs: 60_000 } })).job;
    // Written by the running attempt once it has run STARTED_LINE_AFTER_MS: the log shows a long run while it runs.
    const started = await worker.waitForLog((line) => line.job_id === long.id && line.msg === 'job started');
    expect(started).toMatchObject({ level: 30, kind: 'noop', attempt: 1, max_attempts: 5, resumed: false });
    // Less 1 ms: libuv schedules timers on its millisecond loop clock, so Date.now() can show 999 ms after a 1 s timer.
    expect((started.time as number) - Date.parse(started.started_at as string)).toBeGreaterThanOrEqual(STARTED_LINE_AFTER_MS - 1);
    await cancelJob(env.pool, long.id);
    await worker.waitForLog((line) => line.job_id === long.id && line.msg === 'job finished');
    await waitFor(async () => (await requireJob(env.pool, short.id)).state === 'succeeded');
    worker.kill('SIGTERM');
    await worker.exited;

    const messages = (id: number) => worker.logs.filter((line) => line.job_id === id).map((line) => line.msg);
    expect(messages(short.id)).toEqual(['job finished']);
    // (`stopping job`: the cancel reached the attempt.)
    expect(messages(long.id)).toEqual(['job started', 'stopping job', 'job finished']);
  });
});
