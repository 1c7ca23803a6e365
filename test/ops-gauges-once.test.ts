// `bulk-import gauges --once`, the real CLI process, publishing through the real @aws-sdk/client-cloudwatch to a local
// endpoint that records what it receives: the command a scheduled task runs so the queue gauges (and the alarms on
// them) exist while the service runs 0 tasks. Covers the two newer gauges (OldestRunningAgeSeconds,
// MaxConsecutiveFailures), the exit codes, and leaving the publication to a worker that leads.
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { releaseGaugeLeadership, tryAcquireGaugeLeadership } from '../worker/queue/gauges.js';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import {
  cloudWatchFailure,
  cloudWatchSuccess,
  dimensionsOf,
  putMetricDataCalls,
  startRecordingEndpoint,
  type PutMetricDataSeen,
  type RecordingEndpoint,
} from './support/recording-endpoint.js';

const env = useTestEnvironment();
const NAMESPACE = 'Test/GaugesOnce';
let endpoint: RecordingEndpoint;

beforeAll(async () => {
  endpoint = await startRecordingEndpoint(cloudWatchSuccess);
});
afterEach(async () => {
  endpoint.requests.length = 0;
  endpoint.respondWith(cloudWatchSuccess);
  await env.pool.query('DELETE FROM jobs');
});
afterAll(async () => {
  await endpoint?.close();
});

const gaugesOnce = (extra: Record<string, string> = {}) =>
  runCli(env, ['gauges', '--once'], { METRICS_NAMESPACE: NAMESPACE, CLOUDWATCH_ENDPOINT: endpoint.url, ...extra });

function value(call: PutMetricDataSeen, name: string, dimensions: Record<string, string>): number | undefined {
  return call.MetricData.find((d) => d.MetricName === name && JSON.stringify(dimensionsOf(d)) === JSON.stringify(dimensions))?.Value;
}

async function plantQueue(): Promise<void> {
  // Kinds no worker runs. 'slow-kind': one run running for 2 h (3rd attempt, two failed before it), one for 10 min.
  // 'flaky-kind': queued after 4 failed attempts; queued after an outage wait (attempt given back: 0 counted);
  // a dead run (not queued or running: no streak); a queued run never tried.
  await env.pool.query(
    `INSERT INTO jobs (kind, state, run_at, lease_owner, lease_expires_at, attempts, max_attempts, started_at, last_error, finished_at) VALUES
       ('slow-kind', 'running', now(), 'elsewhere', now() + interval '1 hour', 3, 5, now() - interval '2 hours', '{"code":"ECONNRESET"}', NULL),
       ('slow-kind', 'running', now(), 'elsewhere', now() + interval '1 hour', 1, 5, now() - interval '10 minutes', NULL, NULL),
       ('flaky-kind', 'queued', now() + interval '1 minute', NULL, NULL, 4, 9, now() - interval '1 minute', '{"code":"SlowDown"}', NULL),
       ('flaky-kind', 'queued', now(), NULL, NULL, 0, 5, now() - interval '1 minute', '{"code":"DEPENDENCY_OUTAGE"}', NULL),
       ('flaky-kind', 'dead', now(), NULL, NULL, 9, 9, now() - interval '1 hour', '{"code":"SlowDown"}', now()),
       ('flaky-kind', 'queued', now(), NULL, NULL, 0, 5, NULL, NULL, NULL)`,
  );
}

