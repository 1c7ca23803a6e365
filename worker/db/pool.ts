import pg from 'pg';
import { CONNECT_TIMEOUT_MS, connectionConfig, type DatabaseTarget } from './connection.js';
import { isConnectionError } from './database-status.js';
import { parseTimestamptz } from './timestamptz.js';

// bigint (int8) columns such as jobs.id come back as strings by default; our ids and byte counts stay far below
// 2^53, so parse them as numbers once, here.
pg.types.setTypeParser(pg.types.builtins.INT8, (value) => Number(value));
// timestamptz read by position: the same Dates as pg's parser, at a fraction of its cost (timestamptz.ts).
pg.types.setTypeParser(pg.types.builtins.TIMESTAMPTZ, parseTimestamptz);

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

export interface PoolOptions {
  max?: number;
  applicationName?: string;
  /** Session settings sent at connect, e.g. `-c enable_seqscan=off`. */
  sessionOptions?: string;
  /**
   * Client-side bound on every statement (ms). The server's statement_timeout cannot end a statement when the server
   * itself hangs (paused, or a network path that swallows packets): without this the caller would wait forever.
   */
  queryTimeoutMs?: number;
  /**
   * The server's bound on every statement (statement_timeout, ms). Set below queryTimeoutMs, the server ends a
   * statement that is only slow (and the connection stays); the client's bound then catches only a server that does
   * not answer at all.
   */
  statementTimeoutMs?: number;
  /** Told about connection failures and recoveries (the worker's DatabaseStatus). */
  status?: DatabaseStatusSink;
  /** Name of the pool in the status reports ("pool", "claim"). */
  sessionName?: string;
  /** Runs on each new connection before it is handed out (SilentConnectionWatch.onConnect). */
  onConnect?: (client: pg.ClientBase) => Promise<void>;
}

/** The part of DatabaseStatus a pool reports to. */
export interface DatabaseStatusSink {
  reportFailure(error: unknown, session: string, startedAt?: number): boolean;
  reportSuccess(startedAt: number): void;
  /** A new session logged in; only this ends a refused login (database-status.ts). */
  reportLogin?(startedAt: number): void;
}

/** How long a pooled session lives at most (closed when idle past it). */
export const POOLED_SESSION_LIFETIME_S = 300;

/** What every pooled session of this project sets at connect (see createPool). */
const POSTGRES_SESSION_SETTINGS = '-c idle_in_transaction_session_timeout=120000 -c client_connection_check_interval=1000';

export function createPool(database: DatabaseTarget, options: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool(
    connectionConfig(database, {
      max: options.max ?? 10,
      application_name: options.applicationName ?? 'bulk-import-worker',
      // A worker that froze or lost the network inside a transaction must not keep its row locks (and with them a
      // job the rescuer skips) for hours: the server ends such a session after two minutes. And a statement whose
      // process is gone (killed, or exited past its grace) must not go on: a claim waiting behind a lock (a
      // migration's) would otherwise lease runs to a dead worker once the lock is granted, and they would wait for
      // their leases to expire. With the check the server notices the closed connection at its next second and
      // ends the statement (POSTGRES_SESSION_SETTINGS). Behind a proxy the server's client is the proxy: a dead
      // worker is noticed only if the proxy then closes its connection to the server.
      options: [
        POSTGRES_SESSION_SETTINGS,
        options.statementTimeoutMs === undefined ? '' : `-c statement_timeout=${options.statementTimeoutMs}`,
        options.sessionOptions ?? '',
      ].join(' ').trim(),
      connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
      // An idle connection older than this is closed and the next one resolves the endpoint again: after a switchover
      // that moved the writer's address (Aurora, a Multi-AZ DB cluster, blue/green), sessions still on the demoted
      // instance are not kept for the life of the process (a refused write also discards its session: 25006).
      maxLifetimeSeconds: POOLED_SESSION_LIFETIME_S,
      ...(options.queryTimeoutMs ? { query_timeout: options.queryTimeoutMs } : {}),
      ...(options.onConnect ? { onConnect: options.onConnect } : {}),
    } satisfies pg.PoolConfig),
  );
  const session = options.sessionName ?? options.applicationName ?? 'pool';
  // pg-pool listens for errors only while a connection is idle; one that breaks while checked out (a restart or a
  // failover while a handler holds it between statements) emits 'error' with no listener, and Node ends the process.
  // Every connection gets a listener for its whole life. The holder sees the failure on its next statement and
  // releases the connection with the error, which discards it.
  pool.on('connect', (client) => {
    client.on('error', (error) => options.status?.reportFailure(error, session));
    options.status?.reportLogin?.(Date.now());
  });
  // Idle connections terminated by the server surface here (pg-pool discards them).
  pool.on('error', (error) => options.status?.reportFailure(error, session));
  return pool;
}

