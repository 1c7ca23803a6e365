// SQL of csv_import_runs: one row per CSV import run, written by validation and advanced by finalize.
import type { Queryable } from '../../db/pool.js';

export interface NewRun {
  jobId: number;
  profile: string;
  tenantId: string;
  bucket: string;
  objectKey: string;
  delimiter: string;
  encoding: string;
  header: string[];
  columns: string[];
  /** The object as validation read it: finalize reads these very bytes again (If-Match on the ETag). */
  objectEtag: string | null;
  objectSize: number | null;
}

/** A run as stored: what validation started with, its counts, and how far finalize got (summed over batches). */
export interface CsvImportRun extends NewRun {
  rowsRead: number;
  rowsValid: number;
  rowsInvalid: number;
  batches: number;
  validatedAt: Date | null;
  /** When validation read the file to its end (its row errors are the whole list); kept by a reject. */
  validationEndedAt: Date | null;
  finalizedBatches: number;
  rowsInserted: number;
  rowsUpdated: number;
  rowsUnchanged: number;
  rowsFailed: number;
  referencesCreated: Record<string, number>;
  finalizedAt: Date | null;
  /** Line ranges the reviewer excluded at finalize ([[from, to], …], inclusive); null: none. */
  excludedRows: Array<[number, number]> | null;
  /** What validation counted of the names finalize will create (ValidationSummary.referencesToCreate); null: none. */
  referencesToCreate: Record<string, number> | null;
  /** Tables whose referencesToCreate is a floor; null: none. */
  referencesToCreateAtLeast: string[] | null;
}

// The finalize counts are summed over the run's batches (csv_import_batches), which several connections mark at once.
const RUN_COLUMNS = `r.job_id, r.profile, r.tenant_id, r.bucket, r.object_key, r.delimiter, r.encoding, r.header, r.columns, r.rows_read,
  r.rows_valid, r.rows_invalid, r.batches, r.validated_at, r.validation_ended_at, r.references_created, r.object_etag, r.object_size, r.finalized_at, r.excluded_rows,
  r.references_to_create, r.references_to_create_at_least,
  coalesce(b.finalized_batches, 0)::int AS finalized_batches, coalesce(b.rows_inserted, 0)::int AS rows_inserted,
  coalesce(b.rows_updated, 0)::int AS rows_updated, coalesce(b.rows_unchanged, 0)::int AS rows_unchanged,
  coalesce(b.rows_failed, 0)::int AS rows_failed`;
const BATCH_SUMS = `LEFT JOIN LATERAL (
  SELECT count(*) FILTER (WHERE finalized_at IS NOT NULL) AS finalized_batches, sum(rows_inserted) AS rows_inserted,
    sum(rows_updated) AS rows_updated, sum(rows_unchanged) AS rows_unchanged, sum(rows_failed) AS rows_failed
  FROM csv_import_batches WHERE job_id = r.job_id) b ON true`;

function toRun(row: Record<string, unknown>): CsvImportRun {
  return {
    jobId: row.job_id as number,
    profile: row.profile as string,
    tenantId: row.tenant_id as string,
    bucket: row.bucket as string,
    objectKey: row.object_key as string,
    delimiter: row.delimiter as string,
    encoding: row.encoding as string,
    header: row.header as string[],
    columns: row.columns as string[],
    rowsRead: row.rows_read as number,
    rowsValid: row.rows_valid as number,
    rowsInvalid: row.rows_invalid as number,
    batches: row.batches as number,
    validatedAt: row.validated_at as Date | null,
    validationEndedAt: row.validation_ended_at as Date | null,
    finalizedBatches: row.finalized_batches as number,
    rowsInserted: row.rows_inserted as number,
    rowsUpdated: row.rows_updated as number,
    rowsUnchanged: row.rows_unchanged as number,
    rowsFailed: row.rows_failed as number,
    referencesCreated: row.references_created as Record<string, number>,
    objectEtag: row.object_etag as string | null,
    objectSize: row.object_size as number | null,
    finalizedAt: row.finalized_at as Date | null,
    excludedRows: (row.excluded_rows as Array<[number, number]> | null) ?? null,
    referencesToCreate: (row.references_to_create as Record<string, number> | null) ?? null,
    referencesToCreateAtLeast: (row.references_to_create_at_least as string[] | null) ?? null,
  };
}

