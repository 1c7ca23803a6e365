// The resumable walk of a backfill run. The keys of the missing rows are split into ranges walked at once (one
// stream of batches each, to use more than one database core); each stream walks its range in keyset order, one
// transaction per batch, filling rows optimistically. A batch commits together with the progress that records its
// range's new cursor and the rows that conflicted with a concurrent writer (retried in later batches). A crash, a
// cancel or a shutdown loses at most the batches in flight; the next attempt resumes every range after its last
// committed key.
import { setTimeout as sleep } from 'node:timers/promises';
import type { PoolClient } from '../db/pool.js';
import { sqlState } from '../db/sql-state.js';
import type { JobContext } from '../handlers/types.js';
import { LeaseLostError, saveProgress } from '../queue/lease.js';
import { markProgressKept } from '../queue/outage.js';
import type { Lease } from '../queue/types.js';
import { inSpan } from '../tracing/spans.js';
import type { CompiledBackfill } from './compile.js';
import { BatchSizer, batchTimeoutSettings, startingBatchSize } from './batch-sizer.js';
import { BatchTries } from './batch-tries.js';
import { DEFAULT_BATCH_TIMEOUT_MS } from './compile.js';
import { batchTimeoutError, describeBackfillError, isStatementTimeout } from './errors.js';
import {
  freshProgress,
  planPartitions,
  resumableProgress,
  withRate,
  type BackfillPhase,
  type BackfillProgress,
  type PartitionProgress,
} from './progress.js';
import { countRows, fillBatch, type BackfillScope, type BatchSelection, type FillResult, type RowCounts } from './statements.js';

export interface BackfillRunOptions {
  backfill: CompiledBackfill;
  scope: BackfillScope;
  batchSize: number;
  /** Stop after this many rows written by the run (over all attempts); null = no limit. Implies one stream. */
  maxRows: number | null;
  /**
   * Key ranges walked at once (numeric keys only; a resumed run keeps the ranges it started with), as far as the pool
   * has connections to spare: with fewer streams, a stream walks its next range once one is done.
   */
  parallelism: number;
  /** Keep a before-image of every row written (backfill_before_images), for `bulk-import backfill undo`. */
  saveBeforeImage?: boolean;
  /**
   * The statement timeout of every statement of a batch (ms): a batch that outlasts it is rolled back and tried again
   * at half the size (batch-sizer.ts). Undefined: DEFAULT_BATCH_TIMEOUT_MS.
   */
  batchTimeoutMs?: number;
}

