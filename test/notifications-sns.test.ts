// Outcome notifications through the real @aws-sdk/client-sns against a local endpoint that speaks enough of the SNS
// Query API for Publish and records every call: one message per run that ends failed, dead or partial (or every
// terminal state with NOTIFY_STATES=all), with its attributes and the admin link; an outbox row written in the same
// transaction as the transition, whatever session made it; and exactly one message when the worker that should
// publish it is killed with SIGKILL after the state committed and before SNS took the message.
import { EventEmitter } from 'node:events';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../worker/config.js';
import { startNotifications } from '../worker/notifications/outbox-publisher.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { useTestEnvironment } from './harness.js';
import { silentLog, waitFor } from './support/in-process-worker.js';
import { startRecordingEndpoint, type RecordingEndpoint } from './support/recording-endpoint.js';
import { publishCalls, snsFailure, snsSuccess, type PublishSeen } from './support/sns-endpoint.js';
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

function worker(extra: Record<string, string> = {}): WorkerProcess {
  const process = spawnWorker(env, {
    entry: 'test',
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
    // The SDK's credentials, as a worker process has them.
    vi.stubEnv('AWS_ACCESS_KEY_ID', env.processEnv.AWS_ACCESS_KEY_ID!);
    vi.stubEnv('AWS_SECRET_ACCESS_KEY', env.processEnv.AWS_SECRET_ACCESS_KEY!);
    const publisher = (timeoutMs: number) =>
      startNotifications({
        pool: env.pool, config: config.notifications, region: 'us-east-1', retentionDays: 30, log: silentLog,
        worker: new EventEmitter() as never, publishTimeoutMs: timeoutMs,
      });
    const dies = async () => {
      const id = await plantRunning('acme');
      await env.pool.query(`UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_expires_at = NULL, finished_at = now() WHERE id = $1`, [id]);
    };
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

  it('without a topic no outbox row is written; NOTIFY_STATES is checked', async () => {
    const config = loadConfig({ NOTIFY_STATES: 'dead,failed,partial' });
    expect(await startNotifications({ pool: env.pool, config: config.notifications, region: 'us-east-1', retentionDays: 30, log: silentLog, worker: undefined as never })).toBeUndefined();
    const id = await plantRunning('acme');
    await env.pool.query(`UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_expires_at = NULL, finished_at = now() WHERE id = $1`, [id]);
    expect((await env.pool.query('SELECT count(*)::int AS n FROM job_notifications')).rows[0]!.n).toBe(0);

    expect(loadConfig({ NOTIFY_STATES: 'all' }).notifications.states).toEqual(['succeeded', 'partial', 'failed', 'dead', 'canceled']);
    expect(loadConfig({}).notifications.states).toEqual(['dead', 'failed', 'partial']);
    expect(() => loadConfig({ NOTIFY_STATES: 'failed,running' })).toThrow(/NOTIFY_STATES="failed,running" is invalid/);
    expect(() => loadConfig({ NOTIFICATIONS_TOPIC_ARN: 'bulk-import' })).toThrow(/NOTIFICATIONS_TOPIC_ARN/);
  });
});
