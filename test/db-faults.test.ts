// The database going away under real worker processes: a restart (every session terminated, as in an RDS failover),
// pg_terminate_backend() of each of the worker's sessions, and a server frozen with SIGSTOP. The worker process must
// live through each, log the outage once and its end once, and every job must end as it would have without the fault.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { rescueExpiredLeases } from '../worker/queue/maintenance.js';
import { cancelJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { cloudWatchSuccess, putMetricDataCalls, startRecordingEndpoint } from './support/recording-endpoint.js';
import { startSilencingProxy } from './support/silencing-proxy.js';
import { killAll, spawnWorker, type LogLine, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment({ ownPostgres: true });
const spawned: WorkerProcess[] = [];
afterEach(async () => {
  await env.postgres?.resume();
  await killAll(spawned.splice(0));
  await waitFor(async () => (await env.pool.query('DELETE FROM jobs').then(() => true).catch(() => false)) || undefined, 60_000, 100);
});
let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'db-faults-'));
});
afterAll(async () => {
  await killAll(spawned);
  await rm(dir, { recursive: true, force: true });
});

const ROOT = fileURLToPath(new URL('../', import.meta.url));
function healthcheck(extraEnv: Record<string, string>): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'scripts/healthcheck.ts'],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env.processEnv, ...extraEnv }, timeout: 30_000 },
      (error, stdout) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout }),
    );
  });
}

const TIMINGS = {
  WORKER_LEASE_MS: '4000',
  WORKER_HEARTBEAT_MS: '500',
  WORKER_RESCUE_INTERVAL_MS: '500',
  WORKER_POLL_INTERVAL_MS: '200',
  LOG_LEVEL: 'info',
};

function worker(extra: Record<string, string> = {}): WorkerProcess {
  const process = spawnWorker(env, { env: { ...TIMINGS, ...extra } });
  spawned.push(process);
  return process;
}

const started = (line: LogLine) => line.msg === 'worker started';

/** Job counts by state, read after the database is back (retried while it is not). */
async function statesOf(ids: number[]): Promise<Record<string, number>> {
  const { rows } = await env.pool.query<{ state: string; n: number }>(
    'SELECT state, count(*)::int AS n FROM jobs WHERE id = ANY($1) GROUP BY state',
    [ids],
  );
  return Object.fromEntries(rows.map((row) => [row.state, row.n]));
}

async function untilAllSucceeded(ids: number[], timeoutMs = 120_000): Promise<void> {
  await waitFor(async () => {
    const states = await statesOf(ids).catch(() => ({}) as Record<string, number>);
    return states.succeeded === ids.length || undefined;
  }, timeoutMs, 200);
}

async function submitNoops(count: number, sleepMs: number): Promise<number[]> {
  const ids: number[] = [];
  for (let i = 0; i < count; i += 1) {
    const { job } = await submitJob(env.pool, { kind: 'noop', payload: { sleepMs, seq: i }, maxAttempts: 3 });
    ids.push(job.id);
  }
  return ids;
}

async function succeededCount(ids: number[]): Promise<number> {
  return (await statesOf(ids)).succeeded ?? 0;
}

function outageLines(process: WorkerProcess): { down: number; back: number } {
  return {
    down: process.logs.filter((line) => line.msg.startsWith('database unavailable')).length,
    back: process.logs.filter((line) => line.msg === 'database is back').length,
  };
}

