// Finalize: writes the valid rows of a validated run into the profile's target. The rows come from the uploaded object
// itself, read again from S3 pinned to the ETag validation recorded (s3-object.ts), and checked again with the same
// profile; the run's row errors of phase 'validate' name the rows to skip (invalid and duplicate rows). The batch
// ledger (csv_import_batches) says which lines make up each batch and which batches are written already: a resumed
// finalize skips the written ones and stops reading once the last unwritten batch is complete.
// Batches are written by `connections` lanes at once, each batch in its own transaction (batch-writer.ts), while the
// file is read on: at most one batch per lane in flight and one being gathered, so memory stays flat.
import type { S3Client } from '@aws-sdk/client-s3';
import { freeConnections, withTransaction, type Pool, type Queryable } from '../../db/pool.js';
import { jobProgress } from '../../handlers/progress.js';
import type { ProgressReporter } from '../../handlers/types.js';
import type { Logger } from '../../logger.js';
import { PermanentJobError, TransientJobError } from '../../queue/errors.js';
import { markProgressKept } from '../../queue/outage.js';
import { inSpan } from '../../tracing/spans.js';
import { BatchWriter, type Batch } from './batch-writer.js';
import type { HeaderLayout } from './header.js';
import { layoutOfRun } from './layout.js';
import type { ImportProfile } from './profile.js';
import { csvRecords, isErrorExport, unescapeFields } from './record-stream.js';
import { ReferenceIds } from './reference-ids.js';
import { getCsvImportRun, markFinalized, pendingBatches, type ChunkCounts, type CsvImportRun, type PendingBatch } from './run-record.js';
import { fieldsWeight, rowErrorLines } from './row-errors.js';
import { RowRanges } from './row-ranges.js';
import type { RowSet } from './row-set.js';
import { RowValidator } from './row-validator.js';
import { openObject } from './s3-object.js';
import { buildTargetStatements } from './target-sql.js';
import { WriteLanes } from './write-lanes.js';

export interface FinalizeDeps {
  pool: Pool;
  s3: S3Client;
  jobId: number;
  profile: ImportProfile;
  /** Batches written at the same time, each lane on its own connection. */
  connections: number;
  /** S3_STALL_TIMEOUT_MS: a read of the object with no byte for this long is aborted as an S3 outage. */
  stallTimeoutMs: number;
  signal: AbortSignal;
  progress: ProgressReporter;
  log: Logger;
  assertLeaseHeld(db: Queryable): Promise<void>;
  /** SQL: true while this worker holds the job's lease (see JobContext). */
  leaseHeldCondition: string;
}

export interface FinalizeTotals {
  inserted: number;
  updated: number;
  unchanged: number;
  failed: number;
  /** Batches this attempt wrote (fewer than the run's when it resumed after a crash). */
  batchesThisAttempt: number;
  rowsThisAttempt: number;
  seconds: number;
}

/** One `csv finalize` span, with a `csv finalize batch` span per batch written (one transaction each) beneath. */
export async function finalizeValidatedRows(deps: FinalizeDeps, run: CsvImportRun): Promise<FinalizeTotals> {
  return inSpan('csv finalize', { bucket: run.bucket, key: run.objectKey, batches: run.batches, rows: run.rowsValid }, async (span) => {
    const totals = await finalizeRows(deps, run);
    span.setAttributes({ 'rows.written': totals.rowsThisAttempt, 'batches.written': totals.batchesThisAttempt, 'rows.failed': totals.failed });
    return totals;
  });
}

async function finalizeRows(deps: FinalizeDeps, run: CsvImportRun): Promise<FinalizeTotals> {
  const committed = { batches: 0 };
  try {
    return await writeBatches(deps, run, committed);
  } catch (error) {
    // The batches this attempt committed stay written and the next attempt resumes after them: an S3 read cut off
    // after them is a new outage after progress kept, which does not count against MAX_OUTAGE_RESTARTS.
    throw committed.batches > 0 ? markProgressKept(error) : error;
  }
}

