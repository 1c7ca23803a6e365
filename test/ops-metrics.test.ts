// CloudWatch metrics through the real @aws-sdk/client-cloudwatch against a local endpoint that records what it
// receives: per-job metrics from a worker, and queue gauges published once per interval by one elected worker of
// two real worker processes, with leadership moving when the leader is killed.
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import type { CloudWatchClient } from '@aws-sdk/client-cloudwatch';
import { loadConfig } from '../worker/config.js';
import { bytesMetric, countMetric } from '../worker/handlers/metrics.js';
import type { JobHandler } from '../worker/handlers/types.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { PermanentJobError } from '../worker/queue/errors.js';
import { createCloudWatchClient, jobMetricPoints, MetricsPublisher, publishJobMetrics } from '../worker/ops/metrics.js';
import { useTestEnvironment } from './harness.js';
import { silentLog, testWorker, waitFor } from './support/in-process-worker.js';
import { recordingLogger } from './support/recording-logger.js';
import {
  cloudWatchFailure,
  cloudWatchSuccess,
  dimensionsOf,
  putMetricDataCalls,
  startRecordingEndpoint,
  type MetricDatumSeen,
  type PutMetricDataSeen,
  type RecordingEndpoint,
} from './support/recording-endpoint.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const NAMESPACE = 'Test/BulkImportOps';
let endpoint: RecordingEndpoint;
const spawned: WorkerProcess[] = [];

beforeAll(async () => {
  endpoint = await startRecordingEndpoint(cloudWatchSuccess);
});
afterEach(async () => {
  await killAll(spawned.splice(0));
  endpoint.requests.length = 0;
  endpoint.respondWith(cloudWatchSuccess);
  await env.pool.query('DELETE FROM jobs');
});
afterAll(async () => {
  await killAll(spawned);
  await endpoint?.close();
});

function cloudWatchClient(): CloudWatchClient {
  const config = loadConfig({ METRICS_NAMESPACE: NAMESPACE, CLOUDWATCH_ENDPOINT: endpoint.url });
  return createCloudWatchClient(config.metrics, 'us-east-1', inject('s3Credentials'))!;
}

function find(call: PutMetricDataSeen, name: string, dimensions: Record<string, string>): MetricDatumSeen | undefined {
  return call.MetricData.find(
    (datum) => datum.MetricName === name && JSON.stringify(dimensionsOf(datum)) === JSON.stringify(dimensions),
  );
}

const importLike: JobHandler<{ files: number; fail: boolean }> = {
  kind: 'import-like',
  description: 'test: reports figures like an import',
  parsePayload: (raw) => ({ files: Number(raw.files ?? 0), fail: raw.fail === true }),
  async run({ payload }) {
    if (payload.fail) throw new PermanentJobError('bad input', 'BAD_INPUT', { file: 'x.pdf' });
    return { result: { files: payload.files }, metrics: { Files: countMetric(payload.files), Bytes: bytesMetric(payload.files * 1000) } };
  },
};

