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
// looked up in pg_stat_activity by its backend (pid and start time), from a session of its own: a statement the
// server is still running shows its session `active`, and the connection is left alone however long it takes. A
// session that is not there (the new primary never had it) or is not running anything (the statement never arrived,
// or its answer was lost) on `strikes` lookups in a row, each at least `checkEveryMs` after the last, means no answer
// is coming: the connection is destroyed, the statement fails with a connection error (an outage for the run: retried
// without spending an attempt, queue/outage.ts), and the pool opens a new connection for the next one. A lookup that
// cannot tell (it failed; `track_activities` is off) counts for nothing.
//
// Behind a connection proxy (RDS Proxy, PgBouncer) the pid the client was told is not its backend's, and a lookup
// would find nothing and wrongly condemn a slow statement: each connection's backend is read once when it opens, and
// a connection whose pid does not match is not watched.
//
// A statement counts as answered at the server's ReadyForQuery, not at the first bytes back: an answer whose path
// fails halfway (a large result, lost while the server still writes it) is still waited for. The server then shows the
// session `active` but waiting on `ClientWrite` — it cannot hand the rest to the network — and a connection that has
// heard nothing for `suspectAfterMs` while its backend waits so is taken for silent too.
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
  /** How long a new connection's first statement (reading its backend) may take before it is taken for silent. */
  connectCheckTimeoutMs?: number;
}

export const SILENT_CONNECTION_DEFAULTS = { suspectAfterMs: 15_000, checkEveryMs: 5_000, strikes: 2, connectCheckTimeoutMs: 5_000 } as const;

/** Backend states in which the server is working on a statement the client sent. */
const RUNNING_STATES = new Set(['active', 'fastpath function call']);
/**
 * The wait of a backend that cannot send its answer: the client's side of the connection takes nothing. With nothing
 * heard by the client meanwhile, the answer is not getting through.
 */
const BLOCKED_SENDING = 'ClientWrite';
/** States that say nothing: statistics off (`track_activities`), or hidden from this role. */
const UNKNOWN_STATES = new Set(['disabled', null]);

/** What is known of one pooled connection's traffic. */
interface Watched {
  socket: SocketLike;
  /** The backend's pid, confirmed when the connection opened. */
  pid: number;
  /** When the backend started (pg_stat_activity.backend_start, as text): a new primary may reuse the pid. */
  backendStart: string;
  /**
   * bytesWritten when the last answer was complete (the server's ReadyForQuery): more written since means a request
   * is outstanding.
   */
  writtenAtLastAnswer: number;
  /**
   * When this check first saw a request outstanding with nothing heard since (ms); undefined while answered, and
   * again whenever bytes of the answer arrive.
   */
  waitingSince: number | undefined;
  /** Lookups in a row that found the statement not running. */
  strikes: number;
  /** When the check that made the last of them began (ms): the next counts only from a later check. */
  struckAt: number;
}

/** The part of a net.Socket the watch reads and closes. */
interface SocketLike {
  readonly bytesWritten: number;
  on(event: 'close', listener: () => void): unknown;
  prependListener(event: 'data', listener: () => void): unknown;
  destroy(error?: Error): void;
}

/** The part of node-postgres's protocol connection the watch listens to: it emits each server message by name. */
interface ProtocolConnection {
  stream?: SocketLike;
  prependListener?(event: 'readyForQuery', listener: () => void): unknown;
  removeListener?(event: 'readyForQuery', listener: () => void): unknown;
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
  private stopped = false;

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
   * once its backend pid is confirmed. One whose backend cannot be read is just not watched, unless the read got no
   * answer in time: that connection is already silent, and the connect fails (readBackend).
   */
  readonly onConnect = async (client: pg.ClientBase): Promise<void> => {
    const connection = (client as unknown as { connection?: ProtocolConnection }).connection;
    const socket = connection?.stream;
    if (!connection || !socket) return;
    // Heard on the first statement (readBackend's), before the connection is watched: a driver that no longer emits
    // the server's messages by name leaves the watch to count any bytes back as the answer, as it did before.
    let readySeen = false;
    const seeReady = () => (readySeen = true);
    connection.prependListener?.('readyForQuery', seeReady);
    const backend = await readBackend(client, socket, this.options.connectCheckTimeoutMs);
    connection.removeListener?.('readyForQuery', seeReady);
    if (backend === undefined) return; // the holder's first statement meets whatever broke it
    const told = (client as unknown as { processID?: number | null }).processID;
    if (backend.pid !== told) {
      this.log.debug({ told, backend: backend.pid }, 'a connection proxy is in the way: silent connections are not looked for');
      return;
    }
    const entry: Watched = {
      socket, pid: backend.pid, backendStart: backend.start, writtenAtLastAnswer: socket.bytesWritten, waitingSince: undefined, strikes: 0, struckAt: 0,
    };
    // Both before pg's own listeners: handling an answer, pg may at once write the next statement (a queued one, or
    // the next holder's when the pool hands the connection over), which must count as unanswered. Bytes back are a
    // sign of life; the answer is complete at ReadyForQuery.
    socket.prependListener('data', () => {
      if (!readySeen) entry.writtenAtLastAnswer = socket.bytesWritten;
      entry.waitingSince = undefined;
      entry.strikes = 0;
    });
    if (readySeen) connection.prependListener?.('readyForQuery', () => (entry.writtenAtLastAnswer = socket.bytesWritten));
    socket.on('close', () => this.watched.delete(entry));
    this.watched.add(entry);
  };

