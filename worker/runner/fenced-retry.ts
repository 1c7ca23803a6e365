// Retrying a fenced write (an outcome, a failure, a batch of completions) while the database is away. The write is
// fenced by its lease, so a late retry changes nothing when the lease was lost meanwhile: giving up early gains nothing
// and loses the outcome (a run that succeeded would run again, or end dead on its last attempt). The worker retries
// until the database answers, or until its shutdown can wait no longer (`giveUp`); then the error is thrown and the
// rescuer requeues the jobs once their leases expire (at-least-once).
import { setTimeout as sleep } from 'node:timers/promises';
import { isConnectionError } from '../db/database-status.js';
import type { DatabaseStatusSink } from '../db/pool.js';

export interface FencedRetryOptions {
  /** Keep retrying a connection failure for this long (ms)… */
  forMs?: number;
  /** …or until this aborts (either or both; with neither, for ever). */
  giveUp?: AbortSignal | undefined;
  /** Tries in all for any other error (1: it is thrown at once). */
  otherErrorTries: number;
  /** The ceiling of the doubling pause between tries. */
  maxPauseMs: number;
  /** Where the database's availability is reported, and the session name it is reported under. */
  status?: DatabaseStatusSink | undefined;
  session: string;
}

export async function retryFencedWrite<T>(write: () => Promise<T>, options: FencedRetryOptions): Promise<T> {
  const deadline = options.forMs === undefined ? Infinity : Date.now() + options.forMs;
  for (let attempt = 1; ; attempt += 1) {
    const startedAt = Date.now();
    try {
      const result = await write();
      options.status?.reportSuccess(startedAt);
      return result;
    } catch (error) {
      options.status?.reportFailure(error, options.session, startedAt);
      if (Date.now() >= deadline || options.giveUp?.aborted || (!isConnectionError(error) && attempt >= options.otherErrorTries)) throw error;
      await sleep(Math.min(options.maxPauseMs, 100 * 2 ** Math.min(attempt, 16)), undefined, { signal: options.giveUp }).catch(() => {});
    }
  }
}
