// Finalize: writes the staged batches of a validated run into the profile's target, one batch per transaction. Each
// transaction checks the lease, writes the batch with one statement (upsert-sql.ts), moves the run's cursor and
// deletes the batch, then commits: a crash leaves every batch either written with the cursor past it, or still staged
// with the cursor before it, so the rerun resumes after the last committed batch and writes each row once.
// A batch the database refuses as a whole (a constraint the validation does not know about) is written row by row
// under savepoints: the refused rows become row errors of phase `finalize`, the others are written.
import type { Pool, PoolClient, Queryable } from '../../db/pool.js';
import { sqlState } from '../../db/sql-state.js';
import type { ProgressReporter } from '../../handlers/types.js';
import type { Logger } from '../../logger.js';
import { PermanentJobError, TransientJobError } from '../../queue/errors.js';
import { inTransaction } from './client-transaction.js';
import { layoutOfRun } from './layout.js';
import type { ImportProfile } from './profile.js';
import { insertRowErrors, type RowError } from './row-errors.js';
import { advanceFinalizeCursor, getCsvImportRun, markFinalized, type ChunkCounts, type CsvImportRun } from './run-record.js';
import { ReferenceCache } from './reference-cache.js';
import { originalFieldsOf, readStagedRows } from './staged-batches.js';
import { buildChunkStatement, toChunkResult, type ChunkResult, type ChunkStatement } from './upsert-sql.js';

export interface FinalizeDeps {
  pool: Pool;
  jobId: number;
  profile: ImportProfile;
  signal: AbortSignal;
  progress: ProgressReporter;
  log: Logger;
  assertLeaseHeld(db: Queryable): Promise<void>;
}

export interface FinalizeTotals {
  inserted: number;
  updated: number;
  unchanged: number;
  failed: number;
  referencesCreated: Record<string, number>;
  /** Batches this attempt wrote (fewer than the run's when it resumed after a crash). */
  batchesThisAttempt: number;
  rowsThisAttempt: number;
  seconds: number;
}

/** Retries of one batch when it raced another import (a reference committed after our snapshot) or deadlocked. */
const BATCH_TRIES = 8;
const RETRYABLE = new Set(['40001', '40P01']);

/** Data exceptions (22xxx) and integrity violations (23xxx): the rows, not the system, are at fault. */
function isRowDataError(error: unknown): boolean {
  const state = sqlState(error);
  return state !== undefined && (state.startsWith('22') || state.startsWith('23'));
}

class ReferenceRaceError extends Error {}

export async function finalizeStagedRows(deps: FinalizeDeps, run: CsvImportRun): Promise<FinalizeTotals> {
  const { pool, jobId, signal, progress, log } = deps;
  const layout = layoutOfRun(deps.profile, run);
  const statement = buildChunkStatement(deps.profile, layout.columns);
  const started = Date.now();
  let cursor = run.finalizedBatches;
  const totals = { inserted: run.rowsInserted, updated: run.rowsUpdated, unchanged: run.rowsUnchanged, failed: run.rowsFailed };
  const created = { ...run.referencesCreated };
  let written = run.rowsInserted + run.rowsUpdated + run.rowsUnchanged + run.rowsFailed;
  let batchesThisAttempt = 0;
  let rowsThisAttempt = 0;
  const report = () => {
    const seconds = (Date.now() - started) / 1000;
    const rate = seconds > 0 ? rowsThisAttempt / seconds : 0;
    progress.update({
      phase: 'finalize',
      done: written,
      total: run.rowsValid,
      ...totals,
      batchesDone: cursor,
      batches: run.batches,
      rate: Math.round(rate),
      etaSeconds: rate > 0 ? Math.round((run.rowsValid - written) / rate) : null,
    });
  };
  if (cursor > 0) log.info({ resume_after_batch: cursor, batches: run.batches }, 'finalize resumes after the last committed batch');
  report();

  const cache = new ReferenceCache();
  const client = await pool.connect();
  try {
    // Batches are numbered 1…run.batches by validation and each is deleted by the transaction that writes it.
    for (let batchNumber = cursor + 1; batchNumber <= run.batches; batchNumber++) {
      if (signal.aborted) throw signal.reason;
      const counts = await writeBatch(client, { ...deps, cache }, statement, run, layout, batchNumber);
      cursor = batchNumber;
      totals.inserted += counts.inserted;
      totals.updated += counts.updated;
      totals.unchanged += counts.unchanged;
      totals.failed += counts.failed;
      for (const [table, count] of Object.entries(counts.referencesCreated)) created[table] = (created[table] ?? 0) + count;
      const rows = counts.inserted + counts.updated + counts.unchanged + counts.failed;
      written += rows;
      rowsThisAttempt += rows;
      batchesThisAttempt += 1;
      report();
    }
    await inTransaction(client, async () => {
      await deps.assertLeaseHeld(client);
      await markFinalized(client, jobId);
    });
  } finally {
    client.release();
  }
  report();
  await progress.flush();
  return {
    ...totals,
    referencesCreated: created,
    batchesThisAttempt,
    rowsThisAttempt,
    seconds: (Date.now() - started) / 1000,
  };
}