describe('per-job metrics', () => {
  it('aggregates outcome, duration and the handler figures per kind into PutMetricData statistic sets', async () => {
    const client = cloudWatchClient();
    const publisher = new MetricsPublisher(client, NAMESPACE, silentLog);
    const worker = testWorker(env, [importLike]);
    publishJobMetrics(worker, publisher);
    const finished: number[] = [];
    worker.on('jobFinished', (event) => finished.push(event.job.id));
    for (const payload of [{ files: 2 }, { files: 5 }, { files: 1, fail: true }]) {
      await enqueueJob(env.pool, { kind: 'import-like', payload });
    }
    await worker.start();
    await waitFor(async () => finished.length === 3);
    await worker.stop();
    await publisher.stop();
    client.destroy();

    const calls = putMetricDataCalls(endpoint.requests);
    expect(calls).toHaveLength(1);
    const [call] = calls as [PutMetricDataSeen];
    expect(call.Namespace).toBe(NAMESPACE);
    expect(find(call, 'JobsFinished', { Kind: 'import-like', Outcome: 'succeeded' })).toMatchObject({
      Unit: 'Count',
      StatisticValues: { SampleCount: 2, Sum: 2, Minimum: 1, Maximum: 1 },
    });
    expect(find(call, 'JobsFinished', { Kind: 'import-like', Outcome: 'failed' })?.StatisticValues?.Sum).toBe(1);
    expect(find(call, 'JobsFinished', { Outcome: 'succeeded' })?.StatisticValues?.Sum).toBe(2);
    expect(find(call, 'Files', { Kind: 'import-like' })).toMatchObject({
      Unit: 'Count',
      StatisticValues: { SampleCount: 2, Sum: 7, Minimum: 2, Maximum: 5 },
    });
    expect(find(call, 'Bytes', { Kind: 'import-like' })).toMatchObject({ Unit: 'Bytes', StatisticValues: { Sum: 7000 } });
    const duration = find(call, 'JobDuration', { Kind: 'import-like' });
    expect(duration).toMatchObject({ Unit: 'Milliseconds', StatisticValues: { SampleCount: 3 } });
    expect(duration!.StatisticValues!.Maximum).toBeGreaterThanOrEqual(duration!.StatisticValues!.Minimum);
    expect(typeof duration!.Timestamp).toBe('number');
  });

  it('a lost lease and a failure that could not be stored are separate outcomes; a figure keeps its declared unit', () => {
    const job = { id: 1, kind: 'import-like', tenantId: null, payload: {}, attempt: 1, maxAttempts: 3, progress: null, leaseOwner: 'w', createdAt: new Date() };
    const outcomes = (['lost', 'unrecorded'] as const).map((state) => jobMetricPoints({ job, state, durationMs: 1 })[1]?.dimensions?.Outcome);
    expect(outcomes).toEqual(['lease_lost', 'failure_unrecorded']);
    // A name ending in Bytes no longer makes a count a size.
    const points = jobMetricPoints({ job, state: 'succeeded', durationMs: 1, metrics: { ChunkBytes: countMetric(3), Payload: bytesMetric(9) } });
    expect(points.filter((point) => point.name === 'ChunkBytes' || point.name === 'Payload').map((point) => [point.name, point.unit])).toEqual([
      ['ChunkBytes', 'Count'],
      ['Payload', 'Bytes'],
    ]);
  });

  it('a failing CloudWatch loses the metrics, never the worker: calls fail, publish() resolves false', async () => {
    endpoint.respondWith(cloudWatchFailure);
    const client = cloudWatchClient();
    const publisher = new MetricsPublisher(client, NAMESPACE, silentLog);
    await expect(publisher.publish([{ name: 'QueuedJobs', unit: 'Count', value: 1 }])).resolves.toBe(false);
    publisher.record({ name: 'JobsFinished', unit: 'Count', value: 1 });
    await expect(publisher.stop()).resolves.toBeUndefined();
    client.destroy();
    // The SDK retried each call (500 is retryable) before giving up.
    expect(endpoint.requests.length).toBeGreaterThanOrEqual(4);
  });

  it('a PutMetricData that does not answer is abandoned after its timeout; stop() waits a bounded time for calls in flight', async () => {
    endpoint.respondWith(() => 'no-answer');
    const client = cloudWatchClient();
    const recorded = recordingLogger();
    const publisher = new MetricsPublisher(client, NAMESPACE, recorded.log, { callTimeoutMs: 300 });
    await expect(publisher.publish([{ name: 'QueuedJobs', unit: 'Count', value: 1 }])).resolves.toBe(false);
    expect(recorded.lines()).toContainEqual(expect.objectContaining({ msg: 'could not publish metrics; dropping them' }));
    // A worker that stops with a call in flight (a gauge) and points pending: it gives them its stop time, not the
    // shutdown's whole grace, however long the call's own timeout.
    const stopping = new MetricsPublisher(client, NAMESPACE, silentLog, { callTimeoutMs: 3_600_000, stopTimeoutMs: 300 });
    const seen = putMetricDataCalls(endpoint.requests).length;
    const gauge = stopping.publish([{ name: 'QueuedJobs', unit: 'Count', value: 2 }]);
    await waitFor(async () => putMetricDataCalls(endpoint.requests).length > seen);
    stopping.record({ name: 'JobsFinished', unit: 'Count', value: 1 });
    await stopping.stop();
    await expect(gauge).resolves.toBe(false);
    client.destroy();
  });
});

