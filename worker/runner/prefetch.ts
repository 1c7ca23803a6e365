// Adaptive prefetch: how many claimed-but-not-started jobs a worker may hold beyond its free slots.
//
// Claiming only the free slots costs a round-trip per handful of jobs, which caps throughput for short jobs. Holding
// a local buffer of leased jobs removes that cap (graphile-worker's localQueue does this with a fixed size), but a
// fixed buffer of long jobs would hide work from idle workers for minutes. So the buffer is sized to the work the
// slots can drain within a short window: hundreds of millisecond-jobs, none for imports that run for minutes.
//
// A buffered job starts only while its lease is known to hold: each carries the local time (performance.now()) by
// which its lease ends at the latest — a lease length after the claim or the heartbeat that set it was sent, which is
// no later than the expiry the database stored. Past that time the run may have been rescued and claimed by another
// worker (heartbeats failing for a whole lease), so starting it would run a second attempt beside the one that holds
// the run now. Such a job waits for the next heartbeat: extended, it starts; lost, it is dropped.
import type { ClaimedJob, Lease } from '../queue/types.js';

export interface Held {
  job: ClaimedJob;
  /** performance.now() by which the lease ends at the latest. */
  leaseUntil: number;
}

export interface PrefetchOptions {
  concurrency: number;
  /** Hold at most this much work (in expected handler time per slot); 0 turns prefetching off. */
  windowMs: number;
  /** Hard ceiling on buffered jobs. */
  max: number;
}

export class PrefetchBuffer {
  private readonly jobs: Held[] = [];
  private averageDurationMs: number | undefined;

  constructor(private readonly options: PrefetchOptions) {}

  get size(): number {
    return this.jobs.length;
  }

  /** Records how long a handler ran (exponentially weighted, so the target follows the current workload). */
  observe(durationMs: number): void {
    this.averageDurationMs =
      this.averageDurationMs === undefined ? durationMs : this.averageDurationMs * 0.9 + durationMs * 0.1;
  }

  /** How many jobs the buffer should hold now: nothing until the first jobs have shown how long they take. */
  target(): number {
    if (this.options.windowMs <= 0 || this.options.max <= 0 || this.averageDurationMs === undefined) return 0;
    const drainable = (this.options.concurrency * this.options.windowMs) / Math.max(this.averageDurationMs, 0.01);
    return Math.min(this.options.max, Math.floor(drainable));
  }

  /** Jobs worth claiming on top of the free slots (0 while the buffer is at least half full). */
  wanted(): number {
    const target = this.target();
    return this.jobs.length * 2 > target ? 0 : target - this.jobs.length;
  }

  /** Buffers claimed jobs whose leases last until `leaseUntil` at the latest (performance.now()). */
  push(jobs: ClaimedJob[], leaseUntil: number): void {
    for (const job of jobs) this.jobs.push({ job, leaseUntil });
  }

  /** A heartbeat extended these leases: they hold until `leaseUntil` at the latest. Other attempts are left as they are. */
  renew(leases: ReadonlyArray<Pick<Lease, 'jobId' | 'attempt'>>, leaseUntil: number): void {
    const renewed = new Set(leases.map((lease) => `${lease.jobId}:${lease.attempt}`));
    for (const held of this.jobs) {
      if (renewed.has(`${held.job.id}:${held.job.attempt}`)) held.leaseUntil = Math.max(held.leaseUntil, leaseUntil);
    }
  }

  /**
   * Takes out the buffered jobs that a new claim returned again, and returns them: their lease ran out while they
   * waited here (a heartbeat that could not reach the database for a lease length) and a rescuer requeued them, so the
   * claim's attempt is the one that holds the run now. Left in, the stale attempt would start as well: two handlers of
   * one run in one process, the older one's lease lost.
   */
  dropClaimedAgain(claimed: readonly ClaimedJob[]): ClaimedJob[] {
    if (this.jobs.length === 0 || claimed.length === 0) return [];
    const ids = new Set(claimed.map((job) => job.id));
    const stale = this.jobs.filter((held) => ids.has(held.job.id));
    if (stale.length > 0) this.jobs.splice(0, this.jobs.length, ...this.jobs.filter((held) => !ids.has(held.job.id)));
    return stale.map((held) => held.job);
  }

  /**
   * Takes out the first job whose lease still holds at `now`, with when it ends; jobs past their lease stay for the
   * next heartbeat.
   */
  shift(now: number): Held | undefined {
    const index = this.jobs.findIndex((held) => held.leaseUntil > now);
    return index === -1 ? undefined : this.jobs.splice(index, 1)[0];
  }

  /** Whether a job waits past the time its lease was known to hold: only a heartbeat can say if it is still ours. */
  awaitingRenewal(now: number): boolean {
    return this.jobs.some((held) => held.leaseUntil <= now);
  }

  /** Takes a job out (cancel, lost lease; of that attempt only, when given); returns it when it was buffered. */
  remove(jobId: number, attempt?: number): ClaimedJob | undefined {
    const index = this.jobs.findIndex((held) => held.job.id === jobId && (attempt === undefined || held.job.attempt === attempt));
    return index === -1 ? undefined : this.jobs.splice(index, 1)[0]!.job;
  }

  drain(): ClaimedJob[] {
    return this.jobs.splice(0).map((held) => held.job);
  }

  all(): ClaimedJob[] {
    return this.jobs.map((held) => held.job);
  }
}
