// Outcome notifications through the real @aws-sdk/client-sns against a local endpoint that speaks enough of the SNS
// Query API for Publish and records every call: one message per run that ends failed, dead or partial (or every
// terminal state with NOTIFY_STATES=all), with its attributes and the admin link; an outbox row written in the same
// transaction as the transition, whatever session made it; and exactly one message when the worker that should
// publish it is killed with SIGKILL after the state committed and before SNS took the message.
import { EventEmitter } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../worker/config.js';
import type { Logger } from '../worker/logger.js';
import { NotificationPublisher, PARK_AFTER_TRIES, startNotifications } from '../worker/notifications/outbox-publisher.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { deleteSentNotifications, readNotifiedStates, setNotifiedStates } from '../worker/queue/notification-outbox.js';
import { useTestEnvironment } from './harness.js';
import { silentLog, waitFor } from './support/in-process-worker.js';
import { startOtlpReceiver } from './support/otlp-receiver.js';
import { recordingLogger } from './support/recording-logger.js';
import { startRecordingEndpoint, type RecordingEndpoint } from './support/recording-endpoint.js';
import { publishCalls, snsFailure, snsInvalidParameter, snsSuccess, type PublishSeen } from './support/sns-endpoint.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const TOPIC = 'arn:aws:sns:us-east-1:123456789012:bulk-import-outcomes';
const ADMIN = 'https://admin.example.test/ops';
let endpoint: RecordingEndpoint;
const spawned: WorkerProcess[] = [];

beforeAll(async () => {
  endpoint = await startRecordingEndpoint(snsSuccess);
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await killAll(spawned.splice(0));
  endpoint.requests.length = 0;
  endpoint.respondWith(snsSuccess);
  await env.pool.query('DELETE FROM jobs; DELETE FROM job_notifications');
});
afterAll(async () => {
  await killAll(spawned);
  await endpoint?.close();
});

const started = (line: { msg: string }) => line.msg === 'worker started';

function worker(extra: Record<string, string> = {}, entry: 'cli' | 'test' = 'test'): WorkerProcess {
  const process = spawnWorker(env, {
    entry,
    env: {
      NOTIFICATIONS_TOPIC_ARN: TOPIC,
      SNS_ENDPOINT: endpoint.url,
      ADMIN_BASE_URL: `${ADMIN}/`,
      NOTIFICATIONS_POLL_MS: '200',
      WORKER_POLL_INTERVAL_MS: '100',
      ...extra,
    },
  });
  spawned.push(process);
  return process;
}

