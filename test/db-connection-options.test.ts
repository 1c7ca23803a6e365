// What a DATABASE_URL may carry besides user, password, host, port and database. pg lets every query parameter of a
// connection string override the setting given beside it, so a URL ending in `?ssl=0` would turn TLS off under
// DATABASE_SSL_MODE=verify-full, and `?options=…` would replace the settings every session sets at connect. The URL is
// therefore given to pg as fields, and any parameter but sslmode, sslrootcert and a socket directory as host is a
// configuration error (exit 78) that names the parameter and never the password. And `require` with a root
// certificate is `verify-ca`, as in libpq: the CA is not ignored.
// The server here accepts TLS and plain TCP alike (a downgrade would connect), on loopback and on a Unix socket.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, requireDatabase } from '../worker/config.js';
import { connectionConfig } from '../worker/db/connection.js';
import { DatabaseConfigurationError } from '../worker/db/database-status.js';
import { createPool } from '../worker/db/pool.js';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import { serverCertificates, type TestCertificates } from './support/tls-certificates.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

let certificates: TestCertificates | undefined;
let certificateDir = '';
let socketDir = '';
const env = useTestEnvironment({
  ownPostgres: async () => {
    const server = await serverCertificates('db-conn-opts-');
    certificateDir = server.dir;
    certificates = server.certificates;
    // The server (the `postgres` user when the tests run as root) creates its socket here.
    socketDir = await mkdtemp(join(tmpdir(), 'db-sock-'));
    await chmod(socketDir, 0o777);
    return {
      settings: { ...server.settings, unix_socket_directories: socketDir },
      // `host` lines: plain TCP is accepted too, so a client talked out of TLS would get in.
      hba: ['host all all 127.0.0.1/32 scram-sha-256', 'host all all ::1/128 scram-sha-256', 'local all all scram-sha-256'],
    };
  },
});

/** A password with every character that breaks a URL when it is not encoded. */
const PASSWORD = 'p4ss/w@rd:with%sp ce?#';
/** Roles are cluster-wide, the server is this file's own: a fixed name. */
const ROLE = 'url_options_user';
const spawned: WorkerProcess[] = [];

beforeAll(async () => {
  await env.pool.query(`CREATE ROLE ${ROLE} LOGIN PASSWORD '${PASSWORD}'`);
  await env.pool.query(`GRANT ALL ON ALL TABLES IN SCHEMA public TO ${ROLE}; GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ${ROLE}`);
});
afterEach(async () => killAll(spawned.splice(0)));
afterAll(async () => {
  await killAll(spawned);
  if (certificateDir) await rm(certificateDir, { recursive: true, force: true });
  if (socketDir) await rm(socketDir, { recursive: true, force: true });
});

/** The test database's URL as ROLE (password percent-encoded), on `host`, with `query` as its query string. */
function urlFor(host: string, query = ''): string {
  const url = new URL(env.databaseUrl);
  url.hostname = host;
  url.username = ROLE;
  url.password = encodeURIComponent(PASSWORD);
  url.search = query;
  return url.toString();
}

/** No spelling of the password (raw, encoded, or a piece of it between URL delimiters) in `text`. */
function expectNoPassword(text: string): void {
  expect(text).not.toContain(PASSWORD);
  expect(text).not.toContain(encodeURIComponent(PASSWORD));
  for (const piece of ['p4ss', 'w@rd', 'with%sp', 'with%25sp']) expect(text).not.toContain(piece);
}

