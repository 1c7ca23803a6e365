// TLS to Postgres against a real server that requires it (ssl=on, only `hostssl` lines in pg_hba.conf), with a CA and
// server certificate the test makes: verify-full with the right CA connects (every session of a worker process is
// encrypted), another CA or a host name the certificate does not name is refused with a message that says which, and
// `disable` fails with a message naming the setting to change.
import { rm } from 'node:fs/promises';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import { waitFor } from './support/in-process-worker.js';
import { serverCertificates, type TestCertificates } from './support/tls-certificates.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

let certificates: TestCertificates | undefined;
let certificateDir = '';
const env = useTestEnvironment({
  ownPostgres: async () => {
    const server = await serverCertificates('db-tls-');
    certificateDir = server.dir;
    certificates = server.certificates;
    return {
      settings: server.settings,
      hba: ['hostssl all all 127.0.0.1/32 scram-sha-256', 'hostssl all all ::1/128 scram-sha-256'],
      urlParams: 'sslmode=require',
    };
  },
});
const spawned: WorkerProcess[] = [];
afterEach(async () => killAll(spawned.splice(0)));
afterAll(async () => {
  await killAll(spawned);
  if (certificateDir) await rm(certificateDir, { recursive: true, force: true });
});

/** The test database's URL through another host name and without the harness's sslmode. */
function urlFor(host: string): string {
  const url = new URL(env.databaseUrl);
  url.hostname = host;
  url.search = '';
  return url.toString();
}

function tls(mode: string, ca?: string): Record<string, string> {
  return { DATABASE_SSL_MODE: mode, ...(ca ? { DATABASE_SSL_ROOT_CERT: ca } : {}) };
}

describe('TLS to Postgres', () => {
  it('verify-full with the right CA: a worker process runs a job, and every one of its sessions is encrypted', async () => {
    const worker = spawnWorker(env, {
      // The rescuer's rounds keep a pool connection open (outcomes go through the lease session).
      env: { DATABASE_URL: urlFor('localhost'), ...tls('verify-full', certificates!.caCert), WORKER_POLL_INTERVAL_MS: '200', WORKER_RESCUE_INTERVAL_MS: '200' },
    });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
    const { job } = await submitJob(env.pool, { kind: 'noop', payload: { sleepMs: 0 } });
    await waitFor(async () => {
      const { rows } = await env.pool.query<{ state: string }>('SELECT state FROM jobs WHERE id = $1', [job.id]);
      return rows[0]?.state === 'succeeded' || undefined;
    });
    const { rows } = await env.pool.query<{ application_name: string; ssl: boolean }>(
      `SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
       WHERE a.datname = current_database() AND a.application_name IN ('bulk-import-worker', 'bulk-import-claim', 'bulk-import-lease', 'bulk-import-listener')`,
    );
    expect(new Set(rows.map((row) => row.application_name))).toEqual(
      new Set(['bulk-import-worker', 'bulk-import-claim', 'bulk-import-lease', 'bulk-import-listener']),
    );
    expect(rows.every((row) => row.ssl)).toBe(true);
    // The CLI, the migrations and the health check's database check use the same settings.
    const cli = await runCli(env, ['migrate', '--json'], { DATABASE_URL: urlFor('localhost'), ...tls('verify-full', certificates!.caCert) });
    expect(cli.stderr).toBe('');
    expect(JSON.parse(cli.stdout)).toMatchObject({ direction: 'up', migrations: [] });
  });

  it('sslmode in the URL works as well (require: encrypted, certificate not checked)', async () => {
    const cli = await runCli(env, ['jobs', '--json'], { DATABASE_URL: `${urlFor('localhost')}?sslmode=require` });
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
  });

  it('verify-full with another CA is refused, naming the CA setting; the worker exits 78 at start', async () => {
    const cli = await runCli(env, ['jobs'], { DATABASE_URL: urlFor('localhost'), ...tls('verify-full', certificates!.otherCaCert) });
    expect(cli.code).toBe(78);
    expect(cli.stderr).toMatch(/TLS: the server's certificate is not signed by a CA in DATABASE_SSL_ROOT_CERT/);
    const worker = spawnWorker(env, { env: { DATABASE_URL: urlFor('localhost'), ...tls('verify-full', certificates!.otherCaCert) } });
    spawned.push(worker);
    expect((await worker.exited).code).toBe(78);
    expect(worker.stderr.join('\n')).toMatch(/not signed by a CA in DATABASE_SSL_ROOT_CERT/);
  });

  it('verify-full to a host name the certificate does not name is refused; verify-ca accepts it', async () => {
    const cli = await runCli(env, ['jobs'], { DATABASE_URL: urlFor('127.0.0.1'), ...tls('verify-full', certificates!.caCert) });
    expect(cli.code).toBe(78);
    expect(cli.stderr).toMatch(/TLS: the server's certificate does not name the host connected to/);
    const ca = await runCli(env, ['jobs', '--json'], { DATABASE_URL: urlFor('127.0.0.1'), ...tls('verify-ca', certificates!.caCert) });
    expect(ca.stderr).toBe('');
    expect(ca.code).toBe(0);
  });

  it('disable against a server that requires TLS fails with a message naming the setting to change', async () => {
    const cli = await runCli(env, ['jobs'], { DATABASE_URL: urlFor('localhost'), ...tls('disable') });
    expect(cli.code).toBe(78);
    expect(cli.stderr).toMatch(/no encryption.*the server requires TLS; set DATABASE_SSL_MODE=verify-full/);
  });

  it('a CA file that does not exist is a configuration error naming the variable', async () => {
    const cli = await runCli(env, ['jobs'], { DATABASE_URL: urlFor('localhost'), ...tls('verify-full', '/nonexistent/ca.pem') });
    expect(cli.code).toBe(78);
    expect(cli.stderr).toMatch(/DATABASE_SSL_ROOT_CERT=\/nonexistent\/ca.pem cannot be read \(ENOENT\)/);
  });
});
