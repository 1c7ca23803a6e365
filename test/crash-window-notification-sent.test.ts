// Crash window of the notifications outbox: SNS accepted a message and the publisher's worker process is killed with
// SIGKILL before the transaction that marks it sent commits. The documented contract is at least once: a restarted
// worker publishes the message again with the SAME notification id (subscribers drop the repeat by it), then marks
// it sent; no message is lost. (Killed before SNS took the message: notifications-sns.test.ts, exactly once.)
// The window is hit with a gate (test/support/statement-gate.ts) on the statement that marks the row sent.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { requireJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { startRecordingEndpoint, type RecordingEndpoint } from './support/recording-endpoint.js';
import { publishCalls, snsSuccess, type PublishSeen } from './support/sns-endpoint.js';
import { gateUpdates, type StatementGate } from './support/statement-gate.js';
import { killAll, killedSessionsEnded, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const TOPIC = 'arn:aws:sns:us-east-1:123456789012:bulk-import-outcomes';
let endpoint: RecordingEndpoint;
const spawned: WorkerProcess[] = [];
const gates: StatementGate[] = [];

beforeAll(async () => {
  endpoint = await startRecordingEndpoint(snsSuccess);
});
afterEach(async () => {
  await killAll(spawned.splice(0));
  for (const gate of gates.splice(0)) await gate.open();
});
afterAll(async () => {
  await killAll(spawned);
  await endpoint?.close();
});

function worker(id: string): WorkerProcess {
  const process = spawnWorker(env, {
    env: { WORKER_ID: id, NOTIFICATIONS_TOPIC_ARN: TOPIC, SNS_ENDPOINT: endpoint.url, NOTIFICATIONS_POLL_MS: '200', WORKER_POLL_INTERVAL_MS: '100' },
  });
  spawned.push(process);
  return process;
}

const accepted = () => publishCalls(endpoint.requests).filter((call) => call.acceptedAs !== undefined);
const body = (call: PublishSeen) => JSON.parse(call.Message) as Record<string, unknown>;
const outboxRows = async () =>
  (await env.pool.query('SELECT id, job_id, state, sent_at, message_id, publish_attempts, last_error, parked_at FROM job_notifications ORDER BY id')).rows;

describe('crash window: SNS accepted the message, the sent mark not committed', () => {
  it('SIGKILL after SNS took the message and before the sent mark: a restarted worker sends it again with the same notification id, then marks it sent', async () => {
    // The statement that marks a row sent waits at the gate.
    const gate = await gateUpdates(env, { table: 'job_notifications', when: 'OLD.sent_at IS NULL AND NEW.sent_at IS NOT NULL' });
    gates.push(gate);
    const doomed = worker('doomed');
    await doomed.waitForLog((line) => line.msg === 'worker started');
    // A run that ends failed: its outbox row is written with the transition, and the worker's publisher sends it.
    const { job } = await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme', payload: { fail: 'permanent' } });
    await gate.blocked();
    // In the window: SNS has the message, the outbox row is not marked sent.
    expect(accepted()).toHaveLength(1);
    const [row] = await outboxRows();
    expect(row).toMatchObject({ job_id: job.id, state: 'failed', sent_at: null, message_id: null });
    const notificationId = Number(row.id);
    expect(body(accepted()[0]!)).toMatchObject({ notificationId, runId: job.id, state: 'failed' });

    doomed.kill('SIGKILL');
    expect((await doomed.exited).signal).toBe('SIGKILL');
    await gate.open();
    await killedSessionsEnded(env);
    // The sent mark died with the session: the row is unsent (and free), its try not counted.
    expect(await outboxRows()).toEqual([expect.objectContaining({ id: row.id, sent_at: null, message_id: null, publish_attempts: 0 })]);
    expect(accepted()).toHaveLength(1);

    const survivor = worker('survivor');
    const sentRow = await waitFor(async () => (await outboxRows()).find((r) => r.sent_at !== null), 30_000, 20);
    survivor.kill('SIGTERM');
    await survivor.exited;

    // Published again, the same notification: same id in the body and in the attribute subscribers filter on.
    const sent = accepted();
    expect(sent).toHaveLength(2);
    for (const call of sent) {
      expect(body(call)).toMatchObject({ type: 'bulk-import.run-ended', notificationId, runId: job.id, state: 'failed', errorCode: 'NOOP_PERMANENT' });
      expect(call.MessageAttributes.notification_id).toBe(String(notificationId));
    }
    expect(sent[1]!.Message).toBe(sent[0]!.Message);
    // Marked sent once, with the message id of the Publish that the mark followed.
    expect(await outboxRows()).toHaveLength(1);
    expect(sentRow).toMatchObject({ id: row.id, message_id: sent[1]!.acceptedAs, publish_attempts: 1, last_error: null, parked_at: null });
    expect((await requireJob(env.pool, job.id)).state).toBe('failed');
  });
});
