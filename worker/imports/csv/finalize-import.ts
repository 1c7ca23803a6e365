// Finalize: writes the staged rows of a validated run into the profile's target. First, in one fenced transaction,
// every reference name the run uses is created (upsert-sql.ts); then the batches are written by `connections`
// lanes at once, each batch in its own transaction that checks the lease, writes the batch with one statement, marks
// the batch written and deletes its staged rows, then commits. A crash leaves every batch either written and marked,
// or still staged and unmarked, so the rerun writes exactly the unmarked batches and each row once.
// A batch the database refuses as a whole (a constraint the validation does not know about) is written row by row
// under savepoints: the refused rows become row errors of phase `finalize`, the others are written.
import { freeConnections, inTransaction, type Pool, type PoolClient, type Queryable } from '../../db/pool.js';
import { sqlState } from '../../db/sql-state.js';
import type { ProgressReporter } from '../../handlers/types.js';
import type { Logger } from '../../logger.js';
import { PermanentJobError, TransientJobError } from '../../queue/errors.js';
import type { HeaderLayout } from './header.js';
import { layoutOfRun } from './layout.js';
import type { ImportProfile } from './profile.js';
import { insertRowErrors, type RowError } from './row-errors.js';
import {
  addReferencesCreated,
  getCsvImportRun,
  markBatchFinalized,
  markFinalized,
  pendingBatches,
  type ChunkCounts,
  type CsvImportRun,
  type PendingBatch,
} from './run-record.js';
import { deleteStagedBatch, originalFieldsOf, readStagedRows } from './staged-rows.js';
import { buildChunkStatement, buildReferenceListStatement, buildReferenceStatement, referenceColumns, toChunkResult, type ChunkResult, type ChunkStatement } from './upsert-sql.js';

export interface FinalizeDeps {
  pool: Pool;
  jobId: number;
  profile: ImportProfile;
  /** Batches written at the same time, each lane on its own connection. */
  connections: number;
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

/** Retries of one batch when it deadlocked with another import, or a reference it names was deleted meanwhile. */
const BATCH_TRIES = 8;
const RETRYABLE = new Set(['40001', '40P01']);
const UNIQUE_VIOLATION = '23505';

/**
 * Data exceptions (22xxx), integrity violations (23xxx) and a row that one upsert would change twice (21000: two rows
 * of the batch with keys the database finds equal although they are written differently): the rows, not the
 * system, are at fault.
 */
function isRowDataError(error: unknown): boolean {
  const state = sqlState(error);
  return state !== undefined && (state.startsWith('22') || state.startsWith('23') || state === '21000');
}

class ReferenceMissingError extends Error {}

interface FinalizeContext extends FinalizeDeps {
  run: CsvImportRun;
  layout: HeaderLayout;
  /** Writes, marks and unstages a whole batch of new rows, or nothing when one of its keys exists. */
  insertStatement: ChunkStatement;
  /** Writes, marks and unstages a whole batch. */
  batchStatement: ChunkStatement;
  /** Writes one row of a batch (the row-by-row path). */
  rowStatement: ChunkStatement;
  /**
   * Per reference column, its names' ids as one JSON object (the parameters of mapped statements), or null: the
   * statements join the reference tables instead (a column with too many names to list).
   */
  referenceMaps: string[] | null;
}

/** Past this size the ids travel with every batch statement for too little gain: the statements join instead. */
const MAX_REFERENCE_MAP_CHARS = 64 * 1024;

export async function finalizeStagedRows(deps: FinalizeDeps, run: CsvImportRun): Promise<FinalizeTotals> {
  const { pool, jobId, signal, progress, log } = deps;
  const layout = layoutOfRun(deps.profile, run);
  const context: FinalizeContext = {
    ...deps,
    run,
    layout,
    ...wholeBatchStatements(deps.profile, layout, false),
    referenceMaps: null,
    rowStatement: buildChunkStatement(deps.profile, layout.columns),
  };
  const started = Date.now();
  const totals = { inserted: run.rowsInserted, updated: run.rowsUpdated, unchanged: run.rowsUnchanged, failed: run.rowsFailed };
  let written = run.rowsInserted + run.rowsUpdated + run.rowsUnchanged + run.rowsFailed;
  let batchesDone = run.finalizedBatches;
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
      batchesDone,
      batches: run.batches,
      rate: Math.round(rate),
      etaSeconds: rate > 0 ? Math.round((run.rowsValid - written) / rate) : null,
    });
  };
  if (batchesDone > 0) log.info({ batches_done: batchesDone, batches: run.batches }, 'finalize resumes after the last committed batch');
  report();

  await assertStagingComplete(pool, run);
  const referencesCreated = await withClient(pool, (client) => createReferences(client, context));
  await withClient(pool, (client) => loadReferenceMaps(client, context));
  const queue = await pendingBatches(pool, jobId);
  // Lanes after the first only on connections that are free right now: they must never hold back other jobs, or
  // the heartbeats that share the pool.
  const lanes = Math.max(1, Math.min(deps.connections, queue.length, freeConnections(pool)));
  let failure: unknown;
  const lane = async (client: PoolClient): Promise<void> => {
    for (let batch = queue.shift(); batch && failure === undefined; batch = queue.shift()) {
      if (signal.aborted) throw signal.reason;
      const counts = await writeBatch(client, context, batch);
      totals.inserted += counts.inserted;
      totals.updated += counts.updated;
      totals.unchanged += counts.unchanged;
      totals.failed += counts.failed;
      const rows = counts.inserted + counts.updated + counts.unchanged + counts.failed;
      written += rows;
      rowsThisAttempt += rows;
      batchesThisAttempt += 1;
      batchesDone += 1;
      report();
    }
  };
  // Every lane stops at its next batch boundary once one has failed; the first failure is the run's.
  await Promise.all(
    Array.from({ length: lanes }, () =>
      withClient(pool, lane).catch((error: unknown) => {
        failure ??= error;
      }),
    ),
  );
  if (failure !== undefined) throw failure;
  await withClient(pool, (client) =>
    inTransaction(client, async () => {
      await deps.assertLeaseHeld(client);
      await markFinalized(client, jobId);
    }),
  );
  report();
  await progress.flush();
  return {
    ...totals,
    referencesCreated,
    batchesThisAttempt,
    rowsThisAttempt,
    seconds: (Date.now() - started) / 1000,
  };
}

