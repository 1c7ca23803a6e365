// ECS task scale-in protection against a local HTTP stand-in for the ECS agent: on while the worker holds leases,
// renewed before it expires, off once idle; an agent that fails never stops the worker.
import { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { context, ROOT_CONTEXT, trace, type Context, type ContextManager } from '@opentelemetry/api';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JobHandler } from '../worker/handlers/types.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { requireJob } from '../worker/queue/operator.js';
import { TaskProtection } from '../worker/ops/task-protection.js';
import { useTestEnvironment } from './harness.js';
import { silentLog, testWorker, waitFor } from './support/in-process-worker.js';
import { recordingLogger } from './support/recording-logger.js';
import {
  ecsAgentFailure,
  ecsAgentSuccess,
  protectionRequests,
  startRecordingEndpoint,
  type RecordingEndpoint,
} from './support/recording-endpoint.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
let agent: RecordingEndpoint;
const spawned: WorkerProcess[] = [];

const sleeper: JobHandler<{ sleepMs: number }> = {
  kind: 'sleeper',
  description: 'test: sleeps',
  parsePayload: (raw) => ({ sleepMs: Number(raw.sleepMs ?? 0) }),
  async run({ payload, signal }) {
    await sleep(payload.sleepMs, undefined, { signal });
  },
};

/** Contexts that follow async work, as the tracing SDK's (AsyncLocalStorage): without one the API has only the root. */
class AsyncContextManager implements ContextManager {
  private readonly storage = new AsyncLocalStorage<Context>();
  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }
  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(active: Context, fn: F, thisArg?: ThisParameterType<F>, ...args: A): ReturnType<F> {
    return this.storage.run(active, () => fn.apply(thisArg, args));
  }
  bind<T>(active: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const fn = target as (...args: unknown[]) => unknown;
    return ((...args: unknown[]) => this.with(active, () => fn(...args))) as T;
  }
  enable(): this {
    return this;
  }
  disable(): this {
    this.storage.disable();
    return this;
  }
}

beforeAll(async () => {
  agent = await startRecordingEndpoint(ecsAgentSuccess);
});
afterEach(async () => {
  await killAll(spawned.splice(0));
  agent.requests.length = 0;
  agent.respondWith(ecsAgentSuccess);
  await env.pool.query('DELETE FROM jobs');
});
afterAll(async () => {
  await killAll(spawned);
  await agent?.close();
});

