// What the worker knows about its database right now, from the outcome of the statements it runs: reachable, away
// for a while (a restart, a failover, the network), or refusing it for a reason that waiting will not fix (a wrong
// password, a missing table). Every session reports here, so an outage is logged once when it starts and once when it
// ends instead of once per poll, and the health heartbeat can tell ECS which of the three it is.
import { EventEmitter } from 'node:events';
import type { Logger } from '../logger.js';
import { describeDatabaseError } from './database-errors.js';
import { sqlState } from './sql-state.js';

export type DatabaseHealth =
  | { state: 'ok' }
  /** Connections fail or break; retrying is right (restart, failover, network, too many connections). */
  | { state: 'unavailable'; since: string; error: string }
  /** The server answers but refuses us in a way only a change of configuration or a deploy fixes. */
  | { state: 'misconfigured'; since: string; error: string };

export interface DatabaseStatusEvents {
  change: [health: DatabaseHealth];
}

/**
 * SQLSTATEs that say "the server is there but will not work with this worker as configured": authentication and
 * authorization failures, an unknown database, a relation or column that does not exist (migrations not applied).
 */
const CONFIGURATION_STATES = new Set(['28000', '28P01', '3D000', '42P01', '42703', '42883', '3F000', '42501']);
/**
 * The refusals of a login: authentication (a password rotated under a running worker), an unknown database. Sessions
 * already open go on working, so only a new login proves such a refusal is over.
 */
const LOGIN_STATES = new Set(['28000', '28P01', '3D000']);

/**
 * A write refused as read-only: after a switchover (Aurora, a Multi-AZ DB cluster, blue/green) a session opened before
 * it may be on the demoted instance, now a reader. It is an outage of this session: discarded (pool.ts), the next one
 * resolves the endpoint again and finds the writer; a run that met it waits, its attempt not counted (outage.ts).
 */
export const READ_ONLY_TRANSACTION = '25006';
/** Too many connections: the server is up for others, only this client gets no session. */
const TOO_MANY_CONNECTIONS = '53300';
/**
 * SQLSTATEs of a server that is away or takes no new sessions for now: class 08 (connection exceptions) and these —
 * admin/crash shutdown, cannot connect now (starting up, recovery), too many connections. Not 57014 (a statement
 * canceled by its own timeout), which is about the statement.
 */
const UNAVAILABLE_STATES = new Set(['57P01', '57P02', '57P03', TOO_MANY_CONNECTIONS, READ_ONLY_TRANSACTION]);
/** pg-pool's own wait for a client: this process's pool may simply be full. */
const POOL_WAIT_TIMEOUT = /timeout exceeded when trying to connect/i;

const NETWORK_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE',
]);

const UNAVAILABLE_MESSAGES =
  /Connection terminated|timeout exceeded when trying to connect|connection timeout|timeout expired|Query read timeout|not queryable|Client was closed|Connection ended|the database system is (starting up|shutting down|in recovery)/i;

/** Whether an error from pg means the database is unreachable or went away (not a bad statement, not a bad password). */
export function isConnectionError(error: unknown): boolean {
  const state = sqlState(error);
  if (state) return state.startsWith('08') || UNAVAILABLE_STATES.has(state);
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && NETWORK_CODES.has(code)) return true;
  const message = error instanceof Error ? error.message : '';
  return UNAVAILABLE_MESSAGES.test(message);
}

/**
 * Whether a connection error means the database itself is away (a restart, a failover, the network), so that nobody
 * can write to it meanwhile; not when the server is up for others and only this process gets no session (too many
 * connections, its own pool full).
 */
export function isDatabaseAway(error: unknown): boolean {
  if (!isConnectionError(error) || sqlState(error) === TOO_MANY_CONNECTIONS) return false;
  return !POOL_WAIT_TIMEOUT.test(error instanceof Error ? error.message : '');
}

/** Whether an error means the configuration (credentials, database name, schema, TLS setting) is wrong. */
/** Whether the server refused a login (a wrong password or user, an unknown database). */
export function isLoginRefusal(error: unknown): boolean {
  const state = sqlState(error);
  return state !== undefined && LOGIN_STATES.has(state);
}

export function isConfigurationError(error: unknown): boolean {
  const state = sqlState(error);
  if (state && CONFIGURATION_STATES.has(state)) return true;
  if (error instanceof DatabaseConfigurationError) return true;
  // TLS refused either way: a certificate our CA bundle does not trust or that names another host, or a server
  // without TLS asked for it. Waiting fixes none of these.
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && TLS_CODES.test(code)) return true;
  return error instanceof Error && /does not support SSL/i.test(error.message);
}

