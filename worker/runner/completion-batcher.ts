// Buffers job completions and writes them in one statement per turn of the event loop: with many short jobs this
// turns N round-trips into one, which is most of the queue's throughput.
import { setTimeout as sleep } from 'node:timers/promises';
import { isConnectionError } from '../db/database-status.js';
import type { DatabaseStatusSink, Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { completeJobs, type Completion } from '../queue/finish.js';

export interface CompletionBatcherOptions {
  maxBatch?: number;
  /**
   * How long to keep trying while the database is away (a restart, a failover): the leases stay ours about this long
   * (one lease length), so a completion stored within it still counts and the job does not run again.
   */
  retryForMs?: number;
  status?: DatabaseStatusSink | undefined;
}

interface Pending {
  completion: Completion;
  resolve(applied: boolean): void;
}

export class CompletionBatcher {
  private pending: Pending[] = [];
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly db: Queryable,
    private readonly workerId: string,
    private readonly log: Logger,
    private readonly options: CompletionBatcherOptions = {},
  ) {}

  /** Resolves true once the completion is stored, false when the lease had been lost (or storing kept failing). */
  add(completion: Completion): Promise<boolean> {
    return new Promise((resolve) => {
      this.pending.push({ completion, resolve });
      if (!this.flushing) this.flushing = this.flushSoon();
    });
  }

  get size(): number {
    return this.pending.length;
  }

  /** Waits until everything added so far is stored. */
  async drain(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  private async flushSoon(): Promise<void> {
    await new Promise((resolve) => setImmediate(resolve));
    try {
      while (this.pending.length > 0) {
        const batch = this.pending.splice(0, this.options.maxBatch ?? 1000);
        const applied = await this.store(batch.map((item) => item.completion));
        for (const item of batch) item.resolve(applied.has(item.completion.jobId));
      }
    } finally {
      this.flushing = undefined;
    }
  }

  private async store(completions: Completion[]): Promise<Set<number>> {
    const deadline = Date.now() + (this.options.retryForMs ?? 3_000);
    for (let attempt = 1; ; attempt += 1) {
      const startedAt = Date.now();
      try {
        const applied = await completeJobs(this.db, this.workerId, completions);
        this.options.status?.reportSuccess(startedAt);
        return applied;
      } catch (error) {
        // The write is fenced: retried late, it changes nothing if the leases were lost meanwhile. If the database
        // stays away past the leases, the rescuer requeues the jobs (at-least-once).
        const outage = isConnectionError(error);
        if (outage) this.options.status?.reportFailure(error, 'completion', startedAt);
        if (Date.now() >= deadline || (!outage && attempt >= 5)) {
          this.log.error({ err: error, jobs: completions.map((c) => c.jobId) }, 'could not record job completions');
          return new Set();
        }
        await sleep(Math.min(2_000, 100 * 2 ** attempt));
      }
    }
  }
}
