// The resumable walk of a backfill run: keyset-ordered batches, one transaction each, that fence on the lease, fill
// the rows optimistically and save the cursor with the progress in the same commit. Rows a concurrent writer changed
// in between are retried in later batches. A crash, a cancel or a shutdown loses at most the batch in flight; the
// next attempt resumes after the last committed key.
import { setTimeout as sleep } from 'node:timers/promises';
import { withTransaction } from '../db/pool.js';
import type { JobContext } from '../handlers/types.js';
import { LeaseLostError, saveProgress } from '../queue/lease.js';
import type { Lease } from '../queue/types.js';
import type { CompiledBackfill } from './compile.js';
import { describeBackfillError, RETRYABLE_BATCH_SQLSTATES, sqlState } from './errors.js';
import { freshProgress, resumableProgress, withRate, type BackfillPhase, type BackfillProgress } from './progress.js';
import { countRows, fillBatch, type BackfillScope, type BatchSelection, type FillResult } from './statements.js';

export interface BackfillRunOptions {
  backfill: CompiledBackfill;
  scope: BackfillScope;
  batchSize: number;
  /** Stop after this many rows written by the run (over all attempts); null = no limit. */
  maxRows: number | null;
}

export interface FillOutcome {
  progress: BackfillProgress;
  rowsWrittenThisAttempt: number;
  /** The saved cursor this attempt started from; undefined for a fresh start. */
  resumedFromCursor: unknown;
  /** Rows in scope that still lack the field after the run: 0 is the proof of 100%. */
  remaining: number;
  rowsInScope: number;
  stoppedBy: 'end' | 'maxRows';
  /** Rows that kept conflicting with writers through every retry round. */
  unresolvedConflicts: unknown[];
  durationMs: number;
}

/** Rounds of retries for conflicting rows once the walk is done, with a growing pause for busy writers to pass. */
const RETRY_ROUNDS = 8;
const RETRY_PAUSE_MS = 50;
/** Tries of one batch on deadlock, serialization failure or a lock wait longer than LOCK_TIMEOUT. */
const BATCH_TRIES = 5;
/** A batch never waits longer than this for a row a writer holds; it rolls back and tries again. */
const LOCK_TIMEOUT = '10s';

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw signal.reason;
}

async function pause(ms: number, signal: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, { signal });
  } catch {
    throw signal.reason;
  }
}

function describeSelection(selection: BatchSelection): Record<string, unknown> {
  return 'keys' in selection
    ? { retryKeys: selection.keys.slice(0, 10), retryKeyCount: selection.keys.length }
    : { after: selection.after, limit: selection.limit };
}

