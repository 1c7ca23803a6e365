// The runner: polls for due jobs, runs them in bounded slots, keeps their leases alive, records outcomes, drains on
// shutdown. Maintenance (rescue, retention) and operations (health, metrics, protection) hook in from outside.
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConfigError, type WorkerConfig } from '../config.js';
import type { DatabaseTarget } from '../db/connection.js';
import type { DatabaseStatus } from '../db/database-status.js';
import { sendCancelRequest } from '../db/cancel-request.js';
import { createPool, type Pool, type PoolClient, type Queryable } from '../db/pool.js';
import type { JobMetrics } from '../handlers/metrics.js';
import type { HandlerRegistry } from '../handlers/registry.js';
import type { HandlerServices, JobOutcome } from '../handlers/types.js';
import type { Logger } from '../logger.js';
import { backoffDelayMs } from '../queue/backoff.js';
import { claimJobs } from '../queue/claim.js';
import { toErrorRecord } from '../queue/errors.js';
import { failureStoredEarlier, recordFailure, releaseJobs, type CompletionState, type ReleasedJob } from '../queue/finish.js';
import { assertLeaseHeld, extendLeases, leaseHeldCondition, leasesHeldBy, LeaseLostError } from '../queue/lease.js';
import { dependencyName, outageFailure } from '../queue/outage.js';
import type { ClaimedJob, Lease } from '../queue/types.js';
import { recordAttemptOutcome, runInJobSpan } from '../tracing/job-spans.js';
import type { AttemptEnd } from './attempt-end.js';
import { CompletionBatcher } from './completion-batcher.js';
import { retryFencedWrite } from './fenced-retry.js';
import { PrefetchBuffer } from './prefetch.js';
import { buildPools, headroom, reservedForCappedPools, type ClaimPool } from './pools.js';
import { ThrottledProgressReporter } from './progress-reporter.js';
import { logJobFinished, logJobStarted } from './run-log.js';
import { CancelRequestedError, ShutdownError } from './stop-reasons.js';
import { WakeupListener } from './wakeup-listener.js';

export type WorkerOptions = Pick<
  WorkerConfig,
  | 'workerId'
  | 'concurrency'
  | 'kinds'
  | 'kindConcurrency'
  | 'leaseMs'
  | 'heartbeatMs'
  | 'pollIntervalMs'
  | 'shutdownGraceMs'
  | 'backoffBaseMs'
  | 'backoffMaxMs'
  | 'outageBudgetMs'
  | 'outageBackoffMaxMs'
  | 'prefetchWindowMs'
  | 'prefetchMax'
  | 'stateNotifications'
> & {
  /** Stop by itself once no job is due and none is running (CLI --exit-when-idle, tests, local runs). */
  exitWhenIdle?: boolean;
  /** Minimum time between two progress writes of one job. */
  progressIntervalMs?: number;
  /**
   * TENANT_KIND_CONCURRENCY (config.queue): a tenant's most running jobs of a kind across the fleet, enforced by the
   * claim; such kinds get a claim pool of their own and are never prefetched (pools.ts).
   */
  tenantKindConcurrency?: Readonly<Record<string, number>>;
  /** Claim only these runs (`bulk-import local`: the run it follows, not another folder's left in its state dir). */
  onlyJobs?: readonly number[];
};

export interface JobFinishedEvent {
  job: ClaimedJob;
  /** How the attempt ended (attempt-end.ts): the state it left the run in, or lost, unrecorded or released. */
  state: AttemptEnd;
  durationMs: number;
  result?: Record<string, unknown> | undefined;
  metrics?: JobMetrics | undefined;
  error?: unknown;
}

/** The worker's own sessions, each asked for by name, and where they report the database's availability. */
export interface WorkerSessions {
  database: DatabaseTarget;
  status?: DatabaseStatus | undefined;
  /** Claim on a connection of its own (never queued behind handler work, with a pinned plan); else on the pool. */
  claimSession: boolean;
  /** LISTEN for new work and cancels; else the worker finds work by polling and cancels at its heartbeat. */
  listen: boolean;
}

/**
 * What the poll loop is doing: `starting` until the first turn, `claiming` (a claim in flight), `backing-off` (after
 * a failed claim), `waiting` (for a wake-up or the poll interval), `stopping` once stop() began, then `stopped`.
 */
export type LoopMode = 'starting' | 'claiming' | 'backing-off' | 'waiting' | 'stopping' | 'stopped';

export interface WorkerEvents {
  /** Every turn of the poll loop, busy or idle: the liveness signal the healthcheck reads. */
  loop: [];
  jobStarted: [job: ClaimedJob];
  jobFinished: [event: JobFinishedEvent];
  /** Whether the worker holds any lease; drives ECS scale-in protection. */
  busy: [busy: boolean];
}

interface ActiveJob {
  job: ClaimedJob;
  lease: Lease;
  controller: AbortController;
  startedAt: number;
  /** Handler done, outcome being stored: the lease is still ours but the slot is free. */
  finishing: boolean;
  done: Promise<void>;
  /** performance.now() by which the lease ends at the latest: a lease length from before the claim or last renewal. */
  leaseUntil: number;
  /**
   * The lease is not this attempt's any more: a heartbeat found it lost (whatever else aborted the attempt first), or
   * the shutdown gave it back while the handler still ran (after the grace time). No lease is confirmed from then on.
   */
  leaseGone?: boolean;
}