describe('worker processes through database faults', () => {
  it('a Postgres restart mid-run: the worker lives, logs the outage once, and every job succeeds once', async () => {
    const process = worker({ WORKER_CONCURRENCY: '4' });
    await process.waitForLog(started);
    const ids = await submitNoops(120, 40);
    await waitFor(async () => ((await succeededCount(ids)) >= 20 ? true : undefined), 60_000, 20);

    await env.postgres!.restart({ downMs: 500 });

    await untilAllSucceeded(ids);
    expect(process.child.exitCode).toBeNull();
    expect(process.stderr.join('\n')).not.toMatch(/Unhandled 'error' event|Connection terminated unexpectedly/);
    const { rows } = await env.pool.query<{ attempts: number }>('SELECT attempts FROM jobs WHERE id = ANY($1)', [ids]);
    // A run interrupted by the restart may have been retried, but never more than its attempts allow.
    expect(rows.every((row) => row.attempts >= 1 && row.attempts <= 3)).toBe(true);
    await process.waitForLog((line) => line.msg === 'database is back');
    const lines = outageLines(process);
    const said = JSON.stringify(process.logs.filter((line) => /^database /.test(line.msg)));
    expect(lines.down, said).toBe(1);
    expect(lines.back, said).toBe(1);
  });

  it('pg_terminate_backend of every one of the worker\'s sessions, one at a time: the worker lives and finishes', async () => {
    const process = worker({ WORKER_CONCURRENCY: '4', METRICS_NAMESPACE: '' });
    await process.waitForLog(started);
    const ids = await submitNoops(60, 100);
    await waitFor(async () => ((await succeededCount(ids)) >= 5 ? true : undefined), 60_000, 20);
    const { rows: sessions } = await env.pool.query<{ pid: number; application_name: string }>(
      `SELECT pid, application_name FROM pg_stat_activity
       WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE 'bulk-import-%'
         AND application_name <> 'bulk-import-test'`,
    );
    expect(new Set(sessions.map((session) => session.application_name))).toEqual(
      new Set(['bulk-import-worker', 'bulk-import-claim', 'bulk-import-lease', 'bulk-import-listener']),
    );
    for (const session of sessions) {
      await env.pool.query('SELECT pg_terminate_backend($1)', [session.pid]);
    }
    await untilAllSucceeded(ids);
    expect(process.child.exitCode).toBeNull();
  });

  it('a server frozen with SIGSTOP: statements hang, the worker stays up and resumes when it thaws', async () => {
    const process = worker({ WORKER_CONCURRENCY: '2' });
    await process.waitForLog(started);
    const ids = await submitNoops(30, 50);
    await waitFor(async () => ((await succeededCount(ids)) >= 3 ? true : undefined), 60_000, 20);
    await env.postgres!.pause();
    // Frozen until the worker's own sessions have noticed (a claim or heartbeat timing out is logged as an outage).
    await process.waitForLog((line) => line.msg.startsWith('database unavailable'), 90_000);
    await env.postgres!.resume();
    await untilAllSucceeded(ids);
    expect(process.child.exitCode).toBeNull();
  });

  it('connections that go silent (a failover that drops packets): leases are kept on new connections, outcomes stored', async () => {
    const proxy = await startSilencingProxy(env.databaseUrl);
    try {
      // Lease 12 s, heartbeat 4 s: a beat lost to a silent connection times out after 4 s, and the tick it overtook
      // goes out at once on a new connection, about 4 s before the leases would run out.
      // Its own maintenance stays out of the way (the test's rescuer plays another worker's): were the heartbeat on the
      // shared pool (as before the lease session), a rescuer or an archiver that took its silent connection first
      // would let it pass by luck.
      const process = worker({
        DATABASE_URL: proxy.url, WORKER_LEASE_MS: '12000', WORKER_HEARTBEAT_MS: '4000', WORKER_CONCURRENCY: '2',
        WORKER_RESCUE_INTERVAL_MS: '3600000', ARCHIVE_INTERVAL_MS: '3600000', RETENTION_INTERVAL_MS: '86400000',
      });
      await process.waitForLog(started);
      const ids = await submitNoops(2, 3_600_000);
      const running = async () =>
        (await env.pool.query<{ n: number; beat: Date | null }>(
          "SELECT count(*)::int AS n, min(heartbeat_at) AS beat FROM jobs WHERE id = ANY($1) AND state = 'running' AND attempts = 1",
          [ids],
        )).rows[0]!;
      // Both running, and heartbeated once since their claim: every session the worker uses for them is open.
      await waitFor(async () => {
        const { rows } = await env.pool.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM jobs WHERE id = ANY($1) AND state = 'running' AND heartbeat_at > claimed_at",
          [ids],
        );
        return rows[0]!.n === 2 || undefined;
      }, 60_000, 50);
      expect(proxy.silenceExisting()).toBeGreaterThanOrEqual(3);
      const silencedAt = (await env.pool.query<{ now: Date }>('SELECT now()')).rows[0]!.now;
      // A beat of both runs after the silence, so on a connection opened after it. Meanwhile another worker's rescuer
      // (here the test's) finds no lease run out.
      await waitFor(async () => {
        const rescued = await rescueExpiredLeases(env.pool);
        expect([...rescued.requeued, ...rescued.dead, ...rescued.canceled].filter((id) => ids.includes(id))).toEqual([]);
        const { n, beat } = await running();
        expect(n).toBe(2);
        return beat !== null && beat > silencedAt ? beat : undefined;
      }, 60_000, 100);
      // An operator cancels (the LISTEN session is silent too: the heartbeat reports it); the outcome is stored.
      for (const id of ids) await cancelJob(env.pool, id);
      await waitFor(async () => ((await statesOf(ids)).canceled === 2 ? true : undefined), 60_000, 50);
      const { rows } = await env.pool.query<{ attempts: number; last_error: unknown }>('SELECT attempts, last_error FROM jobs WHERE id = ANY($1)', [ids]);
      expect(rows).toEqual([{ attempts: 1, last_error: null }, { attempts: 1, last_error: null }]);
      expect(process.child.exitCode).toBeNull();
    } finally {
      await proxy.close();
    }
  });

  it('a handler statement whose answer is lost in a silent connection fails and is retried, not left to TCP', async () => {
    await env.pool.query(
      'CREATE TABLE IF NOT EXISTS test_runs (job_id bigint NOT NULL, attempt int NOT NULL, worker text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())',
    );
    const proxy = await startSilencingProxy(env.databaseUrl);
    // The test's own session (not through the proxy) holds the lock the handler's statement waits for.
    const holder = await env.pool.connect();
    try {
      await holder.query('SELECT pg_advisory_lock(4242)');
      const process = spawnWorker(env, {
        entry: 'test',
        env: {
          ...TIMINGS, DATABASE_URL: proxy.url, WORKER_LEASE_MS: '12000', WORKER_HEARTBEAT_MS: '4000', WORKER_CONCURRENCY: '1',
          WORKER_RESCUE_INTERVAL_MS: '3600000', ARCHIVE_INTERVAL_MS: '3600000', RETENTION_INTERVAL_MS: '86400000',
          TEST_SILENT_CONNECTION_MS: '500,200',
        },
      });
      spawned.push(process);
      await process.waitForLog(started);
      const { job } = await enqueueJob(env.pool, { kind: 'await-lock', payload: { key: 4242 }, maxAttempts: 3 });
      // The handler's statement is on the server, waiting for the lock.
      await waitFor(async () => {
        const { rows } = await env.pool.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock%'",
        );
        return rows[0]!.n === 1 || undefined;
      }, 60_000, 50);
      // Silence, then let the statement finish: the server answers into the silence and its session goes idle. Without
      // the watch the handler would wait for TCP to give up (about 15 minutes; this proxy never closes).
      expect(proxy.silenceExisting()).toBeGreaterThanOrEqual(2);
      await holder.query('SELECT pg_advisory_unlock(4242)');
      await process.waitForLog((line) => line.msg === 'a database connection went silent with a statement waiting; closing it', 60_000);
      await waitFor(async () => ((await statesOf([job.id])).succeeded === 1 ? true : undefined), 60_000, 100);
      const { rows } = await env.pool.query<{ attempt: number }>('SELECT attempt FROM test_runs WHERE job_id = $1 ORDER BY at', [job.id]);
      expect(rows.length).toBe(2); // the run whose answer was lost, and the one that then succeeded
      expect(process.child.exitCode).toBeNull();
    } finally {
      await holder.query('SELECT pg_advisory_unlock_all()').catch(() => {});
      holder.release();
      await proxy.close();
    }
  });

  it('an outage longer than a lease: an outcome that waited for the database is stored, not rescued as expired', async () => {
    // A Multi-AZ failover takes a minute or two, several leases: here the lease is 2 s and the database is away 3.
    const leaseMs = 2_000;
    const process = spawnWorker(env, {
      entry: 'test',
      env: { ...TIMINGS, WORKER_CONCURRENCY: '2', WORKER_LEASE_MS: String(leaseMs), WORKER_HEARTBEAT_MS: '500' },
    });
    spawned.push(process);
    await process.waitForLog(started);
    const gate = join(dir, 'outage-gate');
    const { job } = await enqueueJob(env.pool, { kind: 'await-file', payload: { path: gate }, maxAttempts: 1 });
    await waitFor(async () => ((await statesOf([job.id])).running === 1 ? true : undefined), 60_000, 20);
    await env.postgres!.stopServer();
    try {
      await process.waitForLog((line) => line.msg.startsWith('database unavailable'));
      // The handler ends while the database is away; its outcome waits for it.
      await writeFile(gate, '');
      await process.waitForLog((line) => line.msg === 'gate opened' && line.job_id === job.id);
      // The length of the outage is the scenario: past the lease, and past the time the outcome used to be retried.
      await new Promise((resolve) => setTimeout(resolve, 1.5 * leaseMs));
    } finally {
      await env.postgres!.startServer();
    }
    // Back: the outcome lands, and the worker's own rescuer (every 500 ms) holds off while the owners renew.
    const finished = await process.waitForLog((line) => line.msg === 'job finished' && line.job_id === job.id, 60_000);
    expect(finished.outcome).toBe('succeeded');
    const back = process.logs.findIndex((line) => line.msg === 'database is back');
    expect(back).toBeGreaterThan(-1);
    expect(process.logs.indexOf(finished)).toBeGreaterThan(back);
    expect(await env.pool.query('SELECT state, attempts, last_error FROM jobs WHERE id = $1', [job.id]).then((r) => r.rows[0])).toEqual({
      state: 'succeeded',
      attempts: 1,
      last_error: null,
    });
    expect(process.logs.some((line) => /rescued jobs|expired leases had no attempts left/.test(line.msg))).toBe(false);
  });

  it('during an outage the health check stays healthy and says so; the worker resumes when the server is back', async () => {
    const file = join(dir, 'outage.heartbeat');
    const health = { HEALTH_HEARTBEAT_FILE: file, HEALTH_MAX_AGE_MS: '10000' };
    const cloudWatch = await startRecordingEndpoint(cloudWatchSuccess);
    const gaugeCalls = () => putMetricDataCalls(cloudWatch.requests).filter((call) => call.MetricData.some((d) => d.MetricName === 'QueuedJobs')).length;
    const metrics = { METRICS_NAMESPACE: 'Test/BulkImportOutage', CLOUDWATCH_ENDPOINT: cloudWatch.url, METRICS_GAUGE_INTERVAL_MS: '1000' };
    const process = worker({ ...health, ...metrics, WORKER_CONCURRENCY: '2', LOG_LEVEL: 'debug' });
    await process.waitForLog(started);
    await waitFor(() => stat(file).then(() => true, () => false));
    await waitFor(async () => gaugeCalls() >= 1, 30_000);
    await env.postgres!.stopServer();
    try {
      await process.waitForLog((line) => line.msg.startsWith('database unavailable'));
      // The gauge leader's session went with the server; its rounds fail until the server is back (said at debug).
      await process.waitForLog((line) => line.msg === 'lost the queue gauge leadership with its database session');
      await process.waitForLog((line) => line.msg === 'database still unavailable' && line.session === 'queue-gauges');
      // Replacing the task would not bring the database back: healthy, with the outage named.
      const check = await waitFor(async () => {
        const result = await healthcheck(health);
        return result.stdout.includes('database unavailable since') ? result : undefined;
      });
      expect(check.code).toBe(0);
      expect(check.stdout).toMatch(/^healthy: heartbeat \d+ ms old .*; database unavailable since \S+ \(.*\), jobs wait for it/);
    } finally {
      await env.postgres!.startServer();
    }
    const ids = await submitNoops(5, 0);
    await untilAllSucceeded(ids);
    await process.waitForLog((line) => line.msg === 'database is back');
    await waitFor(async () => ((await healthcheck(health)).stdout.includes('database unavailable') ? undefined : true));
    expect(process.child.exitCode).toBeNull();
    // The gauges are published again, and the rounds the outage failed said nothing of their own: the outage is the
    // worker's one "database unavailable" line, not an error line per gauge interval.
    const before = gaugeCalls();
    await waitFor(async () => gaugeCalls() > before, 30_000);
    await cloudWatch.close();
    expect(process.logs.filter((line) => line.msg === 'queue-gauges failed')).toEqual([]);
    expect(outageLines(process).down).toBe(1);
  });
});