async function runChunk(
  client: PoolClient,
  statement: ChunkStatement,
  cache: ReferenceCache,
  run: CsvImportRun,
  batchNumber: number,
  row: number | null,
): Promise<ChunkResult> {
  const { rows } = await client.query({
    name: statement.name,
    text: statement.text,
    values: [run.jobId, batchNumber, run.tenantId, row, ...statement.referenceTables.map((table) => cache.parameterFor(table))],
  });
  const result = toChunkResult(statement, rows[0] as Record<string, unknown>);
  if (result.unresolved > 0) throw new ReferenceRaceError();
  return result;
}

interface BatchDeps extends FinalizeDeps {
  cache: ReferenceCache;
}

type Learned = Record<string, Record<string, number>>;

interface BatchOutcome {
  counts: ChunkCounts;
  /** Reference ids found or created by the batch: for the cache, once the batch has committed. */
  learned: Learned;
}

async function writeBatch(
  client: PoolClient,
  deps: BatchDeps,
  statement: ChunkStatement,
  run: CsvImportRun,
  layout: ReturnType<typeof layoutOfRun>,
  batchNumber: number,
): Promise<ChunkCounts> {
  let rowByRow = false;
  for (let attempt = 1; attempt <= BATCH_TRIES; attempt++) {
    try {
      const outcome = await inTransaction(client, async (): Promise<BatchOutcome> => {
        await deps.assertLeaseHeld(client);
        const written = rowByRow
          ? await writeRowByRow(client, deps, statement, run, layout, batchNumber)
          : outcomeOf(await runChunk(client, statement, deps.cache, run, batchNumber, null));
        const advance = await advanceFinalizeCursor(client, run.jobId, batchNumber, written.counts);
        if (advance === 'cursor-moved') {
          throw new PermanentJobError(
            `finalize of job ${run.jobId}: batch ${batchNumber} is not the next one to write (the cursor moved); stopping`,
            'CSV_FINALIZE_CURSOR',
            { batch: batchNumber },
          );
        }
        if (advance === 'staging-missing') {
          throw new PermanentJobError(
            `finalize of job ${run.jobId}: the staged rows of batch ${batchNumber} of ${run.batches} are missing (the ` +
              'staging was discarded, e.g. by a reject); nothing was written for it. Import the file again',
            'CSV_STAGING_MISSING',
            { batch: batchNumber, batches: run.batches },
          );
        }
        return written;
      });
      for (const [table, ids] of Object.entries(outcome.learned)) deps.cache.learn(table, ids);
      return outcome.counts;
    } catch (error) {
      if (error instanceof ReferenceRaceError || RETRYABLE.has(sqlState(error) ?? '')) {
        deps.log.debug({ batch: batchNumber, attempt, code: sqlState(error) ?? 'REFERENCE_RACE' }, 'batch raced another import; retrying');
        continue;
      }
      if (!rowByRow && isRowDataError(error)) {
        deps.log.warn({ batch: batchNumber, err: error }, 'the database refused the batch; writing it row by row');
        rowByRow = true;
        attempt -= 1;
        continue;
      }
      throw error;
    }
  }
  throw new TransientJobError(
    `finalize of job ${run.jobId}: batch ${batchNumber} kept racing other imports ${BATCH_TRIES} times; will retry`,
    'CSV_FINALIZE_CONTENTION',
    { batch: batchNumber },
  );
}