export class Worker extends EventEmitter<WorkerEvents> {
  private readonly active = new Map<number, ActiveJob>();
  /**
   * Leases of jobs whose handler stopped for the shutdown and whose release at once did not get through: the bulk
   * release at the end of the drain gives them back, and the heartbeat renews them meanwhile (the entry has left
   * `active`, and another handler may drain for most of the grace time, longer than a lease).
   */
  private readonly stoppedForShutdown: Lease[] = [];
  /**
   * While a claim runs: the cancels heard for jobs this worker does not hold. The claim may have leased one of them
   * and not answered yet (the cancel's NOTIFY can overtake the claim's reply): it is then given back unstarted
   * (releaseUnstarted).
   */
  private cancelsWhileClaiming: Set<number> | undefined;
  /**
   * A claim failed: its answer may have been lost after the server committed it (a failover, a connection cut, the
   * client's timeout), leasing runs this worker never heard of. Until the leases held are compared with those known
   * (giveBackUnknownLeases), before the next claim or at the shutdown.
   */
  private claimAnswerMaybeLost = false;
  /** Releases of buffered jobs begun after stop() (releaseBufferSoon), for the shutdown to wait for. */
  private readonly bufferReleases: Array<Promise<void>> = [];
  /** Claimed (leased) but not started yet; see prefetch.ts. */
  private readonly buffer: PrefetchBuffer;
  private running = 0;
  /** The slots divided by kind ceilings (pools.ts), in the order the claim walks them. */
  private readonly pools: ClaimPool[];
  private readonly poolOfKind = new Map<string, ClaimPool>();
  private mode: LoopMode = 'starting';
  private readonly batcher: CompletionBatcher;
  private readonly listener: WakeupListener | undefined;
  /** A connection of its own for the claim: never queued behind handler work, and with a fixed plan (see below). */
  private readonly claimPool: Pool | undefined;
  /**
   * The lease session: a connection of its own for the heartbeat and one for outcomes (completions, failures,
   * releases), each with a client-side timeout (leaseStatementTimeoutMs) and a server-side one a second shorter. Never
   * queued behind handler work, and never stuck on a connection whose packets vanish (a failover that takes the old
   * primary's address away): the timed-out connection is discarded and the next try opens a new one. One connection
   * each, so that the next try cannot take another connection that went silent at the same moment.
   */
  private readonly heartbeatPool: Pool | undefined;
  private readonly outcomePool: Pool | undefined;
  /** The claim pool's connection while a claim runs on it (to cancel that claim when stop() begins). */
  private claimClient: PoolClient | undefined;
  private readonly kinds: string[];
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private loopDone: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private wakeRequested = false;
  /** Wake-ups that said new work is due, counted: a claim that started before one must not conclude the backlog is empty. */
  private newWorkSignals = 0;
  /** The last claim returned fewer jobs than asked: wait for a NOTIFY or the poll interval. */
  private backlogEmpty = false;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private heartbeatInFlight = false;
  /** A tick came while a beat was in flight: beat again once it ends. */
  private heartbeatMissed = false;
  /** The shutdown has released the leases it held: no beat is made up from then on. */
  private leasesGivenBack = false;
  /** performance.now() when the last heartbeat was sent. */
  private lastBeatAt = -Infinity;
  /** The heartbeat being sent, for those who wait for its answer (confirmLease). */
  private beatUnderWay: Promise<void> | undefined;
  /** Fires when the shutdown's grace time is over: outcomes still waiting for the database are given up. */
  private readonly outcomeWritesGiveUp = new AbortController();
  /** Fires when stop() begins: interrupts the claim-failure backoff so shutdown never waits on it. */
  private readonly stopController = new AbortController();
  private wasBusy = false;
  private readonly status: DatabaseStatus | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly registry: HandlerRegistry,
    private readonly services: HandlerServices,
    private readonly options: WorkerOptions,
    private readonly log: Logger,
    sessions?: WorkerSessions,
  ) {
    super();
    this.status = sessions?.status;
    if (sessions?.claimSession) {
      const timeoutMs = leaseStatementTimeoutMs(options.heartbeatMs);
      const leaseSession = () =>
        createPool(sessions.database, {
          max: 1,
          applicationName: 'bulk-import-lease',
          sessionOptions: stateNotificationOption(options.stateNotifications),
          // A busy database ends a slow statement itself and the connection stays; only a silent one is discarded.
          statementTimeoutMs: timeoutMs - 1_000,
          queryTimeoutMs: timeoutMs,
          status: this.status,
          sessionName: 'lease',
        });
      this.heartbeatPool = leaseSession();
      this.outcomePool = leaseSession();
    }
    this.batcher = new CompletionBatcher(this.outcomeDb, options.workerId, log, { giveUp: this.outcomeWritesGiveUp.signal, status: this.status });
    this.buffer = new PrefetchBuffer({
      concurrency: options.concurrency,
      windowMs: options.prefetchWindowMs,
      max: options.prefetchMax,
    });
    const known = registry.kinds();
    const unknown = options.kinds.filter((kind) => !known.includes(kind));
    // Configuration errors (exit 78, as any wrong variable): a typo here would otherwise claim nothing, or limit nothing.
    if (unknown.length > 0) {
      throw new ConfigError('WORKER_KINDS', `WORKER_KINDS (or --kinds) names unknown job kind(s) ${unknown.join(', ')}; known: ${known.join(', ')}`);
    }
    for (const [setting, ceilings] of [
      ['WORKER_KIND_CONCURRENCY', options.kindConcurrency],
      ['TENANT_KIND_CONCURRENCY', options.tenantKindConcurrency ?? {}],
    ] as const) {
      const unknownCeilings = Object.keys(ceilings).filter((kind) => !known.includes(kind));
      if (unknownCeilings.length > 0) {
        throw new ConfigError(setting, `${setting} names unknown job kind(s) ${unknownCeilings.join(', ')}; known: ${known.join(', ')}`);
      }
    }
    this.kinds = options.kinds.length > 0 ? options.kinds : known;
    this.pools = buildPools(this.kinds, options.kindConcurrency, options.concurrency, options.tenantKindConcurrency);
    for (const pool of this.pools) for (const kind of pool.kinds) this.poolOfKind.set(kind, pool);
    if (sessions?.claimSession) {
      // The claim must always walk jobs_claim_order in order and stop after LIMIT rows. Right after a bulk enqueue
      // the table statistics still say "empty", and the planner then picks a bitmap scan that sorts the whole
      // backlog on every claim instead of reading the first LIMIT entries. Turning bitmap and sequential
      // scans off for this one connection pins the plan without depending on when autovacuum last analyzed.
      // A claim that hangs (the server paused, packets dropped) must not stop the loop, whose turns are the health
      // check's liveness signal. A claim slower than a lease is useless anyway (its leases would have expired), so the
      // client's bound is the lease, within 5 to 35 s. The server's own timeout is 2 s shorter: a slow claim is ended
      // (and rolled back, leasing nothing) by the server first. Were the client first, a claim that committed just as
      // it gave up would lease runs this worker never hears of. (An answer lost after the commit does that anyway:
      // giveBackUnknownLeases returns those runs after any failed claim.)
      const claimTimeoutMs = Math.max(5_000, Math.min(35_000, options.leaseMs));
      this.claimPool = createPool(sessions.database, {
        max: 1,
        applicationName: 'bulk-import-claim',
        sessionOptions: `-c enable_bitmapscan=off -c enable_seqscan=off ${stateNotificationOption(options.stateNotifications)}`,
        statementTimeoutMs: claimTimeoutMs - 2_000,
        queryTimeoutMs: claimTimeoutMs,
        status: this.status,
        sessionName: 'claim',
      });
      this.claimPool.on('acquire', (client) => (this.claimClient = client));
      this.claimPool.on('release', (_error, client) => {
        if (this.claimClient === client) this.claimClient = undefined;
      });
    }
    if (sessions?.listen) {
      this.listener = new WakeupListener(sessions.database, log, this.status);
      this.listener.on('ready', (kind) => {
        if (this.kinds.includes(kind)) this.requestWake(true);
      });
      this.listener.on('connected', () => this.requestWake(true));
      this.listener.on('cancel', (jobId) => this.cancelJob(jobId));
      // Back from an outage: renew the leases at once. Leases that ran out during the outage are still ours until a
      // rescuer (of any worker) gets to them; renewing first keeps the runs going without a counted retry.
      this.status?.on('change', (health) => {
        if (health.state === 'ok') void this.heartbeat();
      });
    }
  }

  private poolOf(kind: string): ClaimPool {
    const pool = this.poolOfKind.get(kind);
    if (!pool) throw new Error(`job kind ${kind} belongs to no claim pool of this worker`);
    return pool;
  }

  private get claimDb(): Queryable {
    return this.claimPool ?? this.pool;
  }

  private get heartbeatDb(): Pool {
    return this.heartbeatPool ?? this.pool;
  }

  private get outcomeDb(): Pool {
    return this.outcomePool ?? this.pool;
  }

  /** Handlers running now. */
  get runningCount(): number {
    return this.running;
  }

  /** Jobs leased but waiting in the prefetch buffer. */
  get bufferedCount(): number {
    return this.buffer.size;
  }

  /** What the poll loop is doing now. */
  get loopMode(): LoopMode {
    return this.mode;
  }

  /** Starts polling; resolves once the listener is up. `stop()` or `exitWhenIdle` ends it. */
  async start(): Promise<void> {
    await this.listener?.start();
    // stop() may have run while the listener connected: it found nothing to stop, and nothing would clear the timer.
    if (this.stopping) return;
    this.heartbeatTimer = setInterval(() => void this.heartbeat(), this.options.heartbeatMs);
    this.heartbeatTimer.unref();
    this.loopDone = this.loop();
  }

  /** Resolves when the worker has stopped (after `stop()` or, with exitWhenIdle, when the queue is empty). */
  async finished(): Promise<void> {
    await this.loopDone;
    await this.stopped;
  }

  private async loop(): Promise<void> {
    let claimFailures = 0;
    let claimStartedAt = 0;
    while (!this.stopping) {
      this.emit('loop');
      this.startFromBuffer();
      const free = this.options.concurrency - this.running;
      const prefetch = this.buffer.wanted();
      if (free + prefetch > 0 && !this.backlogEmpty) {
        try {
          const signalsBefore = this.newWorkSignals;
          claimStartedAt = Date.now();
          this.setMode('claiming');
          if (this.claimAnswerMaybeLost) await this.giveBackUnknownLeases();
          const claimed = await this.claim(free, prefetch);
          claimFailures = 0;
          this.status?.reportSuccess(claimStartedAt);
          // A wake-up for new work that arrived while the claim ran may be for a job its snapshot could not see.
          if (claimed < free + prefetch && this.newWorkSignals === signalsBefore) this.backlogEmpty = true;
          if (claimed > 0) continue;
        } catch (error) {
          this.claimAnswerMaybeLost = true;
          // stop() canceled the claim in flight: nothing to report or retry.
          if (this.stopping) break;
          claimFailures += 1;
          // An outage is logged once by the status (and once when it ends); anything else on every failure.
          if (!this.status?.reportFailure(error, 'claim', claimStartedAt)) this.log.error({ err: error }, 'claim failed; retrying');
          // Backoff with jitter: after a failover every worker of the fleet must not reconnect in the same instant.
          const delay = Math.min(15_000, 250 * 2 ** Math.min(claimFailures, 6));
          this.setMode('backing-off');
          await sleep(delay / 2 + Math.random() * (delay / 2), undefined, { signal: this.stopController.signal }).catch(() => {});
          continue;
        }
      }
      if (this.stopping) break;
      // A claim that came back short may have released the slots the buffer was keeping for a capped pool.
      this.startFromBuffer();
      if (this.options.exitWhenIdle && this.backlogEmpty && this.active.size === 0 && this.buffer.size === 0) {
        void this.stop();
        break;
      }
      this.setMode('waiting');
      await this.waitForWake();
    }
  }

  private setMode(mode: LoopMode): void {
    // Once stop() began the loop only finishes its turn: the mode stays `stopping`.
    if (!this.stopping) this.mode = mode;
  }

  /**
   * Claims for the free slots, pool by pool (capped pools first, each within its own slots), plus `prefetch` jobs
   * of the shared pool to buffer; returns how many jobs were claimed.
   */
  private async claim(free: number, prefetch: number): Promise<number> {
    let budget = free;
    let total = 0;
    for (const pool of this.pools) {
      const startable = Math.min(budget, headroom(pool));
      const limit = startable + (pool.prefetch ? prefetch : 0);
      if (limit <= 0) continue;
      const signalsBefore = this.newWorkSignals;
      // Sent before the statement that dates the leases: their end as this process can know it (prefetch.ts).
      const leaseUntil = performance.now() + this.options.leaseMs;
      const cancelsHeard = new Set<number>();
      this.cancelsWhileClaiming = cancelsHeard;
      let jobs: ClaimedJob[];
      try {
        jobs = await claimJobs(this.claimDb, {
          workerId: this.options.workerId,
          limit,
          leaseMs: this.options.leaseMs,
          kinds: [...pool.kinds],
          excludeIds: [...this.active.keys()],
          onlyIds: this.options.onlyJobs,
          tenantKindConcurrency: this.options.tenantKindConcurrency,
        });
      } finally {
        this.cancelsWhileClaiming = undefined;
      }
      if (jobs.length < limit && this.newWorkSignals === signalsBefore) pool.mayHaveWork = false;
      for (const stale of this.buffer.dropClaimedAgain(jobs)) {
        this.log.warn(
          { job_id: stale.id, kind: stale.kind, attempt: stale.attempt, tenant_id: stale.tenantId },
          'buffered job lost its lease and was claimed again; the older attempt dropped',
        );
      }
      // Likewise an older attempt started from the buffer while this claim ran (it was not in excludeIds then).
      for (const job of jobs) {
        const older = this.active.get(job.id);
        if (older && older.lease.attempt < job.attempt) this.abortJob(job.id, new LeaseLostError(job.id), older.lease.attempt);
      }
      if (this.stopping) {
        // stop() began while the claim was in flight (its cancel came too late): give these back at once instead of
        // starting them, and claim nothing more. Held until the drain ends, they would wait for a long upload.
        this.buffer.push(jobs, leaseUntil);
        this.releaseBufferSoon();
        break;
      }
      // A run whose cancel was heard while the claim ran is given back unstarted, as at a stop (above).
      let toRun = jobs;
      if (cancelsHeard.size > 0) {
        toRun = jobs.filter((job) => !cancelsHeard.has(job.id));
        this.releaseUnstarted(jobs.filter((job) => cancelsHeard.has(job.id)));
      }
      // A heartbeat that answered while the claim ran may have started buffered jobs into the slots counted free
      // before it (startFromBuffer after a renewal): start only what fits now, and buffer the rest.
      const startNow = toRun.slice(0, Math.min(startable, headroom(pool), this.options.concurrency - this.running));
      for (const job of startNow) this.startJob(job, leaseUntil);
      this.buffer.push(toRun.slice(startNow.length), leaseUntil);
      total += jobs.length;
      budget -= startNow.length;
    }
    return total;
  }

  /**
   * Gives back, without counting their attempt, the runs leased to this worker that it does not know: those of a claim
   * that committed but whose answer never came (claimAnswerMaybeLost). Left alone they would wait out their lease,
   * their attempt spent by the rescuer (a run on its last attempt dead without ever running). Runs only from the poll
   * loop before it claims, or at the shutdown after the loop ended, so no claim of this worker is in flight; a release
   * of this worker's own still in flight is harmless (each is fenced on the attempt and the owner).
   */
  private async giveBackUnknownLeases(): Promise<void> {
    const known = new Set<string>([
      ...[...this.active.values()].map((entry) => `${entry.lease.jobId}:${entry.lease.attempt}`),
      ...this.buffer.all().map((job) => `${job.id}:${job.attempt}`),
      ...this.stoppedForShutdown.map((lease) => `${lease.jobId}:${lease.attempt}`),
    ]);
    const unknown = (await leasesHeldBy(this.outcomeDb, this.options.workerId)).filter((lease) => !known.has(`${lease.jobId}:${lease.attempt}`));
    this.claimAnswerMaybeLost = false;
    if (unknown.length === 0) return;
    this.log.warn({ jobs: unknown.map((lease) => lease.jobId) }, 'a claim whose answer was lost had leased these runs: giving them back unstarted');
    if ((await this.releaseLeases(unknown, false)) === null) this.claimAnswerMaybeLost = true;
  }

  /**
   * Fills free slots from the prefetch buffer, leaving those a capped pool may need (pools.ts). A slot left free
   * while a buffered job's lease is no longer known to hold asks for a heartbeat now: it starts the job, or drops it.
   */
  private startFromBuffer(): void {
    while (!this.stopping && this.running < this.options.concurrency - reservedForCappedPools(this.pools)) {
      const held = this.buffer.shift(performance.now());
      if (!held) {
        if (this.buffer.awaitingRenewal(performance.now()) && this.mayAskForBeat()) void this.heartbeat();
        break;
      }
      this.startJob(held.job, held.leaseUntil);
    }
  }

  private startJob(job: ClaimedJob, leaseUntil: number): void {
    const lease: Lease = { jobId: job.id, owner: this.options.workerId, attempt: job.attempt };
    const entry: ActiveJob = {
      job,
      lease,
      controller: new AbortController(),
      startedAt: performance.now(),
      finishing: false,
      done: Promise.resolve(),
      leaseUntil,
    };
    this.active.set(job.id, entry);
    this.running += 1;
    this.poolOf(job.kind).running += 1;
    this.updateBusy();
    this.emit('jobStarted', job);
    entry.done = runInJobSpan(job, () => this.execute(entry)).finally(() => {
      // Only our own entry: never remove a newer attempt of the same job.
      if (this.active.get(job.id) === entry) this.active.delete(job.id);
      this.updateBusy();
      // An exit-when-idle worker need not wait out the poll interval once its last job is recorded.
      if (this.options.exitWhenIdle && this.active.size === 0 && this.buffer.size === 0) {
        this.wakeRequested = true;
        this.wake?.();
      }
    });
  }

  private async execute(entry: ActiveJob): Promise<void> {
    const { job, lease, controller } = entry;
    const log = this.log.child({ job_id: job.id, kind: job.kind, attempt: job.attempt, tenant_id: job.tenantId });
    const progress = new ThrottledProgressReporter(
      this.pool,
      lease,
      // Through abortJob: the lost lease is recorded (leaseGone) even when the shutdown stopped the attempt first.
      () => this.abortJob(job.id, new LeaseLostError(job.id), lease.attempt),
      this.options.progressIntervalMs,
    );
    let outcome: JobOutcome | void = undefined;
    let failure: unknown;
    let endStartedLine: (() => void) | undefined;
    try {
      const handler = this.registry.require(job.kind);
      const payload = handler.parsePayload(job.payload);
      endStartedLine = logJobStarted(log, job);
      outcome = await handler.run({
        job,
        payload,
        signal: controller.signal,
        log,
        progress,
        services: this.services,
        assertLeaseHeld: (db) => assertLeaseHeld(db, lease),
        leaseConfirmed: () => this.confirmLease(entry),
        // Built when a handler asks for it (the CSV import's batches): most attempts never do.
        get leaseHeldCondition() {
          return leaseHeldCondition(lease);
        },
      });
    } catch (error) {
      failure = error;
    } finally {
      endStartedLine?.();
      progress.close();
      entry.finishing = true;
      this.running -= 1;
      this.buffer.observe(performance.now() - entry.startedAt);
      const pool = this.poolOf(job.kind);
      pool.running -= 1;
      // A freed slot of a capped pool may let a waiting job of its kind run, even if the last claim came back short
      // because of the ceiling: the buffer leaves it free until that pool has claimed again.
      if (!pool.prefetch) pool.mayHaveWork = true;
      this.startFromBuffer();
      this.requestWake(!pool.prefetch);
    }
    await this.record(entry, log, progress, outcome, failure);
  }

  /** Stores the outcome of one run, fenced by its lease. */
  private async record(
    entry: ActiveJob,
    log: Logger,
    progress: ThrottledProgressReporter,
    outcome: JobOutcome | void,
    failure: unknown,
  ): Promise<void> {
    const { job, lease, controller } = entry;
    const reason: unknown = controller.signal.aborted ? controller.signal.reason : undefined;
    const snapshot = progress.snapshot ?? null;
    const finished = (state: JobFinishedEvent['state'], extra: Partial<JobFinishedEvent> = {}): void => {
      const event: JobFinishedEvent = { job, state, durationMs: performance.now() - entry.startedAt, ...extra };
      logJobFinished(log, event, snapshot);
      recordAttemptOutcome(event);
      this.emit('jobFinished', event);
    };

    if (failure !== undefined && reason instanceof LeaseLostError) {
      log.warn('lease lost; the job was stopped and its outcome discarded');
      return finished('lost');
    }
    if (failure !== undefined && reason instanceof ShutdownError) {
      // Given back now, not when the last handler has drained: another task resumes it at once, and its lease is not
      // left to run out (and the rescuer to count the attempt) while a long upload drains beside it.
      log.info('job stopped for shutdown; it is released to the queue');
      const released = await this.releaseLeases([lease], false, 'tried again once the other jobs have drained');
      if (released === null) this.stoppedForShutdown.push(lease);
      // A cancel asked while it drained (the handler was stopping already, so the cancel never reached it) ends the
      // run canceled at its release: the attempt's line and event say what the run became.
      return finished(released?.some((run) => run.id === job.id && run.state === 'canceled') ? 'canceled' : 'released');
    }
    if (failure === undefined || reason instanceof CancelRequestedError) {
      const state: CompletionState =
        failure === undefined ? (outcome?.state ?? 'succeeded') : 'canceled';
      const result = failure === undefined ? outcome?.result : { canceledAt: new Date().toISOString() };
      const stored = await this.batcher.add({ jobId: job.id, attempt: job.attempt, state, result, progress: snapshot });
      if (stored === null) {
        log.warn({ state }, 'lease lost before the outcome was stored; outcome discarded');
        return finished('lost');
      }
      // What the run became, not what the handler asked for: a review of a run asked to cancel ends it canceled.
      // At debug only: `job finished` below says the same at info.
      log.debug({ state: stored, duration_ms: performance.now() - entry.startedAt }, `job ${stored}`);
      return finished(stored, { result, metrics: failure === undefined ? outcome?.metrics : undefined });
    }
    const error = toErrorRecord(failure, job.attempt, this.options.workerId);
    const delay = backoffDelayMs({ baseMs: this.options.backoffBaseMs, maxMs: this.options.backoffMaxMs }, job.attempt);
    // S3 or the database unavailable: the run waits for it without spending the attempt (queue/outage.ts).
    const attemptMs = performance.now() - entry.startedAt;
    const outage = outageFailure(
      failure,
      { budgetMs: this.options.outageBudgetMs, baseMs: this.options.backoffBaseMs, maxMs: this.options.outageBackoffMaxMs },
      attemptMs,
      Date.now(),
      Math.random,
      // A database error is recorded once the database answers again: its outage began when this worker saw it go,
      // if that was during this attempt (an earlier outage is not this one).
      (dependency) => {
        const since = dependency === 'database' ? this.status?.lastOutageSince : undefined;
        return since && since >= Date.now() - attemptMs ? new Date(since) : undefined;
      },
    );
    try {
      let tries = 0;
      let recorded = await this.retryUntilStored(() => {
        tries += 1;
        return recordFailure(this.outcomeDb, { lease, error, retryDelayMs: delay, progress: snapshot, outage });
      });
      // A try whose answer was lost (the connection dropped after its COMMIT) may have stored the failure that the
      // next try then finds no longer held: that is what the run became, not a lost lease.
      if (recorded === null && tries > 1) recorded = await failureStoredEarlier(this.outcomeDb, job.id, error).catch(() => null);
      if (recorded === null) {
        log.warn({ err: failure }, 'job failed after its lease was lost; failure discarded');
        return finished('lost', { error: failure });
      }
      const { state } = recorded;
      if (outage && (recorded.waiting || recorded.outageOverBudget)) {
        const since = recorded.outageStartedAt?.toISOString();
        const name = dependencyName(outage.dependency);
        log[recorded.waiting ? 'warn' : 'error'](
          { err: failure, error_code: error.code, dependency: outage.dependency, outage_since: since, state,
            retry_in_ms: recorded.retryInMs ?? undefined, attempt_counted: !recorded.waiting },
          recorded.waiting
            ? `waiting for ${name}: unavailable since ${since}; retry scheduled, attempt not counted`
            : `${name} unavailable since ${since}, longer than the outage budget (DEPENDENCY_OUTAGE_BUDGET_MS); job ${state}`,
        );
        return finished(recorded.waiting ? 'waiting' : state, { error: failure });
      }
      const level = state === 'queued' ? 'warn' : 'error';
      log[level](
        { err: failure, error_code: error.code, error_class: error.class, context: error.context, state,
          retry_in_ms: state === 'queued' ? delay : undefined },
        state === 'queued' ? 'job failed; retry scheduled' : `job ${state}`,
      );
      finished(state, { error: failure });
    } catch (storeError) {
      log.error({ err: storeError, cause: failure }, 'could not record the failure; the lease will expire and the rescuer requeues the job');
      finished('unrecorded', { error: failure });
    }
  }

  private async heartbeat(): Promise<void> {
    // A beat still waiting on the database must not be joined by another that queues up behind it; the tick it
    // skipped is made up as soon as it ends (at once on a new connection, when it ended by its timeout).
    if (this.heartbeatInFlight) {
      this.heartbeatMissed = true;
      return;
    }
    // Leases of stopped runs whose release failed count too: the stop may wait long for a claim, with nothing running.
    if (this.active.size === 0 && this.buffer.size === 0 && this.stoppedForShutdown.length === 0) return;
    this.heartbeatInFlight = true;
    try {
      this.beatUnderWay = this.beat();
      await this.beatUnderWay;
    } finally {
      this.heartbeatInFlight = false;
      this.beatUnderWay = undefined;
    }
    // Made up during the shutdown's drain too (its runs' leases must hold until they are released), not after.
    if (this.heartbeatMissed && !this.leasesGivenBack) {
      this.heartbeatMissed = false;
      await this.heartbeat();
    }
  }

  /**
   * JobContext.leaseConfirmed: resolves while the attempt's lease is known to hold for a third of a lease more; else
   * waits for a heartbeat (asking for one) until one renews it — or finds it lost, which aborts the attempt's signal.
   * While the database is away the beats fail, and this waits: a side effect held here cannot land after another
   * attempt took the run over.
   */
  private async confirmLease(entry: ActiveJob): Promise<void> {
    const { signal } = entry.controller;
    // A lost lease ends the wait, and so does a stop other than the shutdown (a cancel: the attempt ends anyway). The
    // shutdown lets work under way finish (its lease is held until the release): that is confirmed like any other.
    const marginMs = this.options.leaseMs / 3;
    const confirmed = (): boolean => {
      if (entry.leaseGone) throw new LeaseLostError(entry.job.id);
      if (signal.aborted && !(signal.reason instanceof ShutdownError)) throw signal.reason;
      return entry.leaseUntil - performance.now() > marginMs;
    };
    if (confirmed()) return;
    // A stop does not wait for a beat still held up (a cancel heard while the lease session hangs). Only set up when
    // a beat must be waited for: a handler may confirm once per file, and a listener each would pile up on the signal.
    let onAbort: () => void = () => {};
    const stopped = new Promise<void>((resolve) => {
      onAbort = resolve;
      if (signal.aborted) resolve();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      for (;;) {
        await Promise.race([this.beatUnderWay ?? this.heartbeat(), stopped]);
        if (confirmed()) return;
        // The beat did not get through (the database away, or another beat's turn): ask again shortly.
        await sleep(Math.min(1_000, this.options.heartbeatMs));
        if (confirmed()) return;
      }
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Whether a free slot may ask for a heartbeat to renew the buffered leases: none is under way, and none began within
   * a second (a beat that takes longer than a lease leaves them unconfirmed: beats must not follow each other at once).
   */
  private mayAskForBeat(): boolean {
    return !this.heartbeatInFlight && performance.now() - this.lastBeatAt >= Math.min(1_000, this.options.heartbeatMs);
  }

  private async beat(): Promise<void> {
    this.lastBeatAt = performance.now();
    const leases = [
      ...[...this.active.values()].map((entry) => entry.lease),
      ...this.stoppedForShutdown,
      ...this.buffer.all().map((job) => ({ jobId: job.id, attempt: job.attempt })),
    ];
    const startedAt = Date.now();
    const leaseUntil = performance.now() + this.options.leaseMs;
    try {
      const result = await extendLeases(this.heartbeatDb, this.options.workerId, leases, this.options.leaseMs);
      this.status?.reportSuccess(startedAt);
      const extended = new Set(result.extended);
      const renewed = leases.filter((lease) => extended.has(lease.jobId));
      this.buffer.renew(renewed, leaseUntil);
      for (const lease of renewed) {
        const entry = this.active.get(lease.jobId);
        if (entry?.lease.attempt === lease.attempt) entry.leaseUntil = Math.max(entry.leaseUntil, leaseUntil);
      }
      // The attempt this beat sent for each run: a claim may have taken a newer attempt of it meanwhile, whose lease holds.
      const sent = new Map(leases.map((lease) => [lease.jobId, lease.attempt]));
      for (const jobId of result.lost) {
        const attempt = sent.get(jobId)!;
        const buffered = this.buffer.remove(jobId, attempt);
        if (buffered) {
          this.log.warn(
            { job_id: jobId, kind: buffered.kind, attempt: buffered.attempt, tenant_id: buffered.tenantId },
            'buffered job lost its lease; dropped',
          );
        }
        this.abortJob(jobId, new LeaseLostError(jobId), attempt);
      }
      for (const jobId of result.cancelRequested) this.cancelJob(jobId);
      // Buffered jobs that waited for this beat to confirm their leases.
      this.startFromBuffer();
    } catch (error) {
      if (!this.status?.reportFailure(error, 'heartbeat', startedAt)) {
        this.log.warn({ err: error }, 'heartbeat failed; leases will be extended on the next beat if the database returns');
      }
    }
  }

  /**
   * Runs a fenced write again while the database is away, until it answers (a Multi-AZ failover takes a minute or two,
   * longer than a lease) or the shutdown can wait no longer: the write applies unless another attempt took the run
   * over meanwhile, and the heartbeat that follows the database's return renews the lease of a run still waiting here.
   */
  private retryUntilStored<T>(write: () => Promise<T>): Promise<T> {
    return retryFencedWrite(write, { giveUp: this.outcomeWritesGiveUp.signal, otherErrorTries: 1, maxPauseMs: 5_000, status: this.status, session: 'outcome' });
  }

  /** An operator canceled a job: abort its handler, or give it back unstarted if it was still in the buffer. */
  private cancelJob(jobId: number): void {
    // Kept whatever is found below: what is held here may be an older attempt, the claim's the newer one.
    this.cancelsWhileClaiming?.add(jobId);
    const buffered = this.buffer.remove(jobId);
    if (buffered) {
      this.releaseUnstarted([buffered]);
      return;
    }
    this.abortJob(jobId, new CancelRequestedError(jobId));
  }

  /**
   * Gives back leased runs a cancel was heard for before their handler started, without counting the attempt. The
   * release ends `canceled` a run whose cancel stands; one whose cancel was for an earlier run of it, since requeued
   * (the cancel was heard while the claim ran), goes back to the queue instead of ending canceled unasked.
   */
  private releaseUnstarted(jobs: Array<Pick<ClaimedJob, 'id' | 'attempt'>>): void {
    if (jobs.length === 0) return;
    void this.releaseLeases(jobs.map((job) => ({ jobId: job.id, attempt: job.attempt })), false).finally(() => this.updateBusy());
  }

  /** Stops the running handler of the job (of that attempt only, when given). */
  private abortJob(jobId: number, reason: Error, attempt?: number): void {
    const entry = this.active.get(jobId);
    if (!entry || (attempt !== undefined && entry.lease.attempt !== attempt)) return;
    // Known even when the attempt was stopped before (a cancel, the shutdown): a lease confirmation waiting must end.
    if (reason instanceof LeaseLostError) entry.leaseGone = true;
    if (!entry.controller.signal.aborted) {
      const { job } = entry;
      this.log.info({ job_id: jobId, kind: job.kind, attempt: job.attempt, tenant_id: job.tenantId, reason: reason.name }, 'stopping job');
      entry.controller.abort(reason);
    }
  }

  private requestWake(newWork: boolean): void {
    if (newWork) {
      this.backlogEmpty = false;
      this.newWorkSignals += 1;
      for (const pool of this.pools) pool.mayHaveWork = true;
    } else if (this.backlogEmpty) return; // a slot freed, but we know nothing is waiting
    this.wakeRequested = true;
    this.wake?.();
  }

  private async waitForWake(): Promise<void> {
    if (this.wakeRequested) {
      this.wakeRequested = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.backlogEmpty = false;
        for (const pool of this.pools) pool.mayHaveWork = true;
        resolve();
      }, this.options.pollIntervalMs);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.wake = undefined;
    this.wakeRequested = false;
  }

  private updateBusy(): void {
    const busy = this.active.size > 0 || this.buffer.size > 0;
    if (busy !== this.wasBusy) {
      this.wasBusy = busy;
      this.emit('busy', busy);
    }
  }

  /**
   * Graceful shutdown: stop claiming, ask handlers to stop at their next item boundary, wait up to the grace time,
   * then release every lease still held back to `queued` (without counting the attempt), so another worker resumes
   * those jobs at once.
   */
  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  /** Empties the prefetch buffer, returning the leases of its jobs (to release them). */
  private drainBufferedLeases(): Array<Pick<Lease, 'jobId' | 'attempt'>> {
    return this.buffer.drain().map((job) => ({ jobId: job.id, attempt: job.attempt }));
  }

  /**
   * Once stop() began: the buffered jobs' leases back now, not after the drain; one the database does not take waits
   * for the bulk release (stoppedForShutdown). The shutdown waits for these (bufferReleasesSettled).
   */
  private releaseBufferSoon(): void {
    const leases = this.drainBufferedLeases();
    if (leases.length === 0) return;
    this.bufferReleases.push(
      (async () => {
        if ((await this.releaseLeases(leases, false, 'tried again once the running jobs have drained')) !== null) return;
        for (const lease of leases) this.stoppedForShutdown.push({ ...lease, owner: this.options.workerId });
      })(),
    );
  }

  /** Waits for every releaseBufferSoon, those begun while it waits included. */
  private async bufferReleasesSettled(): Promise<void> {
    for (let i = 0; i < this.bufferReleases.length; i += 1) await this.bufferReleases[i];
  }

  /**
   * Gives leases back to the queue without counting the attempt (shutdown), fenced; whether the database took the
   * release. `then`: what follows a failure.
   */
  /** The runs released and what each became; null when the release failed (logged). */
  private async releaseLeases(
    leases: Array<Pick<Lease, 'jobId' | 'attempt'>>,
    timedOut: boolean,
    then = 'their leases expire and the rescuer requeues them',
  ): Promise<ReleasedJob[] | null> {
    if (leases.length === 0) return [];
    try {
      const released = await releaseJobs(this.outcomeDb, this.options.workerId, leases);
      const queued = released.filter((job) => job.state === 'queued').map((job) => job.id);
      if (queued.length > 0 || released.length === 0) this.log.info({ jobs: queued, timed_out: timedOut }, 'released jobs back to the queue');
      // A run whose cancel stands ends here, with no attempt of its own to write `job finished`: one line each, so
      // that a run's story in the log ends as its record does.
      for (const job of released) {
        if (job.state === 'canceled') {
          this.log.info({ job_id: job.id, kind: job.kind, tenant_id: job.tenantId, outcome: 'canceled' }, 'job canceled at its release: a cancel was asked for it');
        }
      }
      return released;
    } catch (error) {
      this.log.error({ err: error, jobs: leases.map((lease) => lease.jobId) }, `could not release jobs; ${then}`);
      return null;
    }
  }

  private async shutdown(): Promise<void> {
    this.mode = 'stopping';
    this.stopping = true;
    this.stopController.abort();
    // Outcomes still waiting for the database are given up when the grace time is over (their runs are rescued).
    const giveUpTimer = setTimeout(() => this.outcomeWritesGiveUp.abort(), this.options.shutdownGraceMs);
    giveUpTimer.unref();
    this.wake?.();
    // A claim in flight now can only take runs that the shutdown would release again, and it may be waiting behind a
    // lock (a migration's) for as long as its timeout: cancel it. One that commits first still returns its runs.
    const claimClient = this.claimClient;
    if (claimClient) void sendCancelRequest(claimClient);
    // Handlers hear about the shutdown first and the grace time starts now, whatever the poll loop is doing.
    const abortRunning = () => {
      for (const entry of this.active.values()) {
        if (!entry.finishing && !entry.controller.signal.aborted) entry.controller.abort(new ShutdownError());
      }
    };
    abortRunning();
    // Jobs claimed but not started go back at once too: another task starts them while the running ones drain.
    this.releaseBufferSoon();
    // The grace timer is cleared once every handler is done: a pending timer would keep the process alive for the
    // whole grace time after a drain that finished at once.
    const graceTimer = new AbortController();
    const graceOver = sleep(this.options.shutdownGraceMs, true, { signal: graceTimer.signal }).catch(() => false);
    await Promise.race([this.loopDone, graceOver]);
    abortRunning();
    const draining = [...this.active.values()];
    if (draining.length > 0) this.log.info({ jobs: draining.map((entry) => entry.job.id) }, 'draining running jobs');
    const allDone = Promise.allSettled(draining.map((entry) => entry.done));
    const timedOut = await Promise.race([allDone.then(() => false), graceOver]);
    graceTimer.abort();
    await this.batcher.drain();
    // Jobs whose handler stopped for the shutdown, and jobs whose handler is still running after the grace time
    // (their late writes are fenced out once the lease is released).
    const stillRunningEntries = draining.filter((entry) => this.active.get(entry.job.id) === entry);
    // What they still do is not this worker's to finish: no lease confirmed from now on (confirmLease).
    for (const entry of stillRunningEntries) entry.leaseGone = true;
    const stillRunning = stillRunningEntries.map((entry) => entry.lease);
    await this.bufferReleasesSettled();
    const toRelease = [
      ...new Map([...this.stoppedForShutdown, ...stillRunning].map((lease) => [lease.jobId, lease])).values(),
      ...this.drainBufferedLeases(),
    ];
    const releasedUpTo = this.stoppedForShutdown.length;
    this.leasesGivenBack = true;
    await this.releaseLeases(toRelease, timedOut);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    await this.listener?.stop();
    if (this.claimPool) {
      // Waits for a claim still in flight (its cancel did not reach the server, or the grace ended first): the runs it
      // took are buffered once the loop has ended, and released here rather than left to their leases' expiry.
      await this.claimPool.end();
      await this.loopDone;
      await this.bufferReleasesSettled();
      await this.releaseLeases([...this.stoppedForShutdown.slice(releasedUpTo), ...this.drainBufferedLeases()], timedOut);
    }
    // Runs leased by a claim whose answer was lost, which the loop had no turn left to give back.
    if (this.claimAnswerMaybeLost) {
      await this.giveBackUnknownLeases().catch((error: unknown) => {
        this.log.error({ err: error }, 'could not look for runs leased by a claim whose answer was lost; their leases expire and the rescuer requeues them');
      });
    }
    await Promise.all([this.heartbeatPool?.end(), this.outcomePool?.end()]);
    clearTimeout(giveUpTimer);
    this.active.clear();
    this.updateBusy();
    this.mode = 'stopped';
  }
}

/**
 * The client-side bound on a statement of the lease session: the heartbeat interval, at least 2 s. A beat still
 * waiting then is overtaken by the next tick, which heartbeat() makes up as soon as the beat gives up: with heartbeats
 * a third of the lease (the default), a beat lost to a dead connection and the one after it, on a new connection, end
 * about two intervals after the last renewal, a third of a lease before the leases would run out. The server's own
 * timeout (a second shorter) ends a statement that is only slow, so a busy database costs a beat, not the connection.
 */
export function leaseStatementTimeoutMs(heartbeatMs: number): number {
  return Math.max(2_000, heartbeatMs);
}

/** Session option that turns the state-notification trigger off for a worker's connections (empty when on). */
export function stateNotificationOption(enabled: boolean): string {
  return enabled ? '' : '-c bulk_import.state_notifications=off';
}