/**
 * Refuses to start when the batch records do not add up to what validation staged (a run validated before the
 * staging changed form, or records deleted by hand): writing "the rest" would end the run as if every row were in.
 */
async function assertStagingComplete(db: Queryable, run: CsvImportRun): Promise<void> {
  const { rows } = await db.query<{ batches: number; rows: number }>(
    `SELECT count(*)::int AS batches, coalesce(sum(row_count), 0)::int AS rows FROM csv_import_batches WHERE job_id = $1`,
    [run.jobId],
  );
  const found = rows[0]!;
  if (found.batches !== run.batches || found.rows !== run.rowsValid) {
    throw new PermanentJobError(
      `finalize of job ${run.jobId}: validation staged ${run.rowsValid} rows in ${run.batches} batches, but the batch ` +
        `records hold ${found.rows} rows in ${found.batches}; the staging is incomplete and nothing more is written. Import the file again`,
      'CSV_STAGING_MISSING',
      { batches: run.batches, recordedBatches: found.batches },
    );
  }
}

async function withClient<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    return await work(client);
  } finally {
    client.release();
  }
}

/** Creates every reference name of the run its tables lack, in one fenced transaction; returns the counts by table. */
/** The two statements that write a whole batch: insert-only (new keys) and upsert. */
function wholeBatchStatements(
  profile: ImportProfile,
  layout: HeaderLayout,
  mappedReferences: boolean,
): Pick<FinalizeContext, 'insertStatement' | 'batchStatement'> {
  return {
    insertStatement: buildChunkStatement(profile, layout.columns, { marksBatch: true, insertOnly: true, mappedReferences }),
    batchStatement: buildChunkStatement(profile, layout.columns, { marksBatch: true, mappedReferences }),
  };
}

/**
 * Looks up the ids of the names validation listed, for the mapped statements; leaves the joining statements in place
 * when a column has no list or the ids would be too large to send with every batch.
 */