function refusal(environment: Record<string, string>): ConfigError {
  try {
    loadConfig(environment);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected loadConfig to refuse the environment');
}

const verifyFull = (ca: string) => ({ DATABASE_SSL_MODE: 'verify-full', DATABASE_SSL_ROOT_CERT: ca });

describe('query parameters of DATABASE_URL', () => {
  it.each([
    ['ssl=0', 'ssl'],
    ['ssl=false', 'ssl'],
    ['ssl=no-verify', 'ssl'],
    ['options=-c%20search_path%3Dapp', 'options'],
    ['application_name=other', 'application_name'],
    ['statement_timeout=0', 'statement_timeout'],
    ['uselibpqcompat=true&sslmode=require', 'uselibpqcompat'],
    ['SSLMODE=disable', 'SSLMODE'],
    ['sslcert=/tmp/client.crt', 'sslcert'],
    ['password=other', 'password'],
  ])('?%s is refused at configuration load, naming %s and not the password', (query, name) => {
    const error = refusal({ DATABASE_URL: urlFor('db.example.com', query), ...verifyFull('/etc/ca.pem') });
    expect(error.variable).toBe('DATABASE_URL');
    expect(error.message).toContain(`the query parameter "${name}"`);
    expect(error.message).toContain('only sslmode, sslrootcert, host');
    expectNoPassword(error.message);
  });

  it('refuses a parameter given twice (two sslmodes: which one would win?), and a host that is not a socket directory', () => {
    expect(refusal({ DATABASE_URL: urlFor('db.example.com', 'sslmode=verify-full&sslmode=disable') }).message).toMatch(
      /the query parameter "sslmode" more than once/,
    );
    expect(refusal({ DATABASE_URL: urlFor('db.example.com', 'host=evil.example.com') }).message).toMatch(/host parameter that is not an absolute path/);
  });

  it('a password cut by an unencoded ? does not reach the message through the parameter name', () => {
    const error = refusal({ DATABASE_URL: 'postgres://user:12?s3cretpart@db/app' });
    expect(error.message).toMatch(/a query parameter that is not a keyword/);
    expect(error.message).not.toContain('s3cretpart');
  });

  it('code that connects without loadConfig refuses the same parameters (no session with them is opened)', () => {
    expect(() => createPool(urlFor('localhost', 'options=-c%20idle_in_transaction_session_timeout%3D0'))).toThrow(DatabaseConfigurationError);
    expect(() => connectionConfig({ url: urlFor('localhost', 'ssl=0'), sslMode: 'verify-full', sslRootCert: certificates!.caCert })).toThrow(
      /the query parameter "ssl"/,
    );
  });

  it('?ssl=0 under DATABASE_SSL_MODE=verify-full: the CLI and the worker exit 78 instead of connecting in plain text', async () => {
    const variables = { DATABASE_URL: urlFor('localhost', 'ssl=0'), ...verifyFull(certificates!.caCert) };
    const cli = await runCli(env, ['jobs', '--json'], variables);
    expect(cli.code).toBe(78);
    expect(cli.stderr).toMatch(/DATABASE_URL has the query parameter "ssl", which is not accepted/);
    expectNoPassword(cli.stdout + cli.stderr);
    const worker = spawnWorker(env, { env: variables });
    spawned.push(worker);
    expect((await worker.exited).code).toBe(78);
    const output = [...worker.logs.map((line) => JSON.stringify(line)), ...worker.stderr].join('\n');
    expect(output).toMatch(/the query parameter \\?"ssl\\?"/);
    expectNoPassword(output);
  });

  it('?options=… cannot replace the session settings: refused with exit 78', async () => {
    const cli = await runCli(env, ['jobs', '--json'], { DATABASE_URL: urlFor('localhost', 'options=-c%20search_path%3Dapp'), ...verifyFull(certificates!.caCert) });
    expect(cli.code).toBe(78);
    expect(cli.stderr).toMatch(/DATABASE_URL has the query parameter "options", which is not accepted/);
    expectNoPassword(cli.stdout + cli.stderr);
  });
});

describe('the URL forms that work', () => {
  it('a percent-encoded password with sslmode and sslrootcert in the URL: TLS, the role, and every session setting', async () => {
    const url = urlFor('localhost', `sslmode=verify-full&sslrootcert=${encodeURIComponent(certificates!.caCert)}`);
    const cli = await runCli(env, ['jobs', '--json'], { DATABASE_URL: url });
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
    const pool = createPool(requireDatabase(loadConfig({ DATABASE_URL: url })), { max: 1, applicationName: 'bulk-import-claim', statementTimeoutMs: 4321 });
    try {
      const { rows } = await pool.query<Record<string, string | boolean>>(
        `SELECT current_user AS role, s.ssl, current_setting('application_name') AS app,
                current_setting('idle_in_transaction_session_timeout') AS idle, current_setting('statement_timeout') AS statement,
                current_setting('client_connection_check_interval') AS check_interval
           FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()`,
      );
      expect(rows[0]).toEqual({ role: ROLE, ssl: true, app: 'bulk-import-claim', idle: '2min', statement: '4321ms', check_interval: '1s' });
    } finally {
      await pool.end();
    }
  });

  it('the password in plain TCP (DATABASE_SSL_MODE=disable, or sslmode=disable in the URL)', async () => {
    const forms: Array<Record<string, string>> = [{ DATABASE_URL: urlFor('127.0.0.1'), DATABASE_SSL_MODE: 'disable' }, { DATABASE_URL: urlFor('127.0.0.1', 'sslmode=disable') }];
    for (const variables of forms) {
      const cli = await runCli(env, ['jobs', '--json'], variables);
      expect(cli.stderr).toBe('');
      expect(cli.code).toBe(0);
    }
  });

  it('a Unix socket: the directory percent-encoded as the host, or as ?host=', async () => {
    const port = new URL(env.databaseUrl).port;
    const database = new URL(env.databaseUrl).pathname;
    const credentials = `${ROLE}:${encodeURIComponent(PASSWORD)}`;
    for (const url of [
      `postgres://${credentials}@${encodeURIComponent(socketDir)}:${port}${database}`,
      `postgres://${credentials}@localhost:${port}${database}?host=${encodeURIComponent(socketDir)}`,
    ]) {
      const cli = await runCli(env, ['jobs', '--json'], { DATABASE_URL: url, DATABASE_SSL_MODE: 'disable' });
      expect(cli.stderr).toBe('');
      expect(cli.code).toBe(0);
    }
  });
});

describe('require with a root certificate is verify-ca', () => {
  it('a server whose certificate that CA did not sign is refused (in the URL or in DATABASE_SSL_ROOT_CERT)', async () => {
    const forms: Array<Record<string, string>> = [
      { DATABASE_URL: urlFor('localhost'), DATABASE_SSL_MODE: 'require', DATABASE_SSL_ROOT_CERT: certificates!.otherCaCert },
      { DATABASE_URL: urlFor('localhost', `sslmode=require&sslrootcert=${encodeURIComponent(certificates!.otherCaCert)}`) },
    ];
    for (const variables of forms) {
      const cli = await runCli(env, ['jobs', '--json'], variables);
      expect(cli.code).toBe(78);
      expect(cli.stderr).toMatch(/TLS: the server's certificate is not signed by a CA in DATABASE_SSL_ROOT_CERT/);
      expectNoPassword(cli.stdout + cli.stderr);
    }
  });

  it('a server signed by that CA is accepted, also through a host name its certificate does not name', async () => {
    for (const host of ['localhost', '127.0.0.1']) {
      const cli = await runCli(env, ['jobs', '--json'], { DATABASE_URL: urlFor(host), DATABASE_SSL_MODE: 'require', DATABASE_SSL_ROOT_CERT: certificates!.caCert });
      expect(cli.stderr).toBe('');
      expect(cli.code).toBe(0);
    }
  });

  it('without a root certificate, require still encrypts without checking the certificate', async () => {
    const cli = await runCli(env, ['jobs', '--json'], { DATABASE_URL: urlFor('127.0.0.1'), DATABASE_SSL_MODE: 'require' });
    expect(cli.stderr).toBe('');
    expect(cli.code).toBe(0);
  });
});
