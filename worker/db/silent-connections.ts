// Finds the main pool's connections that went silent while a statement waits on them, and closes them.
//
// A failover that takes the old primary's address away (or a network path that starts dropping packets) leaves the
// connections to it open and silent. TCP keepalive closes an idle one within about 20 s (connection.ts), but a
// statement *sent* into the silence is retransmitted instead, for up to about 15 minutes, and keepalive waits while
// data is unacknowledged. The claim and lease sessions bound every statement client-side; handler statements cannot
// be bounded that way (a backfill batch or a CSV commit may rightly run for minutes), so a handler that sent a
// statement at the wrong moment would hang for a quarter of an hour while its heartbeats, on their own session, keep
// its lease.
//
// Instead, the server is asked. A connection that has sent something and heard nothing back for `suspectAfterMs` is
// looked up in pg_stat_activity by its backend's pid, from a session of its own: a statement the server is still
// running shows its session `active`, and the connection is left alone however long it takes. A session that is not
// there (the new primary never had it) or is not running anything (the statement never arrived, or its answer was
// lost) on `strikes` lookups in a row means no answer is coming: the connection is destroyed, the statement fails
// with a connection error (an outage for the run: retried without spending an attempt, queue/outage.ts), and the
// pool opens a new connection for the next one.
//
// Behind a connection proxy (RDS Proxy, PgBouncer) the pid the client was told is not its backend's, and a lookup
// would find nothing and wrongly condemn a slow statement: each connection's backend pid is checked once when it
// opens, and a connection whose pid does not match is not watched.
import type pg from 'pg';
import type { Logger } from '../logger.js';
import { createPool } from './pool.js';
import type { DatabaseTarget } from './connection.js';

export interface SilentConnectionWatchOptions {
  /** How long a connection may wait for its answer before the server is asked about it (ms). */
  suspectAfterMs?: number;
  /** How often waiting connections are checked (ms). */
  checkEveryMs?: number;
  /** Lookups in a row that must find the statement not running before the connection is closed. */
  strikes?: number;
}

export const SILENT_CONNECTION_DEFAULTS = { suspectAfterMs: 15_000, checkEveryMs: 5_000, strikes: 2 } as const;

/** Backend states in which the server is working on a statement the client sent. */
const RUNNING_STATES = new Set(['active', 'fastpath function call']);

/** What is known of one pooled connection's traffic. */
interface Watched {
  socket: SocketLike;
  /** The backend's pid, confirmed when the connection opened. */
  pid: number;
  /** bytesWritten when the last answer arrived: more written since means a request is outstanding. */
  writtenAtLastAnswer: number;
  /** When this check first saw a request outstanding with no answer since (ms); undefined while answered. */
  waitingSince: number | undefined;
  /** Lookups in a row that found the statement not running. */
  strikes: number;
}

/** The part of a net.Socket the watch reads and closes. */
interface SocketLike {
  readonly bytesWritten: number;
  on(event: 'data' | 'close', listener: () => void): unknown;
  destroy(error?: Error): void;
}

/** Thrown into the statement that waited on a connection found silent. "Connection terminated" marks it a connection error. */
export class SilentConnectionError extends Error {
  constructor(waitedMs: number) {
    super(
      `Connection terminated: no answer for ${Math.round(waitedMs / 1000)} s and the server is not running the statement ` +
        '(the connection went silent, as in a failover); closed so the statement can be retried on a new connection',
    );
    this.name = 'SilentConnectionError';
  }
}

export class SilentConnectionWatch {
  private readonly watched = new Set<Watched>();
  private readonly options: Required<SilentConnectionWatchOptions>;
  private readonly probe: pg.Pool;
  private timer: NodeJS.Timeout | undefined;
  private checking: Promise<void> | undefined;