async function loadReferenceMaps(client: PoolClient, context: FinalizeContext): Promise<void> {
  const references = referenceColumns(context.layout.columns);
  if (references.length === 0) return;
  const maps: string[] = [];
  for (const { position, table } of references) {
    const names = context.run.referenceNames[String(position)];
    if (!names) return;
    const { rows } = await client.query<{ ids: string }>(
      `SELECT coalesce(jsonb_object_agg(name, id), '{}'::jsonb)::text AS ids FROM ${table} WHERE tenant_id = $1 AND name = ANY($2::text[])`,
      [context.run.tenantId, names],
    );
    maps.push(rows[0]!.ids);
  }
  if (maps.reduce((chars, map) => chars + map.length, 0) > MAX_REFERENCE_MAP_CHARS) return;
  context.referenceMaps = maps;
  Object.assign(context, wholeBatchStatements(context.profile, context.layout, true));
}

async function createReferences(client: PoolClient, context: FinalizeContext): Promise<Record<string, number>> {
  const created: Record<string, number> = {};
  for (let attempt = 1; ; attempt++) {
    try {
      await inTransaction(client, async () => {
        await context.assertLeaseHeld(client);
        for (const { position, table } of referenceColumns(context.layout.columns)) {
          const listed = context.run.referenceNames[String(position)];
          const { rowCount } = listed
            ? await client.query(buildReferenceListStatement(table), [context.run.tenantId, listed])
            : await client.query(buildReferenceStatement(position, table), [context.jobId, context.run.tenantId]);
          if (rowCount) created[table] = (created[table] ?? 0) + rowCount;
        }
        await addReferencesCreated(client, context.jobId, created);
      });
      return created;
    } catch (error) {
      for (const table of Object.keys(created)) delete created[table];
      if (attempt < BATCH_TRIES && RETRYABLE.has(sqlState(error) ?? '')) continue;
      if (isRowDataError(error)) {
        const { message, detail, table } = error as { message: string; detail?: string; table?: string };
        throw new PermanentJobError(
          `finalize of job ${context.jobId}: the database refused a reference name of this file` +
            `${table ? ` in table ${table}` : ''}: ${message}${detail ? ` (${detail})` : ''}; nothing was written. ` +
            'The profile allows names the reference table does not: fix the names (or the table) and import again',
          'CSV_REFERENCE_REFUSED',
          { table },
        );
      }
      throw error;
    }
  }
}

async function runChunk(client: PoolClient, statement: ChunkStatement, context: FinalizeContext, batchNumber: number, row: number | null): Promise<ChunkResult> {
  const { rows } = await client.query({
    name: statement.name,
    text: statement.text,
    values: [context.jobId, batchNumber, context.run.tenantId, row, ...(statement.mappedReferences ? context.referenceMaps! : [])],
  });
  const result = toChunkResult(rows[0] as Record<string, unknown>);
  if (result.unresolved > 0) throw new ReferenceMissingError();
  return result;
}

function countsOf(result: ChunkResult): ChunkCounts {
  return { inserted: result.inserted, updated: result.updated, unchanged: result.rows - result.inserted - result.updated, failed: 0 };
}

