// The tries of one batch, as a fill run's batches (fill-run.ts) and an undo's (undo.ts) both take them. A batch that
// outlasts the statement timeout is halved (its size's sizer, batch-sizer.ts), without counting a try, down to one
// row; a batch of one row that still outlasts it is tried again as it is, and so is a batch that waited for a row a
// writer holds past the lock timeout, met a deadlock or a serialization failure: BATCH_TRIES tries of each, counted
// apart (a batch that waited on writers has not used up its one row's tries), with a growing pause between them.
import { sqlState } from '../db/sql-state.js';
import { BATCH_TRIES, batchRetryPauseMs, type BatchSizer } from './batch-sizer.js';
import { isStatementTimeout, RETRYABLE_BATCH_SQLSTATES } from './errors.js';

/** What the caller does with a batch that failed (rolled back whole). */
export type BatchStep =
  /** Outlasted the statement timeout: the same rows again, only the first `next` of them. */
  | { kind: 'halve'; rows: number; next: number }
  /** The same batch again after `pauseMs`: `try` is the try of this reason that failed (1-based). */
  | { kind: 'retry'; reason: 'lock' | 'timeout'; sqlstate: string; try: number; pauseMs: number }
  /** No more tries: a one-row timeout or a lock wait the BATCH_TRIES-th time, or an error no try mends (`other`). */
  | { kind: 'give-up'; reason: 'lock' | 'timeout' | 'other'; tries: number };

export class BatchTries {
  private lockTries = 0;
  private oneRowTimeouts = 0;

  constructor(private readonly sizer: BatchSizer) {}

  /**
   * A batch of `rows` failed with `error`. A statement ended by the caller's own cancel has the timeout's SQLSTATE:
   * the caller tells that apart before it asks.
   */
  failed(error: unknown, rows: number): BatchStep {
    const code = sqlState(error);
    if (isStatementTimeout(error)) {
      const next = this.sizer.timedOut(rows);
      if (rows > 1) return { kind: 'halve', rows, next };
      this.oneRowTimeouts += 1;
      if (this.oneRowTimeouts >= BATCH_TRIES) return { kind: 'give-up', reason: 'timeout', tries: this.oneRowTimeouts };
      return { kind: 'retry', reason: 'timeout', sqlstate: code!, try: this.oneRowTimeouts, pauseMs: batchRetryPauseMs(this.oneRowTimeouts) };
    }
    if (code === undefined || !RETRYABLE_BATCH_SQLSTATES.has(code)) return { kind: 'give-up', reason: 'other', tries: 1 };
    this.lockTries += 1;
    if (this.lockTries >= BATCH_TRIES) return { kind: 'give-up', reason: 'lock', tries: this.lockTries };
    return { kind: 'retry', reason: 'lock', sqlstate: code, try: this.lockTries, pauseMs: batchRetryPauseMs(this.lockTries) };
  }

  /** The batch committed: the next one starts with all its tries. */
  committed(): void {
    this.lockTries = 0;
    this.oneRowTimeouts = 0;
  }
}