/**
 * Whether the run's validation read its file to the end, so that its row errors are the whole list. A run an older
 * build validated during a rolling deploy (the column added, the old tasks still draining) has validated_at without
 * validation_ended_at: both are only ever set together, so either says it.
 */
export function validationEnded(run: CsvImportRun): boolean {
  return run.validationEndedAt !== null || run.validatedAt !== null;
}

/** What a run imported and how validation counted it: the common head of its validation and final summaries. */
export function runCounts(run: CsvImportRun) {
  return {
    profile: run.profile,
    tenant: run.tenantId,
    bucket: run.bucket,
    key: run.objectKey,
    rows: run.rowsRead,
    valid: run.rowsValid,
    invalid: run.rowsInvalid,
  };
}

export async function getCsvImportRun(db: Queryable, jobId: number): Promise<CsvImportRun | null> {
  // Prepared: the API's error pages read the header from it on every request.
  const { rows } = await db.query({
    name: 'bulk-import-csv-run',
    text: `SELECT ${RUN_COLUMNS} FROM csv_import_runs r ${BATCH_SUMS} WHERE r.job_id = $1`,
    values: [jobId],
  });
  return rows[0] ? toRun(rows[0]) : null;
}

/** Forgets what an earlier, unfinished validation attempt of the run wrote: validation always starts from the top. */
export async function discardValidation(tx: Queryable, jobId: number): Promise<void> {
  await tx.query(
    `WITH batches AS (DELETE FROM csv_import_batches WHERE job_id = $1),
          errors AS (DELETE FROM csv_import_row_errors WHERE job_id = $1)
     DELETE FROM csv_import_runs WHERE job_id = $1`,
    [jobId],
  );
}

