// How this process connects to Postgres: the URL, TLS (sslmode and the CA bundle) and optional IAM authentication.
// Every session the project opens (pool, claim, LISTEN, gauges, migrations, health check) gets its settings from
// connectionConfig() here, so TLS and IAM apply to all of them or to none.
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { DatabaseConfigurationError } from './database-status.js';
import type { IamTokenSource } from './iam-token.js';

/**
 * libpq's names. `disable`: no TLS. `require`: TLS without checking the certificate (protects against eavesdropping
 * only), except with a CA file (sslrootcert / DATABASE_SSL_ROOT_CERT), where it works as `verify-ca`, as in libpq.
 * `verify-ca`: the certificate must chain to the CA bundle. `verify-full`: and name the host connected to.
 */
export const SSL_MODES = ['disable', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

export interface DatabaseConnection {
  /** The Postgres URL as configured (it may hold the password: never log it). */
  url: string;
  sslMode: SslMode;
  /** PEM file of the CA(s) that sign the server's certificate; unset means Node's bundled public CAs. */
  sslRootCert?: string | undefined;
  /** IAM database authentication: every new connection's password is a fresh token. */
  iamToken?: IamTokenSource | undefined;
}

/** A URL alone (tests, local runs: TLS as its sslmode says, default off) or full settings. */
export type DatabaseTarget = string | DatabaseConnection;

export function toDatabaseConnection(target: DatabaseTarget): DatabaseConnection {
  if (typeof target !== 'string') return target;
  const url = parseDatabaseUrl(target);
  const mode = url.searchParams.get('sslmode');
  if (mode !== null && !isSslMode(mode)) {
    throw new DatabaseConfigurationError(`DATABASE_URL has sslmode=${JSON.stringify(mode)}: expected one of ${SSL_MODES.join(', ')}`);
  }
  return {
    url: target,
    sslMode: mode ?? 'disable',
    sslRootCert: url.searchParams.get('sslrootcert') ?? undefined,
  };
}

export function isSslMode(value: string): value is SslMode {
  return (SSL_MODES as readonly string[]).includes(value);
}

/** Parses a Postgres URL; the error never repeats the URL (it may hold a password). */
export function parseDatabaseUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new DatabaseConfigurationError(
      'DATABASE_URL is not a valid URL (its value is not shown: it may hold a password). Expected ' +
        'postgres://user:password@host:5432/dbname; characters such as / @ : % # ? in the user or password must be ' +
        'percent-encoded (/ as %2F, @ as %40, : as %3A, % as %25)',
    );
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new DatabaseConfigurationError(`DATABASE_URL must start with postgres:// or postgresql://, not ${url.protocol}//`);
  }
  const problem = databaseUrlProblem(url);
  if (problem) throw new DatabaseConfigurationError(`DATABASE_URL ${problem}`);
  return url;
}

/**
 * The query parameters a DATABASE_URL may carry. Everything else is refused: pg would let any parameter of the URL
 * override the setting given beside it (`ssl=0` turns TLS off under DATABASE_SSL_MODE=verify-full, `options` or
 * `application_name` replace the session settings and names every session sets at connect), so the URL is never
 * handed to pg as a connection string, and a parameter this code does not read is an error rather than ignored.
 * `host`: a Unix-socket directory (an absolute path), as in libpq.
 */
export const DATABASE_URL_PARAMETERS = ['sslmode', 'sslrootcert', 'host'] as const;

/**
 * What is wrong with a Postgres URL's parts (its query parameters, a percent-escape), as the end of a sentence that
 * starts with the variable's name; undefined when nothing is. Never repeats the URL or a value from it: a parameter
 * is named only when its name looks like a keyword (a mistyped URL can put part of the password there).
 */
export function databaseUrlProblem(url: URL): string | undefined {
  for (const part of [url.username, url.password, url.hostname, url.pathname]) {
    try {
      decodeURIComponent(part);
    } catch {
      return 'has a malformed percent-escape (a literal % is written %25; its value is not shown: it may hold a password)';
    }
  }
  const allowed = DATABASE_URL_PARAMETERS as readonly string[];
  const seen = new Set<string>();
  for (const [name, value] of url.searchParams) {
    const shown = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(name) ? `the query parameter ${JSON.stringify(name)}` : 'a query parameter that is not a keyword (not shown: it may hold part of a password)';
    if (!allowed.includes(name)) {
      return (
        `has ${shown}, which is not accepted: a URL may carry only ${allowed.join(', ')}. TLS is set with ` +
        'DATABASE_SSL_MODE and DATABASE_SSL_ROOT_CERT (or sslmode / sslrootcert in the URL); the session settings and ' +
        'names are the worker\'s own (the URL is not shown: it may hold a password)'
      );
    }
    if (seen.has(name)) return `has ${shown} more than once (the URL is not shown: it may hold a password)`;
    seen.add(name);
    if (name === 'host' && !value.startsWith('/')) {
      return 'has a host parameter that is not an absolute path: it may only name a Unix-socket directory; give a network host in the URL\'s host part';
    }
  }
  return undefined;
}