/** Connections the pool could hand out at once: idle ones plus those it may still open, less those awaited. */
export function freeConnections(pool: pg.Pool): number {
  return pool.idleCount + Math.max(0, (pool.options.max ?? 10) - pool.totalCount) - pool.waitingCount;
}

export interface TransactionOptions {
  /**
   * false: the commit does not wait for its WAL to reach disk (`synchronous_commit = off` for this transaction). For
   * the many intermediate units of an import (CSV staging windows, finalize batches): a database crash can lose only
   * the last such commits, each whole with its own record of being done, so the rerun simply does them again. The
   * step that ends the phase commits synchronously, which also makes every earlier commit durable. Saves a disk flush
   * per unit (about 2,000 per million rows at 500-row batches).
   */
  synchronousCommit?: boolean;
  /** Planner settings for this transaction only, sent with its BEGIN (e.g. 'enable_nestloop = off'). */
  setLocal?: readonly string[];
}

/**
 * Connections a transaction left unusable: a statement on it got no answer (a client-side timeout) or the connection
 * broke, so the ROLLBACK could not be sent or answered. pg keeps a timed-out statement as the connection's active one
 * and queues every later statement behind it: returned to its pool as it is, the connection would take each next
 * holder's statements into the same silence. releaseClient discards these.
 */
const unusable = new WeakSet<pg.PoolClient>();

/** Runs `work` in a transaction on a connection the caller holds (for a whole phase); rolls back on any error. */
export async function inTransaction<T>(client: pg.PoolClient, work: () => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  const settings = [...(options.synchronousCommit === false ? ['synchronous_commit TO off'] : []), ...(options.setLocal ?? [])];
  try {
    await client.query(['BEGIN', ...settings.map((setting) => `SET LOCAL ${setting}`)].join('; '));
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    // After a connection error no ROLLBACK gets an answer; the server rolls back when the session ends.
    if (isConnectionError(error)) unusable.add(client);
    else await client.query('ROLLBACK').catch(() => unusable.add(client));
    throw error;
  }
}

/** Gives a pooled connection back, or discards it when a transaction on it left it unusable (see `unusable`). */
export function releaseClient(client: pg.PoolClient): void {
  client.release(unusable.has(client) ? new Error('discarded: a statement on this connection got no answer') : undefined);
}

/** Runs `work` in a transaction on one pooled connection; rolls back on any error. */
export async function withTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  const client = await pool.connect();
  try {
    return await inTransaction(client, () => work(client), options);
  } finally {
    releaseClient(client);
  }
}

/** Anything that runs a query: a pool, a pooled client inside a transaction, or a plain client. */
export interface Queryable {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  query<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  /** With `name`: a prepared statement, parsed and planned once per connection (hot, simple statements only). */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  query<R extends pg.QueryResultRow = any>(config: pg.QueryConfig): Promise<pg.QueryResult<R>>;
}

/** True for a pool (which hands out connections), false for a client: both have `connect`, only a pool counts them. */
export const isPool = (db: Queryable): db is pg.Pool => 'connect' in db && 'totalCount' in db;