async function writeBatch(client: PoolClient, context: FinalizeContext, batch: PendingBatch): Promise<ChunkCounts> {
  const { run, jobId, log } = context;
  const { batchNumber } = batch;
  let rowByRow = false;
  const retries = { contention: 0, referenceMissing: 0 };
  // The plain insert first (new rows, the usual case of a big import); the upsert once a key is known to exist.
  let upsert = false;
  for (let attempt = 1; attempt <= BATCH_TRIES; attempt++) {
    try {
      return await inTransaction(client, async (): Promise<ChunkCounts> => {
        await context.assertLeaseHeld(client);
        let counts: ChunkCounts;
        let marked: boolean;
        let staged: number;
        if (rowByRow) {
          counts = await writeRowByRow(client, context, batchNumber);
          marked = await markBatchFinalized(client, jobId, batchNumber, counts);
          staged = await deleteStagedBatch(client, jobId, batchNumber);
        } else {
          let result = upsert ? undefined : await runChunk(client, context.insertStatement, context, batchNumber, null);
          if (!result || result.present) result = await runChunk(client, context.batchStatement, context, batchNumber, null);
          counts = countsOf(result);
          marked = result.markedRowCount !== null;
          staged = result.removed;
        }
        if (!marked) {
          throw new PermanentJobError(
            `finalize of job ${jobId}: batch ${batchNumber} was already written by someone else; stopping`,
            'CSV_FINALIZE_CURSOR',
            { batch: batchNumber },
          );
        }
        if (staged !== batch.rowCount) {
          throw new PermanentJobError(
            `finalize of job ${jobId}: batch ${batchNumber} of ${run.batches} should hold ${batch.rowCount} staged rows but ` +
              `holds ${staged} (the staging was discarded, e.g. by a reject); nothing was written for it. Import the file again`,
            'CSV_STAGING_MISSING',
            { batch: batchNumber, batches: run.batches },
          );
        }
        return counts;
      }, { synchronousCommit: false });
    } catch (error) {
      if (error instanceof ReferenceMissingError) {
        retries.referenceMissing += 1;
        log.warn({ batch: batchNumber, attempt }, 'a reference the batch names was deleted meanwhile; creating it again');
        await createReferences(client, context);
        await loadReferenceMaps(client, context);
        continue;
      }
      if (RETRYABLE.has(sqlState(error) ?? '')) {
        retries.contention += 1;
        log.debug({ batch: batchNumber, attempt, code: sqlState(error) }, 'batch deadlocked with another import; retrying');
        continue;
      }
      if (!upsert && !rowByRow && sqlState(error) === UNIQUE_VIOLATION) {
        // A key committed by another import after the insert-only statement's snapshot: upsert the batch instead.
        log.debug({ batch: batchNumber }, 'a key of the batch was inserted by another import meanwhile; upserting the batch');
        upsert = true;
        attempt -= 1;
        continue;
      }
      if (!rowByRow && isRowDataError(error)) {
        log.warn({ batch: batchNumber, err: error }, 'the database refused the batch; writing it row by row');
        rowByRow = true;
        attempt -= 1;
        continue;
      }
      throw error;
    }
  }
  const cause =
    retries.referenceMissing >= retries.contention
      ? `a reference it names kept disappearing (deleted by someone else ${retries.referenceMissing} times)`
      : `it kept deadlocking or conflicting with other transactions (${retries.contention} times)`;
  throw new TransientJobError(`finalize of job ${jobId}: batch ${batchNumber} was not written: ${cause}; will retry`, 'CSV_FINALIZE_CONTENTION', {
    batch: batchNumber,
    ...retries,
  });
}

/** Inside the batch's transaction: each row under a savepoint; refused rows are recorded, not written. */
async function writeRowByRow(client: PoolClient, context: FinalizeContext, batchNumber: number): Promise<ChunkCounts> {
  const rows = await readStagedRows(client, context.jobId, batchNumber, context.layout.columns.length);
  const counts: ChunkCounts = { inserted: 0, updated: 0, unchanged: 0, failed: 0 };
  const failures: RowError[] = [];
  for (const row of rows) {
    await client.query('SAVEPOINT csv_row');
    try {
      const result = countsOf(await runChunk(client, context.rowStatement, context, batchNumber, row.rowNumber));
      await client.query('RELEASE SAVEPOINT csv_row');
      counts.inserted += result.inserted;
      counts.updated += result.updated;
      counts.unchanged += result.unchanged;
    } catch (error) {
      if (!isRowDataError(error)) throw error;
      await client.query('ROLLBACK TO SAVEPOINT csv_row');
      const { message, detail, constraint } = error as { message: string; detail?: string; constraint?: string };
      failures.push({
        row: row.rowNumber,
        fields: originalFieldsOf(row, context.layout),
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
  if (failures.length > 0) {
    await insertRowErrors(client, context.jobId, 'finalize', failures);
    context.log.warn({ batch: batchNumber, failed_rows: failures.map((failure) => failure.row) }, 'rows refused by the database');
  }
  return counts;
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
