// How many rows a backfill's next batch takes. A batch is one transaction that holds its rows' locks until it commits,
// and each of its statements runs under a statement timeout (the payload's `batchTimeoutMs`): a batch that outlasts
// it is rolled back by the server and tried again at half the size, down to one row, so a table where a batch of the
// configured size is slow (wide rows, triggers, a cold cache, a busy primary) gets batches that fit instead of a
// run that fails or holds locks for minutes. Once batches run well within the timeout again the size grows back, one
// doubling at a time, up to the configured size.

/** The longest a batch waits for a row a writer holds before it rolls back and is tried again as it is. */
export const BATCH_LOCK_TIMEOUT_MS = 10_000;

/**
 * The settings of a batch transaction with statement timeout `timeoutMs`, as one statement. The lock timeout stays
 * below the statement timeout (half of it when that is under 20 s), so one long wait for a row a writer holds ends as
 * a lock timeout — tried again as it is, and in the end a transient failure — not as a statement timeout, which would
 * take a long application transaction for a batch too big and halve it down to a failing row. (Several shorter waits
 * in one batch can still add up to the statement timeout; that batch is halved.)
 */
export function batchTimeoutSettings(timeoutMs: number): string {
  const lockTimeoutMs = Math.min(BATCH_LOCK_TIMEOUT_MS, Math.floor(timeoutMs / 2));
  return `SET LOCAL lock_timeout = ${lockTimeoutMs}; SET LOCAL statement_timeout = ${timeoutMs}`;
}

/**
 * Tries of one batch on deadlock, serialization failure or a lock wait longer than its lock timeout — and, counted
 * apart, of a batch of one row that outlasts the statement timeout (larger ones are halved first, without counting a
 * try). Shared by a fill run's batches and an undo's.
 */
export const BATCH_TRIES = 5;

/** The pause before try `tryNumber + 1` of a batch (ms): 200, 400, 800, 1,600 — for a busy writer to pass. */
export const batchRetryPauseMs = (tryNumber: number): number => 100 * 2 ** tryNumber;

/** Batches in a row, each of the full size and under a quarter of the timeout, before the size doubles again. */
export const GROW_AFTER_QUICK_BATCHES = 10;

/**
 * The size a run's batches start at: the configured one, or the size an earlier attempt of the run had come down to
 * (its saved progress) when that is smaller — batches of the configured size timed out, and would again.
 */
export function startingBatchSize(configured: number, resumeAt: unknown): number {
  const saved = typeof resumeAt === 'number' && Number.isSafeInteger(resumeAt) && resumeAt >= 1 ? resumeAt : configured;
  return Math.min(configured, saved);
}

export class BatchSizer {
  /** Rows the next batch takes. */
  current: number;
  /** Batches that outlasted the timeout, this attempt. */
  timeouts = 0;
  private quickInARow = 0;

  /** `resumeAt`: the size an earlier attempt of the run had come down to (its saved progress), if any. */
  constructor(
    readonly configured: number,
    readonly timeoutMs: number,
    resumeAt?: unknown,
  ) {
    this.current = startingBatchSize(configured, resumeAt);
  }

  /** A batch of `rows` outlasted the timeout: the size its retry takes (half, at least one row). */
  timedOut(rows: number): number {
    this.timeouts += 1;
    this.quickInARow = 0;
    this.current = Math.max(1, Math.min(this.current, Math.floor(rows / 2)));
    return this.current;
  }

  /**
   * A batch that asked for `asked` rows committed after `durationMs`. True when the size grew: only batches of the
   * whole current size count (a range's short last batch says nothing about a full one), and only ten quick ones in a
   * row, so a size that just timed out is not tried again at once.
   */
  committed(asked: number, durationMs: number): boolean {
    if (asked < this.current) return false;
    if (durationMs >= this.timeoutMs / 4) {
      this.quickInARow = 0;
      return false;
    }
    this.quickInARow += 1;
    if (this.quickInARow < GROW_AFTER_QUICK_BATCHES || this.current >= this.configured) return false;
    this.quickInARow = 0;
    this.current = Math.min(this.configured, this.current * 2);
    return true;
  }
}
