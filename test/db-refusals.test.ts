// Refusals of a server that is up. A password rotated under a running worker: the sessions it has open go on working,
// its new logins are refused. The refusal must stay reported (the health check fails, so ECS replaces the task, which
// reads the new secret) until a new session logs in again: a statement on an old session says nothing about logging
// in. And a write refused as read-only (a session left on a demoted instance after a switchover): that session is
// discarded, so the next transaction gets a new one.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPool, POOLED_SESSION_LIFETIME_S, withTransaction } from '../worker/db/pool.js';
import { isDatabaseOutageError } from '../worker/queue/outage.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { killAll, spawnWorker, type LogLine, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment({
  ownPostgres: { hba: ['host all all 127.0.0.1/32 scram-sha-256', 'host all all ::1/128 scram-sha-256', 'local all all scram-sha-256'] },
});

/** Roles are cluster-wide, the server is this file's own: a fixed name. */
const ROLE = 'rotated_user';
const ROOT = fileURLToPath(new URL('../', import.meta.url));
const spawned: WorkerProcess[] = [];
let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'db-login-refused-'));
  await env.pool.query(`CREATE ROLE ${ROLE} LOGIN PASSWORD 'first'`);
  await env.pool.query(`GRANT ALL ON ALL TABLES IN SCHEMA public TO ${ROLE}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ${ROLE}`);
});
afterAll(async () => {
  await killAll(spawned);
  await rm(dir, { recursive: true, force: true });
});

function urlAs(password: string): string {
  const url = new URL(env.databaseUrl);
  url.username = ROLE;
  url.password = password;
  return url.toString();
}

function healthcheck(extraEnv: Record<string, string>): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'scripts/healthcheck.ts'],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env.processEnv, DATABASE_URL: urlAs('first'), ...extraEnv }, timeout: 30_000 },
      (error, stdout) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout }),
    );
  });
}

describe('a login refused while sessions work', () => {
  it('stays reported until a new session logs in, though the claims go on succeeding', async () => {
    const health = { HEALTH_HEARTBEAT_FILE: join(dir, 'worker.heartbeat'), HEALTH_MAX_AGE_MS: '10000' };
    const worker = spawnWorker(env, {
      env: {
        ...health,
        DATABASE_URL: urlAs('first'),
        WORKER_POLL_INTERVAL_MS: '100',
        WORKER_RESCUE_INTERVAL_MS: '300',
        METRICS_NAMESPACE: '',
      },
    });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');

    // Its claim session is logged in (it connects at the first claim, after `worker started`).
    const sessionsOf = async (application: string) =>
      (await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND application_name = $2', [ROLE, application]))
        .rows[0]!.n;
    await waitFor(async () => ((await sessionsOf('bulk-import-claim')) > 0 ? true : undefined));
    // The password is rotated, and the worker's main pool has to log in again.
    await env.pool.query(`ALTER ROLE ${ROLE} PASSWORD 'second'`);
    await env.pool.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND application_name = 'bulk-import-worker'", [ROLE]);
    const refused = await worker.waitForLog((line) => line.msg.startsWith('database refuses this worker'));
    const refusedAt = typeof refused.time === 'number' ? refused.time : Date.parse(String(refused.time));

    // The claim session (logged in before the rotation) keeps answering: a claim that began well after the refusal.
    await waitFor(async () => {
      const { rows } = await env.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE usename = $1 AND application_name = 'bulk-import-claim' AND query_start > to_timestamp($2 / 1000.0) + interval '2 seconds'`,
        [ROLE, refusedAt],
      );
      return rows[0]!.n > 0 || undefined;
    });
    const whileRefused = await healthcheck(health);
    expect(whileRefused.stdout).toMatch(/^unhealthy: the database refuses this worker since /);
    expect(whileRefused.code).toBe(4);
    const after = (line: LogLine) => worker.logs.indexOf(line) > worker.logs.indexOf(refused);
    expect(worker.logs.filter((line) => line.msg === 'database is back' && after(line))).toEqual([]);

    // Back to the password the worker has: its next login ends the refusal.
    await env.pool.query(`ALTER ROLE ${ROLE} PASSWORD 'first'`);
    await worker.waitForLog((line) => line.msg === 'database is back' && after(line));
    await waitFor(async () => ((await healthcheck(health)).code === 0 ? true : undefined));
    expect(worker.child.exitCode).toBeNull();
  });

  it('a run whose session cannot log in waits for the database instead of failing for good', () => {
    expect(isDatabaseOutageError(Object.assign(new Error('password authentication failed for user "x"'), { code: '28P01' }))).toBe(true);
    expect(isDatabaseOutageError(Object.assign(new Error('cannot execute INSERT in a read-only transaction'), { code: '25006' }))).toBe(true);
    expect(isDatabaseOutageError(Object.assign(new Error('duplicate key value'), { code: '23505' }))).toBe(false);
  });
});

describe('a write refused as read-only', () => {
  it('discards the session, so the next transaction gets another; pooled sessions are renewed', async () => {
    const pool = createPool(env.databaseUrl, { max: 1 });
    try {
      expect(pool.options.maxLifetimeSeconds).toBe(POOLED_SESSION_LIFETIME_S);
      // The one session of this pool now behaves as one on a reader.
      const readerPid = await withTransaction(pool, async (client) => {
        await client.query('SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY');
        return (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      });
      const refused = await withTransaction(pool, (client) => client.query('CREATE TEMP TABLE t (x int)')).catch((error: unknown) => error);
      expect((refused as { code?: string }).code).toBe('25006');
      expect(isDatabaseOutageError(refused)).toBe(true);
      const next = await withTransaction(pool, async (client) => {
        await client.query('CREATE TEMP TABLE t (x int)');
        return (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      });
      expect(next).not.toBe(readerPid);
    } finally {
      await pool.end();
    }
  });
});