export async function insertCsvImportRun(tx: Queryable, run: NewRun): Promise<void> {
  await tx.query(
    `INSERT INTO csv_import_runs (job_id, profile, tenant_id, bucket, object_key, delimiter, encoding, header, columns, object_etag, object_size)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
    [run.jobId, run.profile, run.tenantId, run.bucket, run.objectKey, run.delimiter, run.encoding, run.header, run.columns, run.objectEtag, run.objectSize],
  );
}

export interface ValidationCounts {
  rowsRead: number;
  rowsValid: number;
  rowsInvalid: number;
  batches: number;
  referencesToCreate?: Record<string, number> | undefined;
  referencesToCreateAtLeast?: string[] | undefined;
}

/** A batch as validation laid it out: the valid rows of lines firstRow…lastRow, rowCount of them. */
export interface BatchRange {
  firstRow: number;
  lastRow: number;
  rowCount: number;
}

/**
 * Records the validation's counts and the batch ledger (index i = batch i + 1). Returns when the validation is dated:
 * the mark of this validation that an approval names (review.ts).
 */
export async function markValidated(tx: Queryable, jobId: number, counts: ValidationCounts, batches: readonly BatchRange[]): Promise<Date> {
  const { rows } = await tx.query<{ validated_at: Date }>(
    `UPDATE csv_import_runs SET rows_read = $2, rows_valid = $3, rows_invalid = $4, batches = $5, validated_at = now(), validation_ended_at = now(),
       references_to_create = $6::jsonb, references_to_create_at_least = $7::text[]
     WHERE job_id = $1 RETURNING validated_at`,
    [
      jobId, counts.rowsRead, counts.rowsValid, counts.rowsInvalid, counts.batches,
      counts.referencesToCreate ? JSON.stringify(counts.referencesToCreate) : null, counts.referencesToCreateAtLeast ?? null,
    ],
  );
  await tx.query(
    `INSERT INTO csv_import_batches (job_id, batch_number, first_row, last_row, row_count)
     SELECT $1, batch.number, batch.first_row, batch.last_row, batch.row_count
     FROM unnest($2::int[], $3::int[], $4::int[]) WITH ORDINALITY AS batch(first_row, last_row, row_count, number)`,
    [jobId, batches.map((batch) => batch.firstRow), batches.map((batch) => batch.lastRow), batches.map((batch) => batch.rowCount)],
  );
  return rows[0]!.validated_at;
}

export interface ChunkCounts {
  inserted: number;
  updated: number;
  unchanged: number;
  failed: number;
}

export interface PendingBatch extends BatchRange {
  batchNumber: number;
}

/** The batches finalize has not written yet, in order. */
export async function pendingBatches(db: Queryable, jobId: number): Promise<PendingBatch[]> {
  const { rows } = await db.query<{ batch_number: number; row_count: number; first_row: number | null; last_row: number | null }>(
    `SELECT batch_number, row_count, first_row, last_row FROM csv_import_batches
     WHERE job_id = $1 AND finalized_at IS NULL ORDER BY batch_number`,
    [jobId],
  );
  return rows.map((row) => ({ batchNumber: row.batch_number, rowCount: row.row_count, firstRow: row.first_row ?? 0, lastRow: row.last_row ?? -1 }));
}

/**
 * The statement that marks a batch of job `jobId` written, for a prepared statement: $1 batch number, $2…$5 rows
 * inserted, updated, unchanged, failed. Only a batch not marked yet (0 rows: someone else wrote it, roll back).
 */
export function markBatchPreparedSql(jobId: number): string {
  return `UPDATE csv_import_batches SET finalized_at = now(), rows_inserted = $2, rows_updated = $3, rows_unchanged = $4, rows_failed = $5
  WHERE job_id = ${Math.trunc(Number(jobId))} AND batch_number = $1 AND finalized_at IS NULL`;
}

/**
 * The statement that corrects the counts of a batch marked earlier in the same transaction (markBatchPreparedSql marks
 * it with the counts expected before the write), values written in: it travels with the COMMIT in one round trip.
 */
export function correctBatchCountsSql(jobId: number, batchNumber: number, counts: ChunkCounts): string {
  const int = (value: number) => String(Math.trunc(Number(value)));
  return `UPDATE csv_import_batches SET rows_inserted = ${int(counts.inserted)}, rows_updated = ${int(counts.updated)},
    rows_unchanged = ${int(counts.unchanged)}, rows_failed = ${int(counts.failed)}
  WHERE job_id = ${int(jobId)} AND batch_number = ${int(batchNumber)}`;
}

/** The reviewer's exclusion, set in the transaction that resumes the run for finalize (null: none). */
export async function setExcludedRows(tx: Queryable, jobId: number, ranges: Array<[number, number]> | null): Promise<void> {
  await tx.query(`UPDATE csv_import_runs SET excluded_rows = $2::jsonb WHERE job_id = $1`, [jobId, ranges === null ? null : JSON.stringify(ranges)]);
}

/**
 * Marks the run finalized once every batch of its ledger is marked written; returns how many are not (then nothing is
 * marked). Batches commit without waiting for the disk (finalize-import.ts): a failover can lose the last of those
 * commits after the worker saw them succeed, and the run must not be called finalized with their rows missing.
 */
export async function markFinalized(tx: Queryable, jobId: number): Promise<number> {
  // The run row first, then the ledger in a statement of its own: what it reads is current once the row is ours.
  await tx.query('SELECT 1 FROM csv_import_runs WHERE job_id = $1 FOR UPDATE', [jobId]);
  const { rows } = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM csv_import_batches WHERE job_id = $1 AND finalized_at IS NULL', [jobId]);
  const unwritten = rows[0]!.n;
  if (unwritten === 0) await tx.query('UPDATE csv_import_runs SET finalized_at = coalesce(finalized_at, now()) WHERE job_id = $1', [jobId]);
  return unwritten;
}

/**
 * Rejected at review: the batch ledger goes, the row errors stay (until retention), and the run record forgets that
 * it was validated, so a requeued run validates the file again. Returns how many valid rows will not be written.
 */
export async function discardValidatedRows(tx: Queryable, jobId: number): Promise<number> {
  const { rows } = await tx.query<{ rows: number }>(
    `WITH removed AS (DELETE FROM csv_import_batches WHERE job_id = $1 RETURNING row_count, finalized_at),
          reset AS (UPDATE csv_import_runs SET validated_at = NULL WHERE job_id = $1)
     SELECT coalesce(sum(row_count) FILTER (WHERE finalized_at IS NULL), 0)::int AS rows FROM removed`,
    [jobId],
  );
  return rows[0]?.rows ?? 0;
}