const accepted = () => publishCalls(endpoint.requests).filter((call) => call.acceptedAs !== undefined);
const body = (call: PublishSeen) => JSON.parse(call.Message) as Record<string, unknown>;
const unsent = async () =>
  (await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM job_notifications WHERE sent_at IS NULL')).rows[0]!.n;

/** A row of a kind no worker runs, in `running`, for transitions made by the test's own session. */
async function plantRunning(tenant: string): Promise<number> {
  const { rows } = await env.pool.query<{ id: number }>(
    `INSERT INTO jobs (kind, tenant_id, state, lease_owner, lease_expires_at, attempts, started_at)
     VALUES ('planted-kind', $1, 'running', 'elsewhere', now() + interval '1 hour', 2, now()) RETURNING id`,
    [tenant],
  );
  return rows[0]!.id;
}

/** A planted run of `tenant` that ends dead in this test's session: its outbox row is written; returns its id. */
async function endRun(tenant: string): Promise<number> {
  const id = await plantRunning(tenant);
  await env.pool.query(`UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_expires_at = NULL, finished_at = now() WHERE id = $1`, [id]);
  return id;
}

/** The SDK's credentials, as a worker process has them. */
function stubCredentials(): void {
  vi.stubEnv('AWS_ACCESS_KEY_ID', env.processEnv.AWS_ACCESS_KEY_ID!);
  vi.stubEnv('AWS_SECRET_ACCESS_KEY', env.processEnv.AWS_SECRET_ACCESS_KEY!);
}

/** A publisher in this process whose rounds the test runs itself (publishDue), without start(). */
function ownPublisher(log: Logger = silentLog): NotificationPublisher {
  stubCredentials();
  const config = loadConfig({ NOTIFICATIONS_TOPIC_ARN: TOPIC, SNS_ENDPOINT: endpoint.url });
  return new NotificationPublisher({ pool: env.pool, config: { ...config.notifications, topicArn: TOPIC }, region: 'us-east-1', retentionDays: 30, log });
}

const outboxRow = async (jobId: number) =>
  (await env.pool.query('SELECT publish_attempts, last_error, sent_at, parked_at, next_attempt_at FROM job_notifications WHERE job_id = $1', [jobId])).rows[0];

describe('outcome notifications', () => {
  it('one message per run that ends failed, dead or partial — from the worker or any other session — none for the rest', async () => {
    const process = worker();
    await process.waitForLog(started);
    const { job: failing } = await enqueueJob(env.pool, { kind: 'fail-huge', tenantId: 'acme', payload: { chars: 20 } });
    const { job: fine } = await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', payload: {} });
    // Transitions made by this test's session (an operator, the rescuer, a backend): the trigger writes them too.
    const dead = await plantRunning('globex');
    const partial = await plantRunning('initech');
    const canceled = await plantRunning('initech');
    await env.pool.query(
      `UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_expires_at = NULL, finished_at = now(),
         last_error = '{"code":"LEASE_EXPIRED","message":"lease expired"}' WHERE id = $1`,
      [dead],
    );
    await env.pool.query(
      `UPDATE jobs SET state = CASE WHEN id = $1 THEN 'partial' ELSE 'canceled' END, lease_owner = NULL, lease_expires_at = NULL,
         finished_at = now() WHERE id = ANY($2)`,
      [partial, [partial, canceled]],
    );
    await waitFor(async () => (await env.pool.query(`SELECT state FROM jobs WHERE id = $1`, [fine.id])).rows[0]?.state === 'succeeded');
    await waitFor(async () => accepted().length >= 3 && (await unsent()) === 0);

    const byRun = new Map(accepted().map((call) => [body(call).runId as number, call]));
    expect([...byRun.keys()].sort((a, b) => a - b)).toEqual([failing.id, dead, partial].sort((a, b) => a - b));
    expect(accepted()).toHaveLength(3);

    const failed = byRun.get(failing.id)!;
    expect(failed.TopicArn).toBe(TOPIC);
    expect(body(failed)).toMatchObject({
      type: 'bulk-import.run-ended',
      runId: failing.id,
      kind: 'fail-huge',
      tenant: 'acme',
      state: 'failed',
      previousState: 'running',
      attempt: 1,
      errorCode: 'HUGE',
      link: `${ADMIN}/admin/runs/${failing.id}`,
    });
    expect(failed.MessageAttributes).toMatchObject({ tenant: 'acme', kind: 'fail-huge', state: 'failed' });
    expect(failed.Subject).toBe(`bulk-import run ${failing.id} failed: fail-huge, tenant acme`);
    // A standard topic: no FIFO fields (SNS refuses them there); the notification id is an attribute to compare.
    expect(failed.MessageGroupId).toBeUndefined();
    expect(failed.MessageAttributes.notification_id).toBe(String(body(failed).notificationId));

    expect(body(byRun.get(dead)!)).toMatchObject({ state: 'dead', tenant: 'globex', errorCode: 'LEASE_EXPIRED', attempt: 2 });
    expect(byRun.get(dead)!.MessageAttributes).toMatchObject({ tenant: 'globex', kind: 'planted-kind', state: 'dead' });
    expect(body(byRun.get(partial)!)).toMatchObject({ state: 'partial', errorCode: null });

    const { rows } = await env.pool.query('SELECT job_id, sent_at, message_id FROM job_notifications ORDER BY job_id');
    expect(rows).toHaveLength(3);
    for (const row of rows) expect(row.message_id).toBe(byRun.get(Number(row.job_id))!.acceptedAs);
  });

  it('NOTIFY_STATES=all notifies succeeded and canceled runs too', async () => {
    const process = worker({ NOTIFY_STATES: 'all' });
    await process.waitForLog(started);
    const { job } = await enqueueJob(env.pool, { kind: 'noop', payload: {} });
    const canceled = await plantRunning('acme');
    await env.pool.query(`UPDATE jobs SET state = 'canceled', lease_owner = NULL, lease_expires_at = NULL, finished_at = now() WHERE id = $1`, [canceled]);
    await waitFor(async () => accepted().length >= 2 && (await unsent()) === 0);
    const states = accepted().map((call) => [body(call).runId, body(call).state]);
    expect(states).toEqual(expect.arrayContaining([[job.id, 'succeeded'], [canceled, 'canceled']]));
    expect(accepted()).toHaveLength(2);
    // A run without a tenant has no tenant attribute (SNS refuses empty values).
    expect(accepted().find((call) => body(call).runId === job.id)!.MessageAttributes.tenant).toBeUndefined();
  });

  it('kill -9 after the transition committed and before SNS took the message: a restarted worker sends it exactly once', async () => {
    endpoint.respondWith(snsFailure);
    const first = worker({ WORKER_ID: 'doomed' });
    await first.waitForLog(started);
    const { job } = await enqueueJob(env.pool, { kind: 'fail-huge', tenantId: 'acme', payload: { chars: 20 } });
    // The state is committed, and the worker has tried to publish (SNS refused every try).
    await waitFor(async () => (await env.pool.query(`SELECT state FROM jobs WHERE id = $1`, [job.id])).rows[0]?.state === 'failed');
    await waitFor(async () => publishCalls(endpoint.requests).length >= 1);
    first.kill('SIGKILL');
    await first.exited;
    expect(await unsent()).toBe(1);
    expect(accepted()).toHaveLength(0);

    endpoint.respondWith(snsSuccess);
    const second = worker({ WORKER_ID: 'survivor' });
    await waitFor(async () => (await unsent()) === 0, 20_000);
    second.kill('SIGTERM');
    await second.exited;
    const sent = accepted();
    expect(sent).toHaveLength(1);
    expect(body(sent[0]!)).toMatchObject({ runId: job.id, state: 'failed', errorCode: 'HUGE' });
    const { rows } = await env.pool.query('SELECT publish_attempts, last_error, message_id FROM job_notifications');
    expect(rows).toHaveLength(1);
    // The doomed worker's tries count only if it recorded one before it died (killed inside its publishing
    // transaction, it recorded none: that transaction died with it and freed the row at once).
    expect(rows[0]!.publish_attempts).toBeGreaterThanOrEqual(1);
    expect(rows[0]!.last_error).toBeNull();
    expect(rows[0]!.message_id).toBe(sent[0]!.acceptedAs);
  });

  it('a Publish that does not answer is abandoned after its timeout and sent again; a stop does not wait for one', async () => {
    const config = loadConfig({ NOTIFICATIONS_TOPIC_ARN: TOPIC, SNS_ENDPOINT: endpoint.url, NOTIFICATIONS_POLL_MS: '100' });
    stubCredentials();
    const publisher = (timeoutMs: number) =>
      startNotifications({
        pool: env.pool, config: config.notifications, region: 'us-east-1', retentionDays: 30, log: silentLog,
        worker: new EventEmitter() as never, publishTimeoutMs: timeoutMs,
      });
    const dies = () => endRun('acme');
    let calls = 0;
    endpoint.respondWith((request) => (calls++ === 0 ? 'no-answer' : snsSuccess(request)));
    const patient = (await publisher(500))!;
    try {
      await dies();
      await waitFor(async () => ((await unsent()) === 0 ? true : undefined), 30_000);
    } finally {
      await patient.stop();
    }
    expect(publishCalls(endpoint.requests).length).toBeGreaterThanOrEqual(2);
    expect(accepted()).toHaveLength(1);

    endpoint.respondWith(() => 'no-answer');
    const waiting = (await publisher(3_600_000))!;
    const before = publishCalls(endpoint.requests).length;
    await dies();
    await waitFor(async () => publishCalls(endpoint.requests).length > before || undefined);
    await waiting.stop();
    expect(await unsent()).toBe(1);
  });

  it("a message SNS refuses holds up none behind it and is parked after a few tries; an outage's only after many", async () => {
    const recorded = recordingLogger();
    const publisher = ownPublisher(recorded.log);
    await setNotifiedStates(env.pool, ['dead', 'failed', 'partial']);
    // SNS refuses what a control character in the tenant attribute makes of a message, on every try.
    endpoint.respondWith((request) =>
      publishCalls([request])[0]?.MessageAttributes.tenant?.includes('\u0001') ? snsInvalidParameter(request) : snsSuccess(request),
    );
    // SNS takes this publisher's messages: the topic, the region and the role work.
    await endRun('acme');
    expect(await publisher.publishDue()).toBe(1);
    // Runs of a tenant id stored before enqueue refused control characters end first: their rows are due ahead of the
    // others, more of them than a round's batch. One call sends every other row all the same.
    const refused: number[] = [];
    for (let i = 0; i < 25; i += 1) refused.push(await endRun('bad\u0001tenant'));
    const fine = [await endRun('acme'), await endRun('globex')];
    expect(await publisher.publishDue()).toBe(2);
    expect(accepted().map((call) => body(call).runId)).toEqual(expect.arrayContaining(fine));
    expect(await outboxRow(refused[0]!)).toMatchObject({ last_error: expect.stringMatching(/^InvalidParameter/), sent_at: null, parked_at: null });

    // Its last try refused, a row is parked: tried no more, and logged.
    const [parked] = refused;
    await env.pool.query('UPDATE job_notifications SET publish_attempts = $2, next_attempt_at = now() WHERE job_id = $1', [parked, PARK_AFTER_TRIES.refused - 1]);
    await publisher.publishDue();
    expect(await outboxRow(parked!)).toMatchObject({ publish_attempts: PARK_AFTER_TRIES.refused, sent_at: null, parked_at: expect.any(Date), next_attempt_at: Infinity });
    expect(recorded.lines()).toContainEqual(expect.objectContaining({ msg: expect.stringMatching(/^outcome notification parked/), job_id: parked }));
    const triesOfParked = () => publishCalls(endpoint.requests).filter((call) => body(call).runId === parked).length;
    const tried = triesOfParked();
    await env.pool.query(`UPDATE job_notifications SET next_attempt_at = now() WHERE job_id <> $1 AND sent_at IS NULL`, [parked]);
    await publisher.publishDue();
    expect(triesOfParked()).toBe(tried);
    // An operator sends it again (docs/RUNBOOK.md). A try that fails otherwise (SNS away) leaves it an ordinary
    // failure again, retried later — no longer marked parked.
    endpoint.respondWith(snsFailure);
    await env.pool.query('UPDATE job_notifications SET next_attempt_at = now() WHERE job_id = $1', [parked]);
    await publisher.publishDue();
    expect(await outboxRow(parked!)).toMatchObject({ sent_at: null, parked_at: null, last_error: expect.stringMatching(/InternalError/) });
    expect((await outboxRow(parked!)).next_attempt_at).not.toBe(Infinity);
    // Another try, here taken.
    endpoint.respondWith(snsSuccess);
    await env.pool.query('UPDATE job_notifications SET next_attempt_at = now() WHERE job_id = $1', [parked]);
    await publisher.publishDue();
    expect(await outboxRow(parked!)).toMatchObject({ sent_at: expect.any(Date), parked_at: null, last_error: null });

    // An outage ends the round at its first failure, and parks a row only at its hundredth try.
    await env.pool.query('DELETE FROM job_notifications');
    endpoint.respondWith(snsFailure);
    const [young, old] = [await endRun('acme'), await endRun('acme')];
    await env.pool.query('UPDATE job_notifications SET publish_attempts = $2, next_attempt_at = now() - interval \'1 minute\' WHERE job_id = $1', [old, PARK_AFTER_TRIES.failed - 1]);
    expect(await publisher.publishDue()).toBe(0);
    expect(await outboxRow(old!)).toMatchObject({ publish_attempts: PARK_AFTER_TRIES.failed, parked_at: expect.any(Date), last_error: expect.stringMatching(/InternalError/) });
    expect(await outboxRow(young!)).toMatchObject({ publish_attempts: 0, parked_at: null });
    await publisher.stop();
  });

  it('a round deletes every notification sent before RETENTION_DAYS, a chunk per statement; others stay', async () => {
    const plantSent = (count: number, daysAgo: number) =>
      env.pool.query(
        `INSERT INTO job_notifications (job_id, kind, from_state, state, attempt, publish_attempts, sent_at)
         SELECT g, 'noop', 'running', 'dead', 1, 1, now() - $2 * interval '1 day' FROM generate_series(1, $1) g`,
        [count, daysAgo],
      );
    const count = async (where: string) => (await env.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM job_notifications WHERE ${where}`)).rows[0]!.n;
    // ~10,000 runs a minute with NOTIFY_STATES=all: far more than one statement's chunk went out an hour before retention.
    await plantSent(25_000, 31);
    await plantSent(3, 29);
    await env.pool.query(`INSERT INTO job_notifications (job_id, kind, from_state, state, attempt, created_at, next_attempt_at)
                          VALUES (1, 'noop', 'running', 'dead', 1, now() - interval '40 days', 'infinity')`);
    const publisher = ownPublisher();
    await publisher.publishDue();
    await publisher.stop();
    expect({ old: await count(`sent_at < now() - interval '30 days'`), recent: await count('sent_at IS NOT NULL'), unsent: await count('sent_at IS NULL') })
      .toEqual({ old: 0, recent: 3, unsent: 1 });
    // One call is bounded in time: past its budget it stops after the statement under way and says it is not done.
    await plantSent(250, 31);
    expect(await deleteSentNotifications(env.pool, 30, { chunk: 100, budgetMs: 0 })).toEqual({ deleted: 100, done: false });
    expect(await deleteSentNotifications(env.pool, 30, { chunk: 100 })).toEqual({ deleted: 150, done: true });
  });

  it('a worker without a topic leaves the settings alone and says so; NOTIFY_STATES=none turns notifications off', async () => {
    const recorded = recordingLogger();
    const start = (vars: Record<string, string>) =>
      startNotifications({ pool: env.pool, config: loadConfig(vars).notifications, region: 'us-east-1', retentionDays: 30, log: recorded.log, worker: undefined as never });
    const outbox = async () => (await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM job_notifications')).rows[0]!.n;
    // As the workers with a topic wrote them.
    await setNotifiedStates(env.pool, ['dead', 'failed', 'partial']);
    // An operator's ad-hoc worker, without the fleet's topic: notifications stay on for the fleet.
    expect(await start({})).toBeUndefined();
    expect(await readNotifiedStates(env.pool)).toEqual(['dead', 'failed', 'partial']);
    expect(recorded.lines()).toContainEqual(
      expect.objectContaining({ msg: expect.stringMatching(/^this worker has no NOTIFICATIONS_TOPIC_ARN/), notified_states: ['dead', 'failed', 'partial'] }),
    );
    await endRun('acme');
    expect(await outbox()).toBe(1);
    // Off for the database, the way a deployment without a topic asks for it: no row is written any more.
    expect(await start({ NOTIFY_STATES: 'none' })).toBeUndefined();
    expect(await readNotifiedStates(env.pool)).toEqual([]);
    expect(recorded.lines()).toContainEqual(expect.objectContaining({ msg: expect.stringMatching(/^NOTIFY_STATES=none: turning outcome notifications off/) }));
    await endRun('acme');
    expect(await outbox()).toBe(1);

    expect(loadConfig({ NOTIFY_STATES: 'all' }).notifications.states).toEqual(['succeeded', 'partial', 'failed', 'dead', 'canceled']);
    expect(loadConfig({}).notifications.states).toEqual(['dead', 'failed', 'partial']);
    expect(() => loadConfig({ NOTIFY_STATES: 'failed,running' })).toThrow(/NOTIFY_STATES="failed,running" is invalid/);
    expect(() => loadConfig({ NOTIFICATIONS_TOPIC_ARN: 'bulk-import' })).toThrow(/NOTIFICATIONS_TOPIC_ARN/);
  });
});

describe('outcome notifications and traces', () => {
  it("a publisher round after a traced run is not part of that run's trace, nor is what it sends", async () => {
    const receiver = await startOtlpReceiver();
    try {
      const process = worker({
        OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_BSP_SCHEDULE_DELAY: '100',
        OTEL_SERVICE_NAME: 'bulk-import-worker',
      }, 'cli'); // the CLI entry starts the tracing SDK (bin/bulk-import.js)
      await process.waitForLog(started);
      // A run in a trace of its own (its submitter's): it fails, and its end wakes the worker's publisher.
      const runTrace = '5a1e0f3b7c2d4e6f8091a2b3c4d5e6f7';
      const { job } = await enqueueJob(env.pool, {
        kind: 'noop', tenantId: 'acme', payload: { fail: 'permanent' }, traceparent: `00-${runTrace}-1f2e3d4c5b6a7980-01`,
      });
      await waitFor(async () => accepted().some((call) => body(call).runId === job.id));
      // Another tenant's run ends afterwards, in another session: the publisher sends it in a later round.
      const other = await endRun('globex');
      const sent = await waitFor(async () => accepted().find((call) => body(call).runId === other));
      // The trace context the SDK's instrumentation injected into the message, and the run's own spans, exported.
      const injected = /^00-([0-9a-f]{32})-/.exec(sent.MessageAttributes.traceparent ?? '')?.[1];
      expect(injected).toBeDefined();
      await waitFor(async () => receiver.spans().some((span) => span.traceId === injected) && receiver.spans().some((span) => span.name === 'run noop'));
      expect(injected).not.toBe(runTrace);
      const runSpans = receiver.spans().filter((span) => span.traceId === runTrace);
      expect(runSpans.find((span) => span.name === 'run noop')?.attributes).toMatchObject({ 'job.id': job.id, 'job.outcome': 'failed' });
      // Nothing of the publisher joined the run's trace: not its statements, not a Publish.
      const publisherSpans = runSpans.filter(
        (span) => span.attributes['rpc.service'] === 'SNS' || JSON.stringify(span.attributes).includes('job_notifications'),
      );
      expect(publisherSpans.map((span) => span.name)).toEqual([]);
    } finally {
      await killAll(spawned.splice(0));
      await receiver.close();
    }
  });
});