export interface FillOutcome {
  progress: BackfillProgress;
  rowsWrittenThisAttempt: number;
  /** The cursors this attempt started from (one per range); undefined for a fresh start. */
  resumedFrom: PartitionProgress[] | undefined;
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
/**
 * Pool connections a run leaves to the rest of its worker (other runs, their progress writes, maintenance). Each
 * stream holds one connection per batch and needs no other (its lease check and progress write go through it).
 */
const POOL_RESERVE = 2;

/** How many streams walk at once: one connection each, at most the pool's size less the reserve, at least one. */
function streamsForPool(poolMax: number | undefined): number {
  return Math.max(1, (poolMax ?? 10) - POOL_RESERVE);
}

/** Runs one critical section at a time, in call order. */
class SerialLock {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(work: () => Promise<T>): Promise<T> {
    const result = this.tail.then(work);
    this.tail = result.catch(() => {});
    return result;
  }
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
    : { after: selection.after, upTo: selection.upTo ?? null, limit: selection.limit };
}

/** Rows a batch asks for: its limit, or its keys. */
function selectionSize(selection: BatchSelection): number {
  return 'keys' in selection ? selection.keys.length : selection.limit;
}

/** The same batch, asking for its first `rows` rows only (same cursor; the first keys). */
function shrinkSelection(selection: BatchSelection, rows: number): BatchSelection {
  return 'keys' in selection ? { keys: selection.keys.slice(0, rows) } : { ...selection, limit: rows };
}

/** A committed batch: what it asked for (a batch that timed out asks for fewer rows on its retry) and what it did. */
interface CommittedBatch {
  selection: BatchSelection;
  result: FillResult;
}

export async function runFill(context: JobContext<unknown>, options: BackfillRunOptions): Promise<FillOutcome> {
  const run = new FillRun(context, options);
  try {
    return await run.execute();
  } catch (error) {
    // The batches this attempt committed stay written and the next attempt resumes from their cursors: a database
    // failover that ends it is a new outage after progress kept, not counted against MAX_OUTAGE_RESTARTS.
    throw run.batchesCommitted > 0 ? markProgressKept(error) : error;
  }
}

class FillRun {
  private readonly startedAt = Date.now();
  private readonly lease: Lease;
  private readonly saved: BackfillProgress | undefined;
  private progress: BackfillProgress;
  private writtenThisAttempt = 0;
  /** Batches this attempt committed (their cursors saved with them). */
  batchesCommitted = 0;
  /**
   * Streams fill their batches in parallel but take turns for the end of the transaction (lease check, progress
   * write, commit). So the job row is written by one transaction at a time, never locked by two (two FOR SHARE
   * locks both upgraded to a write would deadlock), and every progress written contains all committed cursors.
   */
  private readonly commitLock = new SerialLock();
  /** The first error of any stream: the others stop at their next batch boundary. */
  private failure: { error: unknown } | undefined;
  /**
   * Set when a batch's COMMIT failed without an answer (the connection dropped): it may have committed, with its
   * progress, so `this.progress` may be behind the database's. No stream commits after it, and the attempt stores
   * no progress of its own (the next one resumes from the database's).
   */
  private commitUnknown: { error: unknown } | undefined;
  private retrying = false;
  /**
   * One per stream (and one for the retries after the walk): a key region whose batches time out shrinks its own
   * stream's batches, and quick batches of another region do not grow them back. Shared, the fast stream's commits
   * doubled the size the slow one had just timed out at, and the slow one met it again every other batch.
   */
  private readonly sizers: BatchSizer[] = [];
  private readonly batchTimeoutMs: number;
  /** Batches of earlier attempts that outlasted the timeout (their saved progress). */
  private readonly timeoutsBefore: number;

  constructor(
    private readonly context: JobContext<unknown>,
    private readonly options: BackfillRunOptions,
  ) {
    const { job } = context;
    const name = options.backfill.definition.name;
    this.lease = { jobId: job.id, owner: job.leaseOwner, attempt: job.attempt };
    this.saved = resumableProgress(job.progress, name, options.scope.tenantId);
    this.progress = this.saved ?? freshProgress('fill', name, options.scope.tenantId);
    this.batchTimeoutMs = options.batchTimeoutMs ?? DEFAULT_BATCH_TIMEOUT_MS;
    this.timeoutsBefore = this.saved?.batchTimeouts ?? 0;
    this.progress = { ...this.progress, batchSize: startingBatchSize(options.batchSize, this.saved?.batchSize), batchTimeouts: this.timeoutsBefore };
  }

  /** A stream's sizer. A resumed run starts every stream at the smallest size its earlier attempt's streams had. */
  private newSizer(): BatchSizer {
    const sizer = new BatchSizer(this.options.batchSize, this.batchTimeoutMs, this.saved?.batchSize);
    this.sizers.push(sizer);
    return sizer;
  }

  /** What the progress shows of the sizes: the smallest in use, and the timeouts of every attempt. */
  private sizing(): Pick<BackfillProgress, 'batchSize' | 'batchTimeouts'> {
    return {
      batchSize: this.sizers.length === 0 ? this.progress.batchSize : Math.min(...this.sizers.map((sizer) => sizer.current)),
      batchTimeouts: this.timeoutsBefore + this.sizers.reduce((sum, sizer) => sum + sizer.timeouts, 0),
    };
  }