/** Writes the run's unwritten batches; `committed.batches` counts those this attempt committed. */
async function writeBatches(deps: FinalizeDeps, run: CsvImportRun, committed: { batches: number }): Promise<FinalizeTotals> {
  const { pool, jobId, progress, log } = deps;
  const layout = layoutOfRun(deps.profile, run);
  const started = Date.now();
  const totals = { inserted: run.rowsInserted, updated: run.rowsUpdated, unchanged: run.rowsUnchanged, failed: run.rowsFailed };
  let written = run.rowsInserted + run.rowsUpdated + run.rowsUnchanged + run.rowsFailed;
  let batchesDone = run.finalizedBatches;
  let batchesThisAttempt = 0;
  let rowsThisAttempt = 0;
  const report = () => {
    const seconds = (Date.now() - started) / 1000;
    const rate = seconds > 0 ? rowsThisAttempt / seconds : 0;
    progress.update(jobProgress('finalize', written, run.rowsValid, {
      ...totals,
      batchesDone,
      batches: run.batches,
      rate: Math.round(rate),
      etaSeconds: rate > 0 ? Math.round((run.rowsValid - written) / rate) : null,
    }));
  };
  if (batchesDone > 0) log.info({ batches_done: batchesDone, batches: run.batches }, 'finalize resumes after the last committed batch');
  report();

  await assertLedgerComplete(pool, run);
  const pending = await pendingBatches(pool, jobId);
  // The rows validation set aside (invalid or duplicate): finalize does not write them.
  const skipped = await rowErrorLines(pool, jobId, 'validate');
  const writer = new BatchWriter({
    jobId,
    tenant: run.tenantId,
    statements: buildTargetStatements(deps.profile, layout.columns, run.tenantId, jobId),
    layout,
    references: new ReferenceIds(layout.columns, run.tenantId, jobId),
    log,
    leaseHeldCondition: deps.leaseHeldCondition,
  });

  if (pending.length > 0) {
    // Lanes after the first only on connections that are free right now: they must never hold back other jobs' work
    // on the pool.
    const lanes = new WriteLanes(pool, Math.max(1, Math.min(deps.connections, pending.length, freeConnections(pool))));
    const count = (counts: ChunkCounts) => {
      totals.inserted += counts.inserted;
      totals.updated += counts.updated;
      totals.unchanged += counts.unchanged;
      totals.failed += counts.failed;
      const rows = counts.inserted + counts.updated + counts.unchanged + counts.failed;
      written += rows;
      rowsThisAttempt += rows;
      batchesThisAttempt += 1;
      committed.batches += 1;
      batchesDone += 1;
      report();
    };
    const dispatch = (batch: Batch) =>
      lanes.start(async (client) => {
        const counts = await inSpan('csv finalize batch', { 'batch.number': batch.batchNumber, rows: batch.rows.length }, async (span) => {
          const result = await writer.write(client, batch);
          span.setAttributes({ 'rows.inserted': result.inserted, 'rows.updated': result.updated, 'rows.failed': result.failed });
          return result;
        });
        count(counts);
      }, batch.chars);
    try {
      await readBatches(deps, run, layout, pending, skipped, dispatch);
    } catch (error) {
      lanes.fail(error);
    }
    await lanes.close((client) => writer.release(client));
  }

  await withTransaction(pool, async (tx) => {
    await deps.assertLeaseHeld(tx);
    const unwritten = await markFinalized(tx, jobId);
    if (unwritten > 0) {
      throw new TransientJobError(
        `${unwritten} batch(es) are not recorded as written although finalize wrote them (commits lost with the database, a failover?); ` +
          'the next attempt writes them again',
        'CSV_BATCHES_UNWRITTEN',
        { unwritten },
      );
    }
  });
  report();
  await progress.flush();
  return { ...totals, batchesThisAttempt, rowsThisAttempt, seconds: (Date.now() - started) / 1000 };
}

/**
 * Reads the object and hands each unwritten batch to `dispatch` once its last line is read. Checks that the file still
 * is what validation read: the same header, and every batch exactly as many rows as validation counted.
 */
