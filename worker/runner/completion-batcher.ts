// Buffers job completions and writes them in one statement per turn of the event loop: with many short jobs this
// turns N round-trips into one, which is most of the queue's throughput.
import type { DatabaseStatusSink, Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { LEASE_EXPIRED_CODE } from '../queue/errors.js';
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
    let tries = 0;
    try {
      const stored = await retryFencedWrite(() => {
        tries += 1;
        return completeJobs(this.db, this.workerId, completions);
      }, {
        forMs: this.options.retryForMs ?? (this.options.giveUp ? undefined : 3_000),
        giveUp: this.options.giveUp,
        otherErrorTries: 5,
        maxPauseMs: 2_000,
        status: this.options.status,
        session: 'completion',
      });
      // A try whose answer was lost (the connection dropped after the COMMIT) may have stored what the next try then
      // finds no longer held: look those up before calling them lost.
      return tries > 1 ? await this.withStoredEarlier(completions, stored) : stored;
    } catch (error) {
      this.log.error({ err: error, jobs: completions.map((c) => c.jobId) }, 'could not record job completions');
      return new Map();
    }
  }

  /** `stored`, plus the completions an earlier try stored: the run holds that outcome, by that attempt, no lease. */
  private async withStoredEarlier(completions: Completion[], stored: Map<number, CompletionState>): Promise<Map<number, CompletionState>> {
    const unanswered = completions.filter((completion) => !stored.has(completion.jobId));
    if (unanswered.length === 0) return stored;
    try {
      // Not a rescue of this attempt (its lease ran out while the write waited): the rescuer ends a run asked to cancel
      // `canceled` too, with the attempt unchanged, and records LEASE_EXPIRED for that attempt.
      const { rows } = await this.db.query<{ id: number; state: CompletionState; attempts: number }>(
        `SELECT id, state, attempts FROM jobs
         WHERE id = ANY($1::bigint[]) AND lease_owner IS NULL
           AND NOT (coalesce(last_error ->> 'code', '') = '${LEASE_EXPIRED_CODE}' AND last_error ->> 'attempt' = attempts::text)`,
        [unanswered.map((completion) => completion.jobId)],
      );
      const found = new Map(rows.map((row) => [Number(row.id), row]));
      const all = new Map(stored);
      for (const completion of unanswered) {
        const row = found.get(completion.jobId);
        // A review_ready outcome of a run asked to cancel is stored canceled (finish.ts).
        const expected = row?.state === completion.state || (completion.state === 'review_ready' && row?.state === 'canceled');
        if (row && row.attempts === completion.attempt && expected) all.set(completion.jobId, row.state);
      }
      return all;
    } catch {
      return stored;
    }
  }
}

/** The newest attempt of each run in a batch. */
function newestAttempts(batch: Pending[]): Map<number, number> {
  const newest = new Map<number, number>();
  for (const { completion } of batch) newest.set(completion.jobId, Math.max(completion.attempt, newest.get(completion.jobId) ?? 0));
  return newest;
}