  async execute(): Promise<FillOutcome> {
    const { log } = this.context;
    if (this.saved) {
      log.info(
        { partitions: this.saved.partitions, done: this.saved.done, retry_keys: this.saved.retryKeys.length },
        'resuming backfill from its saved cursors',
      );
    }
    await this.publish({ ...this.progress, phase: 'counting' });
    const before = await this.count();
    const streams = this.options.maxRows === null ? this.options.parallelism : 1;
    const partitions = this.saved ? this.progress.partitions : planPartitions(streams, before.missingKeyRange);
    await this.publish({
      ...this.progress,
      phase: 'filling',
      partitions,
      total: this.progress.done + Math.min(before.missing, this.budget()),
    });

    const stoppedBy = await this.walk();
    if (stoppedBy === 'end') await this.retryConflicts();

    await this.publish({ ...this.progress, phase: 'verifying' });
    const after = await this.count();
    await this.publish({ ...this.progress, phase: 'done' });
    return {
      progress: this.progress,
      rowsWrittenThisAttempt: this.writtenThisAttempt,
      resumedFrom: this.saved?.partitions,
      remaining: after.missing,
      rowsInScope: after.rows,
      stoppedBy,
      unresolvedConflicts: stoppedBy === 'end' ? this.progress.retryKeys : [],
      durationMs: Date.now() - this.startedAt,
    };
  }

  private budget(): number {
    return this.options.maxRows === null ? Infinity : this.options.maxRows - this.progress.done;
  }

  private checkStop(): void {
    if (this.failure) throw this.failure.error;
    if (this.context.signal.aborted) throw this.context.signal.reason;
  }

  /** Outside the walk only: the progress row is written at once, so no older copy can land after a batch's commit. */
  private async publish(next: BackfillProgress): Promise<void> {
    this.progress = withRate(next, this.writtenThisAttempt, this.startedAt);
    this.context.progress.update({ ...this.progress });
    await this.context.progress.flush();
  }

  private async count(): Promise<RowCounts> {
    try {
      return await countRows(this.context.services.pool, this.options.backfill, this.options.scope);
    } catch (error) {
      throw describeBackfillError(error, this.options.backfill, { statement: 'count' });
    }
  }

  /**
   * Every unfinished range, as many at once as the pool can give connections to (streams): a stream that is done
   * takes the next range. The first failure stops the others at their next boundary and is thrown.
   */
  private async walk(): Promise<FillOutcome['stoppedBy']> {
    const ranges = this.progress.partitions.flatMap((partition, index) => (partition.finished ? [] : [index]));
    const streams = Math.min(ranges.length, streamsForPool(this.context.services.pool.options.max));
    if (streams < ranges.length) {
      this.context.log.info(
        { ranges: ranges.length, streams, pool_max: this.context.services.pool.options.max },
        'fewer backfill streams than key ranges: the pool has no more connections to spare',
      );
    }
    const results = await Promise.allSettled(Array.from({ length: streams }, () => this.walkRanges(ranges)));
    if (this.failure) throw this.failure.error;
    const rejected = results.find((result) => result.status === 'rejected');
    if (rejected) throw rejected.reason;
    return results.some((result) => result.status === 'fulfilled' && result.value === 'maxRows') ? 'maxRows' : 'end';
  }

  /** One stream: walks the next range not taken yet, until none is left (`pending` is shared by the streams). */
  private async walkRanges(pending: number[]): Promise<FillOutcome['stoppedBy']> {
    const sizer = this.newSizer();
    for (let index = pending.shift(); index !== undefined; index = pending.shift()) {
      if ((await this.walkRange(index, sizer)) === 'maxRows') return 'maxRows';
    }
    return 'end';
  }

