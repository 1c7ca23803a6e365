// A worker that can never work must not look healthy: with a wrong password, a refused port or a database without
// the migrations it exits at start with one clear line (and the code the deployment's health check and circuit
// breaker act on); a configuration error that appears while it runs makes the health check fail, unlike an outage.
// No password, in any spelling, reaches a log line, an error or the health check's output.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import { recordingLogger } from './support/recording-logger.js';
import { waitFor } from './support/in-process-worker.js';
import { freePort } from '../worker/dev/free-port.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
let dir = '';
/** A password with every character that breaks a URL when it is not encoded. */
const NASTY_PASSWORD = 's3cr/et@pa:ss%w0rd';
/** Roles are cluster-wide: a name of this file's own run. */
const NASTY_USER = `nasty_${Math.random().toString(36).slice(2, 8)}`;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'db-startup-'));
  await env.pool.query(`CREATE ROLE ${NASTY_USER} LOGIN PASSWORD '${NASTY_PASSWORD}'`);
  await env.pool.query(`GRANT ALL ON ALL TABLES IN SCHEMA public TO ${NASTY_USER}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ${NASTY_USER}`);
});
afterEach(async () => killAll(spawned.splice(0)));
afterAll(async () => {
  await killAll(spawned);
  await env.pool.query(`DROP OWNED BY ${NASTY_USER}; DROP ROLE IF EXISTS ${NASTY_USER}`).catch(() => {});
  await env.pool.query('DROP DATABASE IF EXISTS startup_unmigrated').catch(() => {});
  await env.pool.query('DROP DATABASE IF EXISTS startup_behind').catch(() => {});
  await rm(dir, { recursive: true, force: true });
});

/** The test database's URL with another user, password, port or database. */
function urlWith(change: { user?: string; password?: string; port?: number; database?: string }): string {
  const url = new URL(env.databaseUrl);
  if (change.user !== undefined) url.username = change.user;
  if (change.password !== undefined) url.password = encodeURIComponent(change.password);
  if (change.port !== undefined) url.port = String(change.port);
  if (change.database !== undefined) url.pathname = `/${change.database}`;
  return url.toString();
}

/** Every way a password could appear in output: raw, percent-encoded, and each part around a URL delimiter. */
function expectNoSecret(text: string, password = NASTY_PASSWORD): void {
  expect(text).not.toContain(password);
  expect(text).not.toContain(encodeURIComponent(password));
  expect(text).not.toContain('s3cr/et');
  expect(text).not.toContain('pa:ss');
  expect(text).not.toContain('ss%w0rd');
}

function healthcheck(extraEnv: Record<string, string>, args: string[] = []): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'scripts/healthcheck.ts', ...args],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env.processEnv, ...extraEnv }, timeout: 30_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout: stdout + stderr }),
    );
  });
}

async function startFailing(extraEnv: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const worker = spawnWorker(env, { env: { LOG_LEVEL: 'info', ...extraEnv } });
  spawned.push(worker);
  const { code } = await worker.exited;
  return { code, output: [...worker.logs.map((line) => JSON.stringify(line)), ...worker.stderr].join('\n') };
}