describe('queue gauges', () => {
  async function plantQueue(): Promise<void> {
    // A kind no worker runs, so the rows stay as planted: 3 due queued jobs (the oldest due 120 s ago), 1 queued for
    // later (counts as queued, not in the age), 2 running on another worker, 1 dead.
    await env.pool.query(
      `INSERT INTO jobs (kind, state, run_at, lease_owner, lease_expires_at, attempts, finished_at) VALUES
         ('gauge-test', 'queued', now() - interval '120 seconds', NULL, NULL, 0, NULL),
         ('gauge-test', 'queued', now() - interval '30 seconds', NULL, NULL, 0, NULL),
         ('gauge-test', 'queued', now(), NULL, NULL, 0, NULL),
         ('gauge-test', 'queued', now() + interval '1 hour', NULL, NULL, 0, NULL),
         ('gauge-test', 'running', now(), 'elsewhere', now() + interval '1 hour', 1, NULL),
         ('gauge-test', 'running', now(), 'elsewhere', now() + interval '1 hour', 1, NULL),
         ('gauge-test', 'dead', now(), NULL, NULL, 5, now())`,
    );
  }

  const gaugeCalls = () => putMetricDataCalls(endpoint.requests).filter((call) => call.MetricData.some((d) => d.MetricName === 'QueuedJobs'));
  const leaderLine = (line: { msg: string }) => line.msg === 'this worker now publishes the queue gauges';

  it('two workers: one elected worker publishes every interval, with per-kind and total gauges; the lead moves when it dies', async () => {
    await plantQueue();
    const intervalMs = 1_000;
    const workerEnv = (id: string) => ({
      WORKER_ID: id,
      METRICS_NAMESPACE: NAMESPACE,
      CLOUDWATCH_ENDPOINT: endpoint.url,
      METRICS_GAUGE_INTERVAL_MS: String(intervalMs),
    });
    const workers = [spawnWorker(env, { env: workerEnv('gauge-a') }), spawnWorker(env, { env: workerEnv('gauge-b') })];
    spawned.push(...workers);
    await waitFor(async () => gaugeCalls().length >= 1, 20_000);

    const windowStart = Date.now();
    const before = gaugeCalls().length;
    // Five more publications, however long a busy machine takes for them. One publisher: each comes at least 0.9 of
    // an interval after the one before (two publishing every interval would make gaps of half an interval on average).
    await waitFor(async () => gaugeCalls().length >= before + 5, 30_000);
    const inWindow = gaugeCalls().filter((call) => call.at >= windowStart);
    expect(inWindow.length).toBeGreaterThanOrEqual(5);
    for (let index = 1; index < inWindow.length; index += 1) {
      expect(inWindow[index]!.at - inWindow[index - 1]!.at).toBeGreaterThanOrEqual(intervalMs * 0.9);
    }
    const leaders = workers.filter((worker) => worker.logs.some(leaderLine));
    expect(leaders).toHaveLength(1);

    const latest = gaugeCalls().at(-1)!;
    expect(latest.Namespace).toBe(NAMESPACE);
    const value = (name: string, dimensions: Record<string, string>) => find(latest, name, dimensions)?.Value;
    expect(value('QueuedJobs', { Kind: 'gauge-test' })).toBe(4);
    // Due now: not the run queued for an hour from now (autoscaling and the work-waits alarm read this one).
    expect(value('DueJobs', { Kind: 'gauge-test' })).toBe(3);
    expect(value('RunningJobs', { Kind: 'gauge-test' })).toBe(2);
    expect(value('DeadJobs', { Kind: 'gauge-test' })).toBe(1);
    expect(value('OldestQueuedAgeSeconds', { Kind: 'gauge-test' })).toBeGreaterThanOrEqual(120);
    expect(value('OldestQueuedAgeSeconds', { Kind: 'gauge-test' })).toBeLessThan(180);
    // Registered kinds without rows publish zeros.
    expect(value('QueuedJobs', { Kind: 'noop' })).toBe(0);
    expect(value('OldestQueuedAgeSeconds', { Kind: 'noop' })).toBe(0);
    // The dimensionless totals the alarms read.
    expect(value('QueuedJobs', {})).toBe(4);
    expect(value('DueJobs', {})).toBe(3);
    expect(value('RunningJobs', {})).toBe(2);
    expect(value('DeadJobs', {})).toBe(1);
    expect(value('OldestQueuedAgeSeconds', {})).toBe(value('OldestQueuedAgeSeconds', { Kind: 'gauge-test' }));
    expect(find(latest, 'OldestQueuedAgeSeconds', {})?.Unit).toBe('Seconds');
    expect(find(latest, 'DeadJobs', {})?.Unit).toBe('Count');

    const [leader] = leaders as [WorkerProcess];
    const survivor = workers.find((worker) => worker !== leader)!;
    leader.kill('SIGKILL');
    await leader.exited;
    const killedAt = Date.now();
    await survivor.waitForLog(leaderLine, 10_000);
    await waitFor(async () => gaugeCalls().filter((call) => call.at > killedAt).length >= 2, 10_000);
  });
});