describe('bulk-import gauges --once', () => {
  it('publishes every gauge per kind and fleet-wide once, prints one summary line, exits 0', async () => {
    await plantQueue();
    const result = await gaugesOnce();
    expect(result.stderr).toBe('');
    expect(result.code).toBe(0);
    const lines = result.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^gauges published to ${NAMESPACE}: \\d+ kinds; queued 3 .*running 2 \\(oldest 7\\d{3} s\\), dead 1, most failures in a row 4$`));

    const calls = putMetricDataCalls(endpoint.requests);
    expect(calls).toHaveLength(1);
    const [call] = calls as [PutMetricDataSeen];
    expect(call.Namespace).toBe(NAMESPACE);
    const runningAge = value(call, 'OldestRunningAgeSeconds', { Kind: 'slow-kind' })!;
    expect(runningAge).toBeGreaterThanOrEqual(7200);
    expect(runningAge).toBeLessThan(7260);
    expect(value(call, 'OldestRunningAgeSeconds', {})).toBe(runningAge);
    expect(value(call, 'OldestRunningAgeSeconds', { Kind: 'flaky-kind' })).toBe(0);
    expect(value(call, 'MaxConsecutiveFailures', { Kind: 'slow-kind' })).toBe(2);
    expect(value(call, 'MaxConsecutiveFailures', { Kind: 'flaky-kind' })).toBe(4);
    expect(value(call, 'MaxConsecutiveFailures', {})).toBe(4);
    // The older gauges come with them, and registered kinds without rows publish zeros.
    expect(value(call, 'QueuedJobs', {})).toBe(3);
    expect(value(call, 'RunningJobs', { Kind: 'slow-kind' })).toBe(2);
    expect(value(call, 'DeadJobs', { Kind: 'flaky-kind' })).toBe(1);
    expect(value(call, 'MaxConsecutiveFailures', { Kind: 'noop' })).toBe(0);
    expect(value(call, 'OldestRunningAgeSeconds', { Kind: 'noop' })).toBe(0);
    const units = new Map(call.MetricData.map((d) => [d.MetricName, d.Unit]));
    expect(units.get('OldestRunningAgeSeconds')).toBe('Seconds');
    expect(units.get('MaxConsecutiveFailures')).toBe('Count');
  });

  it('exits 69 with a NOT published summary when CloudWatch refuses the points', async () => {
    endpoint.respondWith(cloudWatchFailure);
    const result = await gaugesOnce();
    expect(result.code).toBe(69);
    expect(result.stdout.trim()).toMatch(/^gauges NOT published to Test\/GaugesOnce \(CloudWatch refused or unreachable\): /);
    expect(result.stderr).toContain('could not publish metrics');
    expect(putMetricDataCalls(endpoint.requests).length).toBeGreaterThanOrEqual(1);
  });

  it('exits 78 naming METRICS_NAMESPACE when it is not set', async () => {
    const result = await runCli(env, ['gauges', '--once'], { CLOUDWATCH_ENDPOINT: endpoint.url });
    expect(result.code).toBe(78);
    expect(result.stderr).toContain('METRICS_NAMESPACE is not set');
    expect(endpoint.requests).toHaveLength(0);
  });

  it('leaves the publication to a worker that holds the gauge leadership (exit 0, nothing sent)', async () => {
    const leader = new pg.Client({ connectionString: env.databaseUrl });
    await leader.connect();
    try {
      expect(await tryAcquireGaugeLeadership(leader)).toBe(true);
      const result = await gaugesOnce();
      expect(result.code).toBe(0);
      expect(result.stdout.trim()).toBe(`gauges not published: a running worker publishes them to ${NAMESPACE}`);
      expect(endpoint.requests).toHaveLength(0);
      await releaseGaugeLeadership(leader);
    } finally {
      await leader.end();
    }
    // Once the worker is gone, the scheduled round publishes again.
    expect((await gaugesOnce()).code).toBe(0);
    expect(putMetricDataCalls(endpoint.requests)).toHaveLength(1);
  });

  it('without --once prints the gauges and publishes nothing', async () => {
    await plantQueue();
    const result = await runCli(env, ['gauges', '--json'], { METRICS_NAMESPACE: NAMESPACE, CLOUDWATCH_ENDPOINT: endpoint.url });
    expect(result.code).toBe(0);
    const shown = JSON.parse(result.stdout) as { total: { maxConsecutiveFailures: number; running: number } };
    expect(shown.total).toMatchObject({ maxConsecutiveFailures: 4, running: 2 });
    expect(endpoint.requests).toHaveLength(0);
  });
});