describe('worker start-up against a database it cannot use', () => {
  it('a wrong password (holding / @ : %): exit 78, one line naming the cause, no password anywhere', async () => {
    const { code, output } = await startFailing({ DATABASE_URL: urlWith({ user: NASTY_USER, password: 'wrong/p@ss:w%rd' }) });
    expect(code).toBe(78);
    expect(output).toMatch(/password authentication failed/);
    expect(output.trim().split('\n')).toHaveLength(1);
    expectNoSecret(output, 'wrong/p@ss:w%rd');
    expect(output).not.toContain('wrong');
  });

  it('an unencoded / in the password: exit 78, how to encode it, and the password is not printed', async () => {
    const raw = env.databaseUrl.replace(/\/\/[^@]*@/, `//${NASTY_USER}:${NASTY_PASSWORD}@`);
    const { code, output } = await startFailing({ DATABASE_URL: raw });
    expect(code).toBe(78);
    expect(output).toMatch(/percent-encoded/);
    expectNoSecret(output);
  });

  it('a refused port: waits DATABASE_STARTUP_TIMEOUT_MS, then exit 69 with one line', async () => {
    const { code, output } = await startFailing({
      DATABASE_URL: urlWith({ port: await freePort() }),
      DATABASE_STARTUP_TIMEOUT_MS: '1500',
    });
    expect(code).toBe(69);
    expect(output).toMatch(/did not answer within 2 s.*ECONNREFUSED/);
  });

  it('a database without the migrations: exit 78 telling to run bulk-import migrate', async () => {
    await env.pool.query('DROP DATABASE IF EXISTS startup_unmigrated');
    await env.pool.query('CREATE DATABASE startup_unmigrated');
    const { code, output } = await startFailing({ DATABASE_URL: urlWith({ database: 'startup_unmigrated' }) });
    expect(code).toBe(78);
    expect(output).toMatch(/no bulk-import schema.*bulk-import migrate/);
    const check = await healthcheck({ DATABASE_URL: urlWith({ database: 'startup_unmigrated' }), HEALTH_HEARTBEAT_FILE: join(dir, 'none') }, []);
    expect(check.code).toBe(2);
  });

  it('a schema one migration behind: exit 78 naming the missing migration', async () => {
    await env.pool.query('DROP DATABASE IF EXISTS startup_behind');
    await env.pool.query(`CREATE DATABASE startup_behind TEMPLATE ${inject('templateDatabase')}`);
    const behind = new pg.Client({ connectionString: urlWith({ database: 'startup_behind' }) });
    await behind.connect();
    const { rows } = await behind.query<{ name: string }>('SELECT name FROM pgmigrations ORDER BY name DESC LIMIT 1');
    await behind.query('DELETE FROM pgmigrations WHERE name = $1', [rows[0]!.name]);
    await behind.end();
    const { code, output } = await startFailing({ DATABASE_URL: urlWith({ database: 'startup_behind' }) });
    expect(code).toBe(78);
    expect(output).toContain(`schema is behind this build: 1 migration(s) not applied (first ${rows[0]!.name})`);
  });

  it('the CLI and the health check print no password either', async () => {
    const url = urlWith({ user: NASTY_USER, password: 'wrong/p@ss:w%rd' });
    const cli = await runCli(env, ['jobs'], { DATABASE_URL: url });
    expect(cli.code).toBe(78);
    expect(cli.stderr).toMatch(/password authentication failed/);
    expectNoSecret(cli.stdout + cli.stderr, 'wrong/p@ss:w%rd');
    const check = await healthcheck({ DATABASE_URL: url, HEALTH_HEARTBEAT_FILE: join(dir, 'none') }, ['--check-database']);
    expectNoSecret(check.stdout, 'wrong/p@ss:w%rd');
    // and with the right password, percent-encoded in the URL, everything works
    const good = await runCli(env, ['jobs', '--json'], { DATABASE_URL: urlWith({ user: NASTY_USER, password: NASTY_PASSWORD }) });
    expect(good.stderr).toBe('');
    expect(good.code).toBe(0);
  });
});

describe('health while running', () => {
  it('a configuration error that appears at run time (the jobs table gone) fails the health check; fixed, it passes', async () => {
    const file = join(dir, 'misconfigured.heartbeat');
    const health = { HEALTH_HEARTBEAT_FILE: file, HEALTH_MAX_AGE_MS: '10000' };
    const worker = spawnWorker(env, { env: { ...health, WORKER_POLL_INTERVAL_MS: '100', LOG_LEVEL: 'info' } });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
    await waitFor(() => stat(file).then(() => true, () => false));
    expect((await healthcheck(health)).code).toBe(0);
    await env.pool.query('ALTER TABLE jobs RENAME TO jobs_moved_away');
    try {
      await worker.waitForLog((line) => line.msg.startsWith('database refuses this worker'));
      const check = await waitFor(async () => {
        const result = await healthcheck(health);
        return result.code === 4 ? result : undefined;
      });
      expect(check.stdout).toMatch(/^unhealthy: the database refuses this worker since .*jobs.*does not exist/);
    } finally {
      await env.pool.query('ALTER TABLE jobs_moved_away RENAME TO jobs');
    }
    await worker.waitForLog((line) => line.msg === 'database is back');
    await waitFor(async () => ((await healthcheck(health)).code === 0 ? true : undefined));
    expect(worker.child.exitCode).toBeNull();
  });
});

describe('log redaction', () => {
  it('fields that can carry a credential are replaced before a line is written', async () => {
    const { log, text: written } = recordingLogger('info');
    const url = urlWith({ user: NASTY_USER, password: NASTY_PASSWORD });
    log.info({ databaseUrl: url, config: { databaseUrl: url }, env: { DATABASE_URL: url }, password: NASTY_PASSWORD }, 'settings');
    log.info({ connection: { connectionString: url, password: NASTY_PASSWORD } }, 'connection');
    const text = written();
    expect(text).toContain('[redacted]');
    expectNoSecret(text);
  });
});