  constructor(
    database: DatabaseTarget,
    private readonly log: Logger,
    options: SilentConnectionWatchOptions = {},
  ) {
    this.options = { ...SILENT_CONNECTION_DEFAULTS, ...options };
    // Its own session: a lookup through the watched pool could be handed one of the silent connections. Bounded, so
    // a lookup into a silent network gives up (and the next check opens a new session).
    const lookupTimeoutMs = Math.max(2_000, this.options.checkEveryMs);
    this.probe = createPool(database, {
      max: 1,
      applicationName: 'bulk-import-silence-check',
      statementTimeoutMs: lookupTimeoutMs - 1_000,
      queryTimeoutMs: lookupTimeoutMs,
    });
    this.probe.on('error', () => {}); // an idle lookup session that breaks is simply replaced at the next lookup
  }

  /**
   * The watched pool's onConnect (createPool): runs on each new connection before it is handed out, and watches it
   * once its backend pid is confirmed. Never fails the connection: one that cannot be checked is just not watched.
   */
  readonly onConnect = async (client: pg.ClientBase): Promise<void> => {
    const socket = (client as unknown as { connection?: { stream?: SocketLike } }).connection?.stream;
    if (!socket) return;
    let pid: number | undefined;
    try {
      pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid;
    } catch {
      return; // the holder's first statement meets whatever broke it
    }
    const told = (client as unknown as { processID?: number | null }).processID;
    if (pid === undefined || pid !== told) {
      this.log.debug({ told, backend: pid }, 'a connection proxy is in the way: silent connections are not looked for');
      return;
    }
    const entry: Watched = { socket, pid, writtenAtLastAnswer: socket.bytesWritten, waitingSince: undefined, strikes: 0 };
    socket.on('data', () => {
      entry.writtenAtLastAnswer = socket.bytesWritten;
      entry.waitingSince = undefined;
      entry.strikes = 0;
    });
    socket.on('close', () => this.watched.delete(entry));
    this.watched.add(entry);
  };

  start(): void {
    this.timer ??= setInterval(() => void this.check(), this.options.checkEveryMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.checking;
    await this.probe.end().catch(() => {});
  }

  /** Connections under watch (open, their backend pid confirmed). */
  get size(): number {
    return this.watched.size;
  }

  /** One check: who waits too long, what the server says of them, and closing those found silent twice. */
  async check(): Promise<void> {
    if (this.checking) return this.checking;
    this.checking = this.checkOnce().finally(() => (this.checking = undefined));
    return this.checking;
  }

  private async checkOnce(): Promise<void> {
    const now = Date.now();
    const suspects: Watched[] = [];
    for (const entry of this.watched) {
      if (entry.socket.bytesWritten <= entry.writtenAtLastAnswer) {
        entry.waitingSince = undefined;
        entry.strikes = 0;
        continue;
      }
      entry.waitingSince ??= now;
      if (now - entry.waitingSince >= this.options.suspectAfterMs) suspects.push(entry);
    }
    if (suspects.length === 0) return;
    let running: Set<number>;
    try {
      const { rows } = await this.probe.query<{ pid: number; state: string | null }>(
        'SELECT pid, state FROM pg_stat_activity WHERE pid = ANY($1::int[])',
        [suspects.map((entry) => entry.pid)],
      );
      running = new Set(rows.filter((row) => row.state !== null && RUNNING_STATES.has(row.state)).map((row) => row.pid));
    } catch (error) {
      // The database does not answer this session either: an outage everyone sees, which is not this check's to
      // judge. Nothing is closed on a lookup that failed.
      this.log.debug({ err: error instanceof Error ? error.message : String(error) }, 'silent-connection lookup failed');
      return;
    }
    for (const entry of suspects) {
      // Answered while the lookup ran: nothing to judge.
      if (entry.waitingSince === undefined) continue;
      if (running.has(entry.pid)) {
        entry.strikes = 0;
        continue;
      }
      entry.strikes += 1;
      if (entry.strikes < this.options.strikes) continue;
      const waitedMs = Date.now() - entry.waitingSince;
      this.log.warn({ pid: entry.pid, waited_ms: waitedMs }, 'a database connection went silent with a statement waiting; closing it');
      this.watched.delete(entry);
      entry.socket.destroy(new SilentConnectionError(waitedMs));
    }
  }
}