export async function runFill(context: JobContext<unknown>, options: BackfillRunOptions): Promise<FillOutcome> {
  const { job, signal, log } = context;
  const { backfill, scope } = options;
  const pool = context.services.pool;
  const name = backfill.definition.name;
  const lease: Lease = { jobId: job.id, owner: job.leaseOwner, attempt: job.attempt };
  const startedAt = Date.now();
  const saved = resumableProgress(job.progress, name, scope.tenantId);
  let progress = saved ?? freshProgress('fill', name, scope.tenantId);
  let writtenThisAttempt = 0;
  if (saved) log.info({ cursor: saved.cursor, done: saved.done, retry_keys: saved.retryKeys.length }, 'resuming backfill from its saved cursor');

  const budget = () => (options.maxRows === null ? Infinity : options.maxRows - progress.done);
  // The reporter's copy is written at once (flush), so no throttled write of an older copy can land after a batch's
  // commit and move the stored cursor back; its snapshot is what the runner stores if the attempt fails.
  const publish = async (next: BackfillProgress) => {
    progress = withRate(next, writtenThisAttempt, startedAt);
    context.progress.update({ ...progress });
    await context.progress.flush();
  };
  const count = async () => {
    try {
      return await countRows(pool, backfill, scope);
    } catch (error) {
      throw describeBackfillError(error, backfill, { statement: 'count' });
    }
  };

  await publish({ ...progress, phase: 'counting' });
  const before = await count();
  await publish({ ...progress, phase: 'filling', total: progress.done + Math.min(before.missing, budget()) });

  const runBatch = async (selection: BatchSelection, phase: BackfillPhase): Promise<FillResult> => {
    for (let tryNumber = 1; ; tryNumber += 1) {
      try {
        const { result, next } = await withTransaction(pool, async (tx) => {
          await context.assertLeaseHeld(tx);
          await tx.query(`SET LOCAL lock_timeout = '${LOCK_TIMEOUT}'`);
          const result = await fillBatch(tx, backfill, scope, selection);
          const next = withRate(advance(progress, selection, result, phase), writtenThisAttempt + result.written, startedAt);
          if (!(await saveProgress(tx, lease, next))) throw new LeaseLostError(job.id);
          return { result, next };
        });
        writtenThisAttempt += result.written;
        await publish(next);
        return result;
      } catch (error) {
        const code = sqlState(error);
        if (code !== undefined && RETRYABLE_BATCH_SQLSTATES.has(code) && tryNumber < BATCH_TRIES) {
          log.warn({ sqlstate: code, try: tryNumber, ...describeSelection(selection) }, 'backfill batch rolled back; trying it again');
          await pause(100 * 2 ** tryNumber, signal);
          continue;
        }
        throw describeBackfillError(error, backfill, describeSelection(selection));
      }
    }
  };
  const retryChunk = (phase: BackfillPhase, most: number) => {
    const keys = progress.retryKeys.slice(0, Math.min(options.batchSize, most, budget()));
    return runBatch({ keys }, phase).then(() => keys.length);
  };

  let stoppedBy: FillOutcome['stoppedBy'] = 'end';
  for (;;) {
    throwIfAborted(signal);
    if (budget() <= 0) {
      stoppedBy = 'maxRows';
      break;
    }
    // Conflicts piling up (busy writers): retry one batch of them before walking on, so the list stays short.
    if (progress.retryKeys.length >= options.batchSize) {
      await retryChunk('filling', Infinity);
      if (budget() <= 0) continue;
    }
    const limit = Math.min(options.batchSize, budget());
    const result = await runBatch({ after: progress.cursor, limit }, 'filling');
    if (result.selected < limit) break;
  }

  // The walk is done: retry the rows that conflicted, each round once over the keys pending when it starts (rows
  // that conflict again wait for the next round).
  for (let round = 0; stoppedBy === 'end' && progress.retryKeys.length > 0 && round < RETRY_ROUNDS; round += 1) {
    await pause(RETRY_PAUSE_MS * 2 ** round, signal);
    for (let pending = progress.retryKeys.length; pending > 0 && budget() > 0; ) {
      throwIfAborted(signal);
      pending -= await retryChunk('retrying', pending);
    }
  }

  await publish({ ...progress, phase: 'verifying' });
  const after = await count();
  await publish({ ...progress, phase: 'done' });
  return {
    progress,
    rowsWrittenThisAttempt: writtenThisAttempt,
    resumedFromCursor: saved?.cursor,
    remaining: after.missing,
    rowsInScope: after.rows,
    stoppedBy,
    unresolvedConflicts: stoppedBy === 'end' ? progress.retryKeys : [],
    durationMs: Date.now() - startedAt,
  };
}

/** The progress after one committed batch. */
function advance(progress: BackfillProgress, selection: BatchSelection, result: FillResult, phase: BackfillPhase): BackfillProgress {
  const retried = 'keys' in selection;
  return {
    ...progress,
    phase,
    done: progress.done + result.written,
    cursor: retried || result.lastKey === null ? progress.cursor : result.lastKey,
    retryKeys: [...(retried ? progress.retryKeys.slice(selection.keys.length) : progress.retryKeys), ...result.conflictKeys],
    conflicts: progress.conflicts + result.conflictKeys.length,
    unfillable: progress.unfillable + result.unfillable,
    batches: progress.batches + 1,
  };
}
