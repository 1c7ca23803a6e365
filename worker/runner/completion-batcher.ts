// Buffers job completions and writes them in one statement per turn of the event loop: with many short jobs this
// turns N round-trips into one, which is most of the queue's throughput.
import type { DatabaseStatusSink, Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { completeJobs, type Completion, type CompletionState } from '../queue/finish.js';
import { retryFencedWrite } from './fenced-retry.js';

export interface CompletionBatcherOptions {
  maxBatch?: number;
  /**
   * How long to keep trying while the database is away (a restart, a failover). Without it, and without `giveUp`, 3 s.
   * The write is fenced: a completion stored late still counts unless another attempt took the run over.
   */
  retryForMs?: number;
  /** Keep trying until this aborts (the worker: until its shutdown can wait no longer). */
  giveUp?: AbortSignal;
  status?: DatabaseStatusSink | undefined;
}

interface Pending {
  completion: Completion;
  resolve(stored: CompletionState | null): void;
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

  /**
   * Resolves with the state stored once the completion is (the one asked for, or `canceled` for a review_ready outcome
   * of a run asked to cancel), null when the lease had been lost (or storing kept failing).
   */
  add(completion: Completion): Promise<CompletionState | null> {
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
        const stored = await this.store(batch.map((item) => item.completion));
        const newest = newestAttempts(batch);
        // The fence stores at most one attempt of a run: the run's current one. An older attempt of the same run in the
        // batch (aborted as this process claimed the run again) was not stored, whatever the answer says for the id.
        for (const item of batch) {
          const { jobId, attempt } = item.completion;
          item.resolve(attempt === newest.get(jobId) ? (stored.get(jobId) ?? null) : null);
        }
      }
    } finally {
      this.flushing = undefined;
    }
  }

  private async store(completions: Completion[]): Promise<Map<number, CompletionState>> {
    try {
      return await retryFencedWrite(() => completeJobs(this.db, this.workerId, completions), {
        forMs: this.options.retryForMs ?? (this.options.giveUp ? undefined : 3_000),
        giveUp: this.options.giveUp,
        otherErrorTries: 5,
        maxPauseMs: 2_000,
        status: this.options.status,
        session: 'completion',
      });
    } catch (error) {
      this.log.error({ err: error, jobs: completions.map((c) => c.jobId) }, 'could not record job completions');
      return new Map();
    }
  }
}

/** The newest attempt of each run in a batch. */
function newestAttempts(batch: Pending[]): Map<number, number> {
  const newest = new Map<number, number>();
  for (const { completion } of batch) newest.set(completion.jobId, Math.max(completion.attempt, newest.get(completion.jobId) ?? 0));
  return newest;
}