  private async walkRange(index: number, sizer: BatchSizer): Promise<FillOutcome['stoppedBy']> {
    try {
      for (;;) {
        this.checkStop();
        if (this.budget() <= 0) return 'maxRows';
        // Conflicts piling up (busy writers): retry one batch of them, then walk on, so the list stays short
        // however often the same rows conflict again.
        if (this.progress.retryKeys.length >= sizer.current && !this.retrying) {
          await this.retryChunk('filling', Infinity, sizer);
          this.checkStop();
          if (this.budget() <= 0) return 'maxRows';
        }
        const partition = this.progress.partitions[index]!;
        const { selection, result } = await this.runBatch(
          { after: partition.cursor ?? partition.after, upTo: partition.upTo, limit: Math.min(sizer.current, this.budget()) },
          'filling',
          index,
          sizer,
        );
        if (result.selected < selectionSize(selection)) return 'end';
      }
    } catch (error) {
      this.failure ??= { error };
      throw error;
    }
  }

  /** After the walk: each round once over the keys pending when it starts (rows conflicting again wait a round). */
  private async retryConflicts(): Promise<void> {
    const sizer = this.newSizer();
    for (let round = 0; this.progress.retryKeys.length > 0 && round < RETRY_ROUNDS; round += 1) {
      await pause(RETRY_PAUSE_MS * 2 ** round, this.context.signal);
      for (let pending = this.progress.retryKeys.length; pending > 0 && this.budget() > 0; ) {
        this.checkStop();
        pending -= await this.retryChunk('retrying', pending, sizer);
      }
    }
  }

  private async retryChunk(phase: BackfillPhase, most: number, sizer: BatchSizer): Promise<number> {
    const keys = this.progress.retryKeys.slice(0, Math.min(sizer.current, most, this.budget()));
    if (keys.length === 0) return 0;
    this.retrying = true;
    try {
      return selectionSize((await this.runBatch({ keys }, phase, null, sizer)).selection);
    } finally {
      this.retrying = false;
    }
  }

  /**
   * One batch, tried again (same rows) after a deadlock, a serialization failure or a lock timeout: one
   * `backfill batch` span (its statements beneath), with the rows it read and wrote and the tries it took.
   */
  private runBatch(selection: BatchSelection, phase: BackfillPhase, range: number | null, sizer: BatchSizer): Promise<CommittedBatch> {
    const attributes = { 'backfill.name': this.options.backfill.definition.name, 'backfill.phase': phase, ...(range === null ? {} : { 'backfill.range': range }) };
    return inSpan('backfill batch', attributes, async (span) => {
      const committed = await this.tryBatch(selection, phase, range, sizer, (tries) => span.setAttribute('tries', tries));
      span.setAttributes({ rows: committed.result.selected, 'rows.written': committed.result.written });
      return committed;
    });
  }

  private async tryBatch(
    first: BatchSelection,
    phase: BackfillPhase,
    range: number | null,
    sizer: BatchSizer,
    onTry: (tries: number) => void,
  ): Promise<CommittedBatch> {
    let selection = first;
    const tries = new BatchTries(sizer);
    for (let attempts = 1; ; attempts += 1) {
      onTry(attempts);
      try {
        return { selection, result: await this.commitBatch(selection, phase, range, sizer) };
      } catch (error) {
        const where = describeSelection(selection);
        // A job's own cancel or shutdown ends a statement with the same SQLSTATE as the timeout: it stops the run.
        const step = isStatementTimeout(error) && this.context.signal.aborted ? undefined : tries.failed(error, selectionSize(selection));
        if (step?.kind === 'halve') {
          this.context.log.warn(
            { rows: step.rows, next_rows: step.next, batch_timeout_ms: sizer.timeoutMs, ...where },
            'backfill batch outlasted its statement timeout and was rolled back; trying it again with half the rows',
          );
          selection = shrinkSelection(selection, step.next);
          continue;
        }
        if (step?.kind === 'retry') {
          if (step.reason === 'timeout') {
            this.context.log.warn(
              { rows: 1, try: step.try, batch_timeout_ms: sizer.timeoutMs, ...where },
              'backfill batch of one row outlasted its statement timeout; trying it again',
            );
          } else {
            this.context.log.warn({ sqlstate: step.sqlstate, try: step.try, ...where }, 'backfill batch rolled back; trying it again');
          }
          await pause(step.pauseMs, this.context.signal);
          continue;
        }
        if (step?.reason === 'timeout') throw batchTimeoutError(this.options.backfill, sizer.timeoutMs, step.tries, where, error);
        throw describeBackfillError(error, this.options.backfill, where);
      }
    }
  }