function outcomeOf(result: ChunkResult): BatchOutcome {
  return {
    counts: {
      inserted: result.inserted,
      updated: result.updated,
      unchanged: result.rows - result.inserted - result.updated,
      failed: 0,
      referencesCreated: result.created,
    },
    learned: result.learned,
  };
}

/** Inside the batch's transaction: each row under a savepoint; refused rows are recorded, not written. */
async function writeRowByRow(
  client: PoolClient,
  deps: BatchDeps,
  statement: ChunkStatement,
  run: CsvImportRun,
  layout: ReturnType<typeof layoutOfRun>,
  batchNumber: number,
): Promise<BatchOutcome> {
  const rows = await readStagedRows(client, run.jobId, batchNumber);
  const counts: ChunkCounts = { inserted: 0, updated: 0, unchanged: 0, failed: 0, referencesCreated: {} };
  const learned: Learned = {};
  const failures: RowError[] = [];
  for (const row of rows) {
    const rowNumber = row[0];
    await client.query('SAVEPOINT csv_row');
    try {
      const result = outcomeOf(await runChunk(client, statement, deps.cache, run, batchNumber, rowNumber));
      await client.query('RELEASE SAVEPOINT csv_row');
      counts.inserted += result.counts.inserted;
      counts.updated += result.counts.updated;
      counts.unchanged += result.counts.unchanged;
      for (const [table, count] of Object.entries(result.counts.referencesCreated)) {
        counts.referencesCreated[table] = (counts.referencesCreated[table] ?? 0) + count;
      }
      // Only what a kept row learned: a rolled-back savepoint's inserted references are gone.
      for (const [table, ids] of Object.entries(result.learned)) learned[table] = { ...learned[table], ...ids };
    } catch (error) {
      if (!isRowDataError(error)) throw error;
      await client.query('ROLLBACK TO SAVEPOINT csv_row');
      const { message, detail, constraint } = error as { message: string; detail?: string; constraint?: string };
      failures.push({
        row: rowNumber,
        fields: originalFieldsOf(row, layout),
        issues: [
          {
            column: null,
            rule: 'database',
            message: `the database refused the row: ${message}${detail ? ` (${detail})` : ''}${constraint ? ` [${constraint}]` : ''}`,
          },
        ],
      });
    }
  }
  counts.failed = failures.length;
  await insertRowErrors(client, run.jobId, 'finalize', failures);
  deps.log.warn({ batch: batchNumber, failed_rows: failures.map((failure) => failure.row) }, 'rows refused by the database');
  return { counts, learned };
}

/** The run record of a validated import, or a clear error when there is none. */
export async function requireValidatedRun(pool: Pool, jobId: number, kind: string): Promise<CsvImportRun> {
  const run = await getCsvImportRun(pool, jobId);
  if (!run || !run.validatedAt) {
    throw new PermanentJobError(
      `${kind} job ${jobId} has no validated CSV import to finalize: ${kind} continues a csv-import run after review ` +
        '(bulk-import finalize <id>); it cannot be enqueued on its own',
      'CSV_NOT_VALIDATED',
    );
  }
  return run;
}