describe('task scale-in protection', () => {
  it('protects while a job runs, renews before expiry, releases once idle', async () => {
    const worker = testWorker(env, [sleeper]);
    const protection = new TaskProtection(
      { agentUri: agent.url, expiresInMinutes: 2, renewAfterMs: 400, releaseAfterIdleMs: 300, retryDelayMs: 100 },
      silentLog,
    ).attach(worker);
    // When the worker's last job ended (before it counts as idle): the release must wait out the idle period after it.
    let lastFinishedAt = 0;
    worker.on('jobFinished', () => (lastFinishedAt = Date.now()));
    await worker.start();
    expect(protectionRequests(agent.requests)).toEqual([]); // idle at start: nothing to ask

    const { job } = await enqueueJob(env.pool, { kind: 'sleeper', payload: { sleepMs: 1_500 } });
    await waitFor(async () => protection.protected === true);
    const first = agent.requests[0]!;
    expect(first.method).toBe('PUT');
    expect(first.path).toBe('/task-protection/v1/state');
    expect(JSON.parse(first.body)).toEqual({ ProtectionEnabled: true, ExpiresInMinutes: 2 });

    await waitFor(async () => (await requireJob(env.pool, job.id)).state === 'succeeded');
    await waitFor(async () => protection.protected === false, 30_000);
    const releasedAt = agent.requests.at(-1)!.at;
    expect(lastFinishedAt).toBeGreaterThan(0);
    expect(releasedAt - lastFinishedAt).toBeGreaterThanOrEqual(299); // waited out the idle period (300 ms) first

    const seen = protectionRequests(agent.requests);
    // On, renewed at least twice during the 1.5 s job (every 400 ms), then off.
    expect(seen.at(-1)).toBe(false);
    expect(seen.slice(0, -1).every(Boolean)).toBe(true);
    expect(seen.length - 1).toBeGreaterThanOrEqual(3);
    expect(JSON.parse(agent.requests.at(-1)!.body)).toEqual({ ProtectionEnabled: false });
    await worker.stop();
    await protection.stop();
    expect(protectionRequests(agent.requests)).toHaveLength(seen.length); // already off: no call on stop
  });

  it('an agent that fails (or is unreachable) never stops the worker; protection is retried until it works', async () => {
    agent.respondWith(ecsAgentFailure);
    const worker = testWorker(env, [sleeper]);
    const protection = new TaskProtection(
      { agentUri: agent.url, renewAfterMs: 60_000, releaseAfterIdleMs: 60_000, retryDelayMs: 100, requestTimeoutMs: 1_000 },
      silentLog,
    ).attach(worker);
    await worker.start();
    const { job } = await enqueueJob(env.pool, { kind: 'sleeper', payload: { sleepMs: 1_000 } });
    await waitFor(async () => agent.requests.length >= 2); // refused, retried
    expect(protection.protected).toBeUndefined();
    agent.respondWith(ecsAgentSuccess);
    await waitFor(async () => protection.protected === true);
    await waitFor(async () => (await requireJob(env.pool, job.id)).state === 'succeeded');
    await worker.stop();

    // Unreachable agent: stop() still resolves promptly.
    await agent.close();
    const started = Date.now();
    await protection.stop();
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(protection.protected).toBeUndefined();
    agent = await startRecordingEndpoint(ecsAgentSuccess);
  });

  it("a worker that says it is busy from a run's trace context does not carry that trace into the protection's retries", async () => {
    context.setGlobalContextManager(new AsyncContextManager());
    try {
      agent.respondWith(ecsAgentFailure);
      const recorded = recordingLogger();
      const worker = new EventEmitter();
      const protection = new TaskProtection({ agentUri: agent.url, retryDelayMs: 50 }, recorded.log).attach(worker as never);
      const runTrace = trace.setSpan(ROOT_CONTEXT, trace.wrapSpanContext({ traceId: '5a1e0f3b7c2d4e6f8091a2b3c4d5e6f7', spanId: '1f2e3d4c5b6a7980', traceFlags: 1 }));
      context.with(runTrace, () => worker.emit('busy', true));
      await waitFor(async () => protectionRequests(agent.requests).length >= 3);
      agent.respondWith(ecsAgentSuccess);
      await waitFor(async () => recorded.lines().some((line) => line.msg === 'task scale-in protection on'));
      await protection.stop();
      expect(recorded.lines().filter((line) => line.trace_id !== undefined)).toEqual([]);
      // A line written inside that context does name the trace: the check above could fail.
      context.with(runTrace, () => recorded.log.info('inside the run'));
      expect(recorded.lines().at(-1)).toMatchObject({ msg: 'inside the run', trace_id: '5a1e0f3b7c2d4e6f8091a2b3c4d5e6f7' });
    } finally {
      context.disable();
    }
  });

  it('a worker process with ECS_AGENT_URI protects its task while it runs a job and releases it when it stops', async () => {
    const worker = spawnWorker(env, { env: { ECS_AGENT_URI: agent.url, WORKER_ID: 'protected' } });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
    const { job } = await enqueueJob(env.pool, { kind: 'noop', payload: { sleepMs: 1_000 } });
    await worker.waitForLog((line) => line.msg === 'task scale-in protection on');
    expect(protectionRequests(agent.requests)).toEqual([true]);
    await waitFor(async () => (await requireJob(env.pool, job.id)).state === 'succeeded');
    worker.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    expect(protectionRequests(agent.requests)).toEqual([true, false]);
  });

  it('a stop request (SIGTERM) while busy: the worker drains, gives the job back, then releases its protection and exits', async () => {
    // What a StopTask (campaign.sh stop --hard), a Spot interruption or a scale-in of an unprotected task sends.
    const worker = spawnWorker(env, { env: { ECS_AGENT_URI: agent.url, WORKER_ID: 'stopping', WORKER_SHUTDOWN_GRACE_MS: '5000' } });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
    const { job } = await enqueueJob(env.pool, { kind: 'noop', payload: { sleepMs: 600_000 } });
    await worker.waitForLog((line) => line.msg === 'task scale-in protection on');
    await waitFor(async () => (await requireJob(env.pool, job.id)).state === 'running');
    worker.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    // Protection is held through the drain and released only after the job went back to the queue.
    const order = worker.logs.map((line) => line.msg);
    expect(order).toContain('released jobs back to the queue');
    expect(order.indexOf('task scale-in protection off')).toBeGreaterThan(order.indexOf('released jobs back to the queue'));
    expect(order.indexOf('worker stopped')).toBeGreaterThan(order.indexOf('task scale-in protection off'));
    expect(protectionRequests(agent.requests)).toEqual([true, false]);
    const after = await requireJob(env.pool, job.id);
    expect(after.state).toBe('queued');
    expect(after.leaseOwner).toBeNull();
  });
});
