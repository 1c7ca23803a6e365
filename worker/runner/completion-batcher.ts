// Buffers job completions and writes them in one statement per turn of the event loop: with many short jobs this
// turns N round-trips into one, which is most of the queue's throughput.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { completeJobs, type Completion } from '../queue/finish.js';

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
    private readonly maxBatch = 1000,
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
        const batch = this.pending.splice(0, this.maxBatch);
        const applied = await this.store(batch.map((item) => item.completion));
        for (const item of batch) item.resolve(applied.has(item.completion.jobId));
      }
    } finally {
      this.flushing = undefined;
    }
  }

  private async store(completions: Completion[]): Promise<Set<number>> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await completeJobs(this.db, this.workerId, completions);
      } catch (error) {
        // The leases stay ours for a while: retry briefly; if the database stays away, the leases expire and the
        // rescuer requeues the jobs (at-least-once).
        if (attempt >= 5) {
          this.log.error({ err: error, jobs: completions.map((c) => c.jobId) }, 'could not record job completions');
          return new Set();
        }
        await sleep(100 * 2 ** attempt);
      }
    }
  }
}