  start(): void {
    this.timer ??= setInterval(() => void this.check(), this.options.checkEveryMs);
    this.timer.unref();
  }

  /** Stops the checks. A lookup in flight is not waited for (it may be one into the outage); it closes nothing now. */
  stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    void this.probe.end().catch(() => {});
    return Promise.resolve();
  }

  /** Connections under watch (open, their backend confirmed). */
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
    let seen: Map<number, { start: string; state: string | null; wait_event: string | null }>;
    try {
      const { rows } = await this.probe.query<{ pid: number; start: string; state: string | null; wait_event: string | null }>(
        'SELECT pid, backend_start::text AS start, state, wait_event FROM pg_stat_activity WHERE pid = ANY($1::int[])',
        [suspects.map((entry) => entry.pid)],
      );
      seen = new Map(rows.map((row) => [row.pid, row]));
    } catch (error) {
      // The database does not answer this session either: an outage everyone sees, which is not this check's to
      // judge. Nothing is closed on a lookup that failed.
      this.log.debug({ err: error instanceof Error ? error.message : String(error) }, 'silent-connection lookup failed');
      return;
    }
    const lookedAt = Date.now();
    for (const entry of suspects) {
      // Answered while the lookup ran, or stopped meanwhile: nothing to judge.
      if (entry.waitingSince === undefined || this.stopped) continue;
      const session = seen.get(entry.pid);
      const same = session !== undefined && session.start === entry.backendStart;
      if (same && UNKNOWN_STATES.has(session.state)) continue;
      if (same && RUNNING_STATES.has(session.state!) && session.wait_event !== BLOCKED_SENDING) {
        entry.strikes = 0;
        continue;
      }
      // Strikes come from checks begun at different ticks (begun at least half an interval apart: ticks are never
      // exactly checkEveryMs apart), so two lookups that ended close together (one waited out a slow server) are
      // still two looks taken apart.
      if (entry.strikes > 0 && now - entry.struckAt < this.options.checkEveryMs / 2) continue;
      entry.strikes += 1;
      entry.struckAt = now;
      if (entry.strikes < this.options.strikes) continue;
      const waitedMs = lookedAt - entry.waitingSince;
      this.log.warn({ pid: entry.pid, waited_ms: waitedMs }, 'a database connection went silent with a statement waiting; closing it');
      this.watched.delete(entry);
      entry.socket.destroy(new SilentConnectionError(waitedMs));
    }
  }
}

/**
 * The new connection's backend: pid and start time, or undefined when the statement failed. Bounded: a connection
 * that goes silent this early would otherwise hold its caller in pool.connect() for as long as TCP retransmits. One
 * that does not answer in time is destroyed (and closed, before pg-pool is told) and the connect fails as a
 * connection error.
 */
async function readBackend(client: pg.ClientBase, socket: SocketLike, timeoutMs: number): Promise<{ pid: number; start: string } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const read = client
    .query<{ pid: number; start: string }>('SELECT pid, backend_start::text AS start FROM pg_stat_activity WHERE pid = pg_backend_pid()')
    .then(({ rows }) => rows[0])
    .catch(() => undefined);
  const outcome = await Promise.race([read, timedOut]);
  clearTimeout(timer);
  if (outcome !== 'timeout') return outcome;
  const error = new SilentConnectionError(timeoutMs);
  // pg-pool ends a connection whose hook failed and waits for its 'end': it must have come first.
  await new Promise<void>((resolve) => {
    client.once('end', () => resolve());
    socket.destroy(error);
  });
  await read;
  throw error;
}
