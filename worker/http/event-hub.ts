// Feeds the event streams of GET /v1/jobs/{id}/events. One LISTEN session on bulk_import_job_state for the whole
// process (not one per client); transitions of followed runs become `state` events at once, and a poll of the
// followed running runs (one statement for all of them, every eventPollMs) adds `progress` events — progress writes
// are not transitions, so the channel does not carry them. Every event gets the next number of its run's own sequence
// here, under a random token of that sequence (an id shows nothing of other runs' events: a process-wide counter would
// tell a follower how busy everyone else is); a run's events are kept for a while after its last follower left, so a
// client that reconnects with Last-Event-ID gets exactly the events it missed. When they are gone (another server
// process, a restart, a long absence), the stream starts again from a snapshot of the run: its current state is never
// lost, intermediate ones may be.
//
// The two sources cross: a poll that read the runs just before a transition committed can come back after that
// transition's notification, and a poll that read them after two transitions can come back before their
// notifications. Either, taken as news, would move the run's state back. So each notification names its transaction
// and each poll reads its snapshot (db/snapshot.ts): a poll that did not see the transition behind the state shown
// leaves the run alone, and a notification of a transition the last poll already saw is not news.
import { randomBytes } from 'node:crypto';
import type { DatabaseTarget } from '../db/connection.js';
import { ListenSession } from '../db/listen-session.js';
import type { Queryable } from '../db/pool.js';
import { parseSnapshot, sawTransaction, type Snapshot } from '../db/snapshot.js';
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
  /** Names this run's sequence in this process: random, new when a watch of the run is made again. */
  token: string;
  /** The last number given to an event of this run; its events after trimmedThrough are all in `events`. */
  seq: number;
  trimmedThrough: number;
  events: JobEvent[];
  lastState: JobState | null;
  lastAttempts: number;
  lastProgress: string | null;
  /** The transaction of the notification that set lastState, while no later poll has seen it. */
  stateXid: string | null;
  /** The snapshot of the poll that set (or confirmed) lastState, until a notification it did not see moves it on. */
  stateSeenIn: Snapshot | null;
  lingerUntil: number;
}

interface TransitionGroup {
  kind: string;
  from: JobState | null;
  to: JobState;
  progress: Record<string, unknown> | null;
  ids: number[];
  attempts: number[];
  /** The transaction of these transitions (migration 20261207121000); absent from payloads of older triggers. */
  xid?: string;
}

export class JobEventHub {
  private readonly watches = new Map<number, Watch>();
  private readonly session: ListenSession;
  private stopped = false;
  private pollTimer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(private readonly options: JobEventHubOptions) {
    this.session = new ListenSession({
      database: options.database,
      log: options.log,
      channels: [JOB_STATE_CHANNEL],
      applicationName: 'bulk-import-api-events',
      downMessage: 'event streams have no LISTEN session; reconnecting',
      maxReconnectDelayMs: 10_000,
      onNotification: (channel, payload) => {
        if (channel === JOB_STATE_CHANNEL && payload) this.onNotification(payload);
      },
      // Transitions while the session was away: the poll compares every followed run with what was last shown.
      onConnected: () => void this.poll(),
    });
  }

  async start(): Promise<void> {
    await this.session.start();
    this.pollTimer = setInterval(() => void this.poll(), this.options.pollMs);
    this.pollTimer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.pollTimer);
    await this.session.stop();
  }

  /**
   * Follows a run: `listener` gets its events from now on. `token` and `sinceSeq` name the point it follows from (the
   * id of a snapshot sent now). Call `unsubscribe` when the client leaves.
   */
  subscribe(jobId: number, listener: JobEventListener): { token: string; sinceSeq: number; unsubscribe: () => void } {
    let watch = this.watches.get(jobId);
    if (!watch) {
      this.evictLingering();
      const token = randomBytes(4).toString('hex');
      watch = { listeners: new Set(), token, seq: 0, trimmedThrough: 0, events: [], lastState: null, lastAttempts: 0, lastProgress: null, stateXid: null, stateSeenIn: null, lingerUntil: 0 };
      this.watches.set(jobId, watch);
    }
    watch.listeners.add(listener);
    const current = watch;
    return {
      token: watch.token,
      sinceSeq: watch.seq,
      unsubscribe: () => {
        current.listeners.delete(listener);
        if (current.listeners.size === 0) current.lingerUntil = Date.now() + (this.options.lingerMs ?? 300_000);
      },
    };
  }

  /** State notifications read so far (all runs'): a test knows from it that what the channel carried was handled. */
  notificationsRead = 0;

  /** Reads of the followed runs made so far: a test knows from it that a progress write was read. */
  progressReads = 0;

  /** How many streams follow the run now. */
  followers(jobId: number): number {
    return this.watches.get(jobId)?.listeners.size ?? 0;
  }

  /**
   * The run's events after `afterSeq` of the sequence `token` names, or null when they are not all known here (another
   * process's, an earlier watch's, trimmed): then send a snapshot.
   */
  eventsAfter(jobId: number, token: string, afterSeq: number): JobEvent[] | null {
    const watch = this.watches.get(jobId);
    if (!watch || token !== watch.token || afterSeq < watch.trimmedThrough || afterSeq > watch.seq) return null;
    return watch.events.filter((event) => event.seq > afterSeq);
  }

  private emit(jobId: number, watch: Watch, type: JobEvent['type'], data: Record<string, unknown>): void {
    watch.seq += 1;
    const event: JobEvent = { seq: watch.seq, type, jobId, data };
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
    this.notificationsRead += 1;
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
        // The last poll read the run after this transition: what it showed is this state or a later one.
        if (watch.stateSeenIn !== null && group.xid !== undefined && sawTransaction(watch.stateSeenIn, group.xid)) return;
        watch.stateXid = group.xid ?? null;
        watch.stateSeenIn = null;
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
      const read = await readJobStatuses(this.options.pool, ids);
      this.progressReads += 1;
      const snapshot = read.snapshot === null ? null : parseSnapshot(read.snapshot);
      for (const row of read.rows) {
        const watch = this.watches.get(row.id);
        if (!watch) continue;
        // Read before the transition behind the state shown: older news on every count; the next poll reads again.
        if (snapshot !== null && watch.stateXid !== null && !sawTransaction(snapshot, watch.stateXid)) continue;
        watch.stateXid = null;
        watch.stateSeenIn = snapshot;
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
}
