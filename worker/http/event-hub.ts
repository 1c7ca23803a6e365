// Feeds the event streams of GET /v1/jobs/{id}/events. One LISTEN session on bulk_import_job_state for the whole
// process (not one per client); transitions of followed runs become `state` events at once, and a poll of the
// followed running runs (one statement for all of them, every eventPollMs) adds `progress` events — progress writes
// are not transitions, so the channel does not carry them. Every event gets a sequence number of this process; a
// run's events are kept for a while after its last follower left, so a client that reconnects with Last-Event-ID
// gets exactly the events it missed. When they are gone (another server process, a restart, a long absence), the
// stream starts again from a snapshot of the run: its current state is never lost, intermediate ones may be.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { connectionConfig, type DatabaseTarget } from '../db/connection.js';
import type { Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { JOB_STATE_CHANNEL } from '../queue/channels.js';
import { readJobStatuses, type JobStatusRow } from '../queue/job-actions.js';
import type { JobState } from '../queue/types.js';

export interface JobEvent {
  seq: number;
  type: 'state' | 'progress';
  jobId: number;
  data: Record<string, unknown>;
}

export type JobEventListener = (event: JobEvent) => void;

export interface JobEventHubOptions {
  database: DatabaseTarget;
  pool: Queryable;
  log: Logger;
  pollMs: number;
  /** How long a run's events are kept after its last follower left. */
  lingerMs?: number;
  /** Events kept per run. */
  eventsPerJob?: number;
  /** Runs followed (or lingering) at once; the longest-lingering are dropped first beyond it. */
  maxJobs?: number;
}

interface Watch {
  listeners: Set<JobEventListener>;
  /** Events of this run with seq > sinceSeq are all in `events` (unless trimmed, see trimmedThrough). */
  sinceSeq: number;
  trimmedThrough: number;
  events: JobEvent[];
  lastState: JobState | null;
  lastAttempts: number;
  lastProgress: string | null;
  lingerUntil: number;
}

interface TransitionGroup {
  kind: string;
  from: JobState | null;
  to: JobState;
  progress: Record<string, unknown> | null;
  ids: number[];
  attempts: number[];
}

export class JobEventHub {
  /** Distinguishes this process's sequence numbers from another's (or an earlier run's). */
  readonly bootId = randomBytes(4).toString('hex');
  private seq = 0;
  private readonly watches = new Map<number, Watch>();
  private client: pg.Client | undefined;
  private stopped = false;
  private pollTimer: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private reconnectDelayMs = 250;
  private polling = false;

  constructor(private readonly options: JobEventHubOptions) {}

  get currentSeq(): number {
    return this.seq;
  }

  async start(): Promise<void> {
    await this.connect();
    this.pollTimer = setInterval(() => void this.poll(), this.options.pollMs);
    this.pollTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.pollTimer);
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }

  /** Follows a run: `listener` gets its events from now on. Call `unsubscribe` when the client leaves. */
  subscribe(jobId: number, listener: JobEventListener): { sinceSeq: number; unsubscribe: () => void } {
    let watch = this.watches.get(jobId);
    if (!watch) {
      this.evictLingering();
      watch = { listeners: new Set(), sinceSeq: this.seq, trimmedThrough: this.seq, events: [], lastState: null, lastAttempts: 0, lastProgress: null, lingerUntil: 0 };
      this.watches.set(jobId, watch);
    }
    watch.listeners.add(listener);
    const current = watch;
    return {
      sinceSeq: this.seq,
      unsubscribe: () => {
        current.listeners.delete(listener);
        if (current.listeners.size === 0) current.lingerUntil = Date.now() + (this.options.lingerMs ?? 300_000);
      },
    };
  }

  /** The run's events after `afterSeq` of this process, or null when they are not all known (then send a snapshot). */
  eventsAfter(jobId: number, bootId: string, afterSeq: number): JobEvent[] | null {
    const watch = this.watches.get(jobId);
    if (bootId !== this.bootId || !watch || afterSeq < watch.sinceSeq || afterSeq < watch.trimmedThrough || afterSeq > this.seq) return null;
    return watch.events.filter((event) => event.seq > afterSeq);
  }

  private emit(jobId: number, watch: Watch, type: JobEvent['type'], data: Record<string, unknown>): void {
    this.seq += 1;
    const event: JobEvent = { seq: this.seq, type, jobId, data };
    watch.events.push(event);
    const max = this.options.eventsPerJob ?? 500;
    if (watch.events.length > max) watch.trimmedThrough = watch.events.splice(0, watch.events.length - max).at(-1)!.seq;
    for (const listener of watch.listeners) listener(event);
  }

  /** Remembers what a client was shown first, so the poll reports only what changes after it. */
  noteSnapshot(jobId: number, status: Pick<JobStatusRow, 'state' | 'attempts' | 'progress'>): void {
    const watch = this.watches.get(jobId);
    if (!watch || watch.lastState !== null) return;
    watch.lastState = status.state;
    watch.lastAttempts = status.attempts;
    watch.lastProgress = JSON.stringify(status.progress);
  }

  private evictLingering(): void {
    const now = Date.now();
    const max = this.options.maxJobs ?? 10_000;
    for (const [jobId, watch] of this.watches) {
      if (watch.listeners.size === 0 && (watch.lingerUntil < now || this.watches.size > max)) this.watches.delete(jobId);
    }
  }

  private onNotification(payload: string): void {
    let groups: TransitionGroup[];
    try {
      groups = JSON.parse(payload) as TransitionGroup[];
    } catch {
      return;
    }
    for (const group of groups) {
      group.ids.forEach((id, index) => {
        const watch = this.watches.get(id);
        if (!watch) return;
        const attempt = group.attempts[index] ?? 0;
        // The poll may have shown this state already.
        if (watch.lastState === group.to && watch.lastAttempts === attempt) return;
        watch.lastState = group.to;
        watch.lastAttempts = attempt;
        this.emit(id, watch, 'state', { id, from: group.from, state: group.to, attempts: attempt, progress: group.progress ?? null, at: new Date().toISOString() });
      });
    }
  }

  /** Reads the followed runs that are not finished: progress changes, and transitions a lost session missed. */
  private async poll(): Promise<void> {
    if (this.polling || this.stopped) return;
    this.evictLingering();
    const ids = [...this.watches.keys()];
    if (ids.length === 0) return;
    this.polling = true;
    try {
      for (const row of await readJobStatuses(this.options.pool, ids)) {
        const watch = this.watches.get(row.id);
        if (!watch) continue;
        if (watch.lastState !== null && (row.state !== watch.lastState || row.attempts !== watch.lastAttempts)) {
          const from = watch.lastState;
          watch.lastState = row.state;
          watch.lastAttempts = row.attempts;
          this.emit(row.id, watch, 'state', { id: row.id, from, state: row.state, attempts: row.attempts, progress: row.progress, at: new Date().toISOString() });
        }
        const progress = JSON.stringify(row.progress);
        if (watch.lastProgress !== null && progress !== watch.lastProgress) {
          this.emit(row.id, watch, 'progress', { id: row.id, state: row.state, attempts: row.attempts, progress: row.progress, at: row.updatedAt.toISOString() });
        }
        watch.lastProgress = progress;
        if (watch.lastState === null) {
          watch.lastState = row.state;
          watch.lastAttempts = row.attempts;
        }
      }
    } catch (error) {
      this.options.log.warn({ err: (error as Error).message }, 'event streams: reading followed runs failed; retrying');
    } finally {
      this.polling = false;
    }
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = new pg.Client(
      connectionConfig(this.options.database, { application_name: 'bulk-import-api-events', keepAlive: true, connectionTimeoutMillis: 15_000 }),
    );
    const lost = (error?: Error) => {
      if (this.client !== client) return;
      this.client = undefined;
      client.removeAllListeners('notification');
      client.end().catch(() => {});
      if (this.stopped) return;
      this.options.log.warn({ err: error?.message }, 'event streams lost their LISTEN session; reconnecting');
      this.scheduleReconnect();
    };
    client.on('error', lost);
    client.on('end', () => lost());
    try {
      await client.connect();
      client.on('notification', (message) => {
        if (message.channel === JOB_STATE_CHANNEL && message.payload) this.onNotification(message.payload);
      });
      await client.query(`LISTEN ${JOB_STATE_CHANNEL}`);
      this.client = client;
      this.reconnectDelayMs = 250;
      // Transitions while the session was away: the poll compares every followed run with what was last shown.
      void this.poll();
    } catch (error) {
      client.removeAllListeners('error');
      client.on('error', () => {});
      await client.end().catch(() => {});
      if (this.client === undefined && !this.stopped) {
        this.options.log.warn({ err: (error as Error).message }, 'event streams cannot LISTEN yet; retrying');
        this.scheduleReconnect();
      }
    }
  }

  private scheduleReconnect(): void {
    clearTimeout(this.reconnectTimer);
    const delay = this.reconnectDelayMs * (0.5 + Math.random());
    this.reconnectDelayMs = Math.min(this.reconnectDelayMs * 2, 10_000);
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
    this.reconnectTimer.unref();
  }
}