  private async commitBatch(selection: BatchSelection, phase: BackfillPhase, range: number | null, sizer: BatchSizer): Promise<FillResult> {
    const { backfill, scope } = this.options;
    const client: PoolClient = await this.context.services.pool.connect();
    let open = false;
    let broken: Error | undefined;
    const startedAt = performance.now();
    try {
      await client.query('BEGIN');
      open = true;
      // Every statement of the batch, each bounded: a lock wait by lock_timeout (tried again as it is), the batch's
      // own work by statement_timeout (tried again with half the rows, tryBatch).
      await client.query(batchTimeoutSettings(sizer.timeoutMs));
      const result = await fillBatch(
        client,
        backfill,
        scope,
        selection,
        this.options.saveBeforeImage ? { jobId: this.lease.jobId } : undefined,
      );
      await this.commitLock.run(async () => {
        if (this.commitUnknown) throw this.commitUnknown.error;
        await this.context.assertLeaseHeld(client);
        const next = withRate(
          { ...advance(this.progress, selection, result, phase, range), ...this.sizing() },
          this.writtenThisAttempt + result.written,
          this.startedAt,
        );
        if (!(await saveProgress(client, this.lease, next))) throw new LeaseLostError(this.lease.jobId);
        try {
          await client.query('COMMIT');
        } catch (error) {
          // A refusal (a SQLSTATE) rolled back; without one the outcome is unknown.
          if (sqlState(error) === undefined) {
            this.commitUnknown = { error };
            this.context.progress.forget();
          }
          throw error;
        }
        open = false;
        if (sizer.committed(selectionSize(selection), performance.now() - startedAt)) {
          this.context.log.info({ rows: sizer.current, batch_timeout_ms: sizer.timeoutMs, range }, 'backfill batches run well within their timeout again: batch size doubled');
        }
        this.batchesCommitted += 1;
        this.writtenThisAttempt += result.written;
        this.progress = next;
        // The progress is stored: this transaction wrote it. The reporter keeps no copy of its own (forget: the
        // runner then stores none with the attempt's outcome, and the database's stays), for two reasons. A write
        // of its copy through the pool here, inside the commit lock, would need a second connection while every
        // other stream holds one in an open transaction waiting for this lock: with as many streams as the pool
        // has connections it waited for the pool's connect timeout, with the other streams' row locks held. And a
        // throttled write of an older copy could land after a later batch's commit.
        this.context.progress.forget();
      });
      return result;
    } catch (error) {
      if (open) await client.query('ROLLBACK').catch(() => {});
      // An error without a SQLSTATE (connection lost, protocol) may leave the connection unusable: drop it.
      if (sqlState(error) === undefined && !(error instanceof LeaseLostError)) broken = error as Error;
      throw error;
    } finally {
      client.release(broken);
    }
  }
}

/** The progress after one committed batch. */
function advance(
  progress: BackfillProgress,
  selection: BatchSelection,
  result: FillResult,
  phase: BackfillPhase,
  range: number | null,
): BackfillProgress {
  const retried = 'keys' in selection ? new Set(selection.keys) : undefined;
  const partitions =
    range === null || 'keys' in selection
      ? progress.partitions
      : progress.partitions.map((partition, index) =>
          index === range
            ? { ...partition, cursor: result.lastKey ?? partition.cursor, finished: result.selected < selection.limit }
            : partition,
        );
  return {
    ...progress,
    phase,
    done: progress.done + result.written,
    partitions,
    retryKeys: [...(retried ? progress.retryKeys.filter((key) => !retried.has(key)) : progress.retryKeys), ...result.conflictKeys],
    conflicts: progress.conflicts + result.conflictKeys.length,
    unfillable: progress.unfillable + result.unfillable,
    batches: progress.batches + 1,
  };
}