const TLS_CODES =
  /^(ERR_TLS_CERT_ALTNAME_INVALID|SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(_LOCALLY)?|CERT_SIGNATURE_FAILURE|CERT_UNTRUSTED|CERT_HAS_EXPIRED|CERT_NOT_YET_VALID)$/;

/** Raised by checks of our own (schema version, TLS refused) that find a configuration problem. */
export class DatabaseConfigurationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatabaseConfigurationError';
  }
}

/** The database stayed unreachable for the whole start-up wait (DATABASE_STARTUP_TIMEOUT_MS). */
export class DatabaseUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatabaseUnavailableError';
  }
}

/**
 * How long after an outage was noticed a statement must have begun to prove the database back. When a server stops,
 * its backends are terminated one by one: for a moment a statement on a connection not yet reached still succeeds,
 * and taking that for recovery logs "back" and then a second outage for one restart. Successes keep coming while the
 * worker runs (every claim is one), so recovery is still reported at most about this much later.
 */
export const BACK_PROOF_DELAY_MS = 1_000;

export class DatabaseStatus extends EventEmitter<DatabaseStatusEvents> {
  private current: DatabaseHealth = { state: 'ok' };
  /** When the current outage began (ms): only a statement started after it proves the database is back. */
  private downSinceMs = 0;
  /** When the database was last seen back (ms): only a statement started after it proves a new outage. */
  private upSinceMs = 0;
  /** The refusal is of a login: only a new session's login ends it (reportLogin), not a statement on an old one. */
  private loginRefused = false;

  constructor(private readonly log: Logger) {
    super();
  }

  get health(): DatabaseHealth {
    return this.current;
  }

  /**
   * When the latest outage began (epoch ms; 0 when none yet), kept once the database is back: a run's failure is
   * recorded only when it answers again, and its outage began here, not at that moment.
   */
  get lastOutageSince(): number {
    return this.downSinceMs;
  }

  /**
   * A statement or connection succeeded. `startedAt` is when it began: one that began before the outage was noticed
   * (a claim answered just before the server stopped), or within BACK_PROOF_DELAY_MS of it, says nothing about now.
   */
  reportSuccess(startedAt: number): void {
    // A statement on a session opened before a login refusal says nothing about logging in now.
    if (this.loginRefused) return;
    this.back(startedAt);
  }

  /** A new session logged in (pool.ts): also ends a login refusal. */
  reportLogin(startedAt: number): void {
    this.back(startedAt);
  }

  private back(startedAt: number): void {
    if (this.current.state === 'ok' || startedAt < this.downSinceMs + BACK_PROOF_DELAY_MS) return;
    this.loginRefused = false;
    const was = this.current;
    this.current = { state: 'ok' };
    this.upSinceMs = Date.now();
    this.log.info({ down_since: was.since, was: was.state }, 'database is back');
    this.emit('change', this.current);
  }

  /**
   * A statement or connection failed. Errors that say nothing about the database (a constraint, a bad value) are
   * ignored; returns whether the error was about the database's availability or our configuration. `startedAt` is
   * when the statement or connection attempt began: one that began before the database was last seen back (a connect
   * that got "the database system is starting up" just as another session got in) is about the outage that ended,
   * not a new one. Connection breaks reported as they happen have no start.
   */
  reportFailure(error: unknown, session: string, startedAt?: number): boolean {
    const state = isConfigurationError(error) ? 'misconfigured' : isConnectionError(error) ? 'unavailable' : undefined;
    if (!state) return false;
    if (this.current.state === state) {
      this.loginRefused ||= isLoginRefusal(error);
      // At debug only: which sessions still fail, one line each time (at info the outage is its first line).
      this.log.debug({ session }, 'database still unavailable');
      return true;
    }
    if (state === 'unavailable' && startedAt !== undefined && startedAt < this.upSinceMs) return true;
    const message = describeDatabaseError(error);
    this.loginRefused = isLoginRefusal(error);
    this.downSinceMs = Date.now();
    this.current = { state, since: new Date(this.downSinceMs).toISOString(), error: message };
    if (state === 'unavailable') {
      this.log.warn({ session, err: message }, 'database unavailable; jobs wait and every session reconnects with backoff');
    } else {
      this.log.error({ session, err: message }, 'database refuses this worker: fix the configuration or the schema');
    }
    this.emit('change', this.current);
    return true;
  }
}