const caCache = new Map<string, string>();

function readCa(path: string): string {
  let pem = caCache.get(path);
  if (pem === undefined) {
    try {
      pem = readFileSync(path, 'utf8');
    } catch (error) {
      throw new DatabaseConfigurationError(
        `DATABASE_SSL_ROOT_CERT=${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'}): expected a PEM file of CA certificates`,
      );
    }
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
      throw new DatabaseConfigurationError(`DATABASE_SSL_ROOT_CERT=${path} holds no PEM certificate`);
    }
    caCache.set(path, pem);
  }
  return pem;
}

/** The TLS options pg needs for a mode, or false for `disable`. */
export function tlsOptions(connection: DatabaseConnection): pg.ClientConfig['ssl'] {
  const ca = connection.sslRootCert ? readCa(connection.sslRootCert) : undefined;
  switch (connection.sslMode) {
    case 'disable':
      return false;
    case 'require':
      // With a CA file, libpq's `require` is `verify-ca`: that CA is not ignored.
      return ca ? { rejectUnauthorized: true, ca, checkServerIdentity: () => undefined } : { rejectUnauthorized: false };
    case 'verify-ca':
      // Chain checked, host name not: for servers reached through an address their certificate does not name.
      return { rejectUnauthorized: true, ca, checkServerIdentity: () => undefined };
    case 'verify-full':
      return { rejectUnauthorized: true, ca };
  }
}

/**
 * TCP keepalive of every session: probes after this long without traffic, then (Node sets these) every second, ten
 * times. A connection whose server vanished without a word (a failover that takes the old primary's address away, a
 * network path that drops packets) is then closed by the kernel within about 20 s, whether it sits idle in a pool or
 * waits for a statement's answer, instead of after the system default of two hours; a server that is only slow
 * answers the probes. A statement sent into such a connection is retransmitted for up to about 15 minutes instead
 * (keepalive waits while data is unacknowledged): what must not wait that long has a client-side timeout of its own
 * (the claim and lease sessions, runner/worker.ts), and the main pool's statements are watched (silent-connections.ts).
 */
export const TCP_KEEPALIVE_IDLE_MS = 10_000;

/**
 * How long a new session may take to connect and log in: a server that accepts the connection and says nothing (a
 * failover that took the address away, a proxy without a backend) fails the connect instead of holding it until TCP
 * gives up. Every session of the project: the pools, the LISTEN session, the migrations.
 */
export const CONNECT_TIMEOUT_MS = 15_000;

/**
 * Options for a pg Client or Pool. The URL is given to pg as separate fields, never as a connection string: pg lets
 * every parameter of a connection string override the same setting given beside it (`ssl`, `options`,
 * `application_name`, the password...), so the URL's parameters are checked against DATABASE_URL_PARAMETERS instead,
 * and its TLS parameters applied here (pg would read `sslmode=require` as verify-full and open `sslrootcert` on every
 * connect).
 */
export function connectionConfig<T extends pg.ClientConfig>(target: DatabaseTarget, extra: T = {} as T): T {
  const connection = toDatabaseConnection(target);
  const url = parseDatabaseUrl(connection.url);
  const config: T = { keepAlive: true, keepAliveInitialDelayMillis: TCP_KEEPALIVE_IDLE_MS, ...extra, ssl: tlsOptions(connection) };
  delete config.connectionString;
  // Parts left out are left to pg's defaults, as before: localhost, 5432, the user as database.
  const host = url.searchParams.get('host') ?? decodeURIComponent(url.hostname.replace(/^\[(.*)\]$/, '$1'));
  if (host) config.host = host;
  if (url.port) config.port = Number(url.port);
  if (url.username) config.user = decodeURIComponent(url.username);
  if (url.password) config.password = decodeURIComponent(url.password);
  const database = decodeURIComponent(url.pathname.slice(1));
  if (database) config.database = database;
  if (connection.iamToken) {
    const tokens = connection.iamToken;
    config.port ??= 5432;
    config.database ??= config.user;
    // pg calls this for every new connection: each gets a token that is valid when it logs in.
    config.password = () => tokens.token();
  }
  return config;
}

/** The password of a URL (decoded), so messages can be scrubbed of it; undefined when there is none. */
export function urlSecrets(target: DatabaseTarget | undefined): string[] {
  if (!target) return [];
  const raw = typeof target === 'string' ? target : target.url;
  const secrets = new Set<string>();
  try {
    const url = new URL(raw);
    if (url.password) {
      secrets.add(url.password);
      try {
        secrets.add(decodeURIComponent(url.password));
      } catch {
        // a malformed escape: the raw form is enough
      }
    }
  } catch {
    // Unparseable: everything between the scheme and the last @ may be credentials.
    const match = /^[a-z]+:\/\/(.*)@/i.exec(raw);
    if (match?.[1]) secrets.add(match[1]);
  }
  secrets.add(raw);
  return [...secrets].filter((secret) => secret.length >= 3);
}