async function readBatches(
  deps: FinalizeDeps,
  run: CsvImportRun,
  layout: HeaderLayout,
  pending: PendingBatch[],
  skipped: RowSet,
  dispatch: (batch: Batch) => Promise<void>,
): Promise<void> {
  const { s3, signal } = deps;
  const object = await openObject(s3, run.bucket, run.objectKey, signal, {
    ifMatch: run.objectEtag ?? undefined,
    stallTimeoutMs: deps.stallTimeoutMs,
  });
  const validator = new RowValidator(layout);
  const exported = isErrorExport(run.header);
  const excluded = RowRanges.fromStored(run.excludedRows);
  const changed = (what: string) =>
    new PermanentJobError(
      `s3://${run.bucket}/${run.objectKey} is not the file job ${run.jobId} validated: ${what}; nothing more of it is written. ` +
        'Import the new file (rows already written are upserted, so they come out unchanged)',
      'CSV_OBJECT_CHANGED',
      { bucket: run.bucket, key: run.objectKey },
    );
  if (run.objectSize !== null && object.size !== undefined && object.size !== run.objectSize) {
    object.body.destroy();
    throw changed(`it holds ${object.size} bytes, validation read ${run.objectSize}`);
  }
  let next = 0;
  let gathering: Batch = { batchNumber: pending[0]!.batchNumber, rows: [], invalid: [], chars: 0 };
  const complete = async (): Promise<void> => {
    const expected = pending[next]!;
    const found = gathering.rows.length + gathering.invalid.length;
    if (found !== expected.rowCount) throw changed(`batch ${expected.batchNumber} (lines ${expected.firstRow}–${expected.lastRow}) holds ${found} rows, validation counted ${expected.rowCount}`);
    await dispatch(gathering);
    next += 1;
    if (next < pending.length) gathering = { batchNumber: pending[next]!.batchNumber, rows: [], invalid: [], chars: 0 };
  };
  let header = true;
  try {
    reading: for await (const records of csvRecords(object.body as AsyncIterable<Buffer>, { delimiter: run.delimiter, encoding: run.encoding, signal })) {
      for (const record of records) {
        if (header) {
          header = false;
          const names = record.fields?.map((name) => name.trim());
          if (!names || names.join('\u0000') !== run.header.join('\u0000')) throw changed('its header line differs');
          continue;
        }
        const line = record.line;
        while (line > pending[next]!.lastRow) {
          await complete();
          if (next === pending.length) break reading;
        }
        if (line < pending[next]!.firstRow || skipped.has(line)) continue;
        const fields = record.fields;
        if (fields === null || record.problem !== undefined) throw changed(`line ${line} cannot be read now (${record.problem ?? 'malformed'})`);
        if (exported) unescapeFields(fields);
        const weight = fieldsWeight(fields);
        gathering.chars += weight;
        // Excluded at review: not written, recorded with the batch as a row error (exported like the failed rows).
        if (excluded?.has(line)) {
          gathering.invalid.push({ row: line, fields, issues: [EXCLUDED_ISSUE] });
          continue;
        }
        const check = validator.check(fields);
        if (check.ok) {
          gathering.rows.push({ row: line, values: check.values, fields: check.exact ? null : fields });
          // Its values beside the fields it keeps (a padded row's values are sliced from them, which keeps them whole).
          if (!check.exact) gathering.chars += weight;
        }
        // The profile changed since validation (a deploy during review): the row is not written, and says why.
        else gathering.invalid.push({ row: line, fields, issues: check.issues });
      }
    }
    while (next < pending.length) await complete();
  } finally {
    object.body.destroy();
  }
}

/** The row error of a valid row the reviewer excluded (`finalize --exclude-rows`). */
export const EXCLUDED_ISSUE = { column: null, rule: 'excluded', message: 'excluded at review: not written' } as const;

/**
 * Refuses to start when the batch records do not add up to what validation counted (records deleted by hand, or a
 * run from before the batch ledger held line ranges): writing "the rest" would end the run as if every row were in.
 */
async function assertLedgerComplete(db: Queryable, run: CsvImportRun): Promise<void> {
  const { rows } = await db.query<{ batches: number; rows: number; unranged: number }>(
    `SELECT count(*)::int AS batches, coalesce(sum(row_count), 0)::int AS rows,
            count(*) FILTER (WHERE first_row IS NULL AND finalized_at IS NULL)::int AS unranged
     FROM csv_import_batches WHERE job_id = $1`,
    [run.jobId],
  );
  const found = rows[0]!;
  if (found.batches !== run.batches || found.rows !== run.rowsValid || found.unranged > 0) {
    throw new PermanentJobError(
      `finalize of job ${run.jobId}: validation counted ${run.rowsValid} rows in ${run.batches} batches, but the batch ` +
        `records hold ${found.rows} rows in ${found.batches}${found.unranged > 0 ? ` (${found.unranged} without their lines)` : ''}; ` +
        'the batch ledger is incomplete and nothing more is written. Import the file again',
      'CSV_STAGING_MISSING',
      { batches: run.batches, recordedBatches: found.batches },
    );
  }
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
