// SQL of csv_import_runs: one row per CSV import run, written by validation and advanced by finalize.
import type { Queryable } from '../../db/pool.js';

export interface NewRun {
  jobId: number;
  profile: string;
  tenantId: string;
  bucket: string;
  objectKey: string;
  delimiter: string;
  header: string[];
  columns: string[];
}

/** A run as stored: what validation started with, plus its counts and finalize cursor. */
export interface CsvImportRun extends NewRun {
  rowsRead: number;
  rowsValid: number;
  rowsInvalid: number;
  batches: number;
  validatedAt: Date | null;
  finalizedBatches: number;
  rowsInserted: number;
  rowsUpdated: number;
  rowsUnchanged: number;
  rowsFailed: number;
  referencesCreated: Record<string, number>;
  finalizedAt: Date | null;
}

const RUN_COLUMNS = `job_id, profile, tenant_id, bucket, object_key, delimiter, header, columns, rows_read, rows_valid,
  rows_invalid, batches, validated_at, finalized_batches, rows_inserted, rows_updated, rows_unchanged, rows_failed,
  references_created, finalized_at`;

function toRun(row: Record<string, unknown>): CsvImportRun {
  return {
    jobId: row.job_id as number,
    profile: row.profile as string,
    tenantId: row.tenant_id as string,
    bucket: row.bucket as string,
    objectKey: row.object_key as string,
    delimiter: row.delimiter as string,
    header: row.header as string[],
    columns: row.columns as string[],
    rowsRead: row.rows_read as number,
    rowsValid: row.rows_valid as number,
    rowsInvalid: row.rows_invalid as number,
    batches: row.batches as number,
    validatedAt: row.validated_at as Date | null,
    finalizedBatches: row.finalized_batches as number,
    rowsInserted: row.rows_inserted as number,
    rowsUpdated: row.rows_updated as number,
    rowsUnchanged: row.rows_unchanged as number,
    rowsFailed: row.rows_failed as number,
    referencesCreated: row.references_created as Record<string, number>,
    finalizedAt: row.finalized_at as Date | null,
  };
}

export async function getCsvImportRun(db: Queryable, jobId: number): Promise<CsvImportRun | null> {
  const { rows } = await db.query(`SELECT ${RUN_COLUMNS} FROM csv_import_runs WHERE job_id = $1`, [jobId]);
  return rows[0] ? toRun(rows[0]) : null;
}

/** Forgets what an earlier, unfinished validation attempt of the run wrote: validation always starts from the top. */
export async function discardValidation(tx: Queryable, jobId: number): Promise<void> {
  await tx.query(
    `WITH batches AS (DELETE FROM csv_import_staged_batches WHERE job_id = $1),
          errors AS (DELETE FROM csv_import_row_errors WHERE job_id = $1)
     DELETE FROM csv_import_runs WHERE job_id = $1`,
    [jobId],
  );
}

export async function insertCsvImportRun(tx: Queryable, run: NewRun): Promise<void> {
  await tx.query(
    `INSERT INTO csv_import_runs (job_id, profile, tenant_id, bucket, object_key, delimiter, header, columns)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [run.jobId, run.profile, run.tenantId, run.bucket, run.objectKey, run.delimiter, run.header, run.columns],
  );
}

export interface ValidationCounts {
  rowsRead: number;
  rowsValid: number;
  rowsInvalid: number;
  batches: number;
}

export async function markValidated(tx: Queryable, jobId: number, counts: ValidationCounts): Promise<void> {
  await tx.query(
    `UPDATE csv_import_runs SET rows_read = $2, rows_valid = $3, rows_invalid = $4, batches = $5, validated_at = now()
     WHERE job_id = $1`,
    [jobId, counts.rowsRead, counts.rowsValid, counts.rowsInvalid, counts.batches],
  );
}

export interface ChunkCounts {
  inserted: number;
  updated: number;
  unchanged: number;
  failed: number;
  /** Reference rows created, by table. */
  referencesCreated: Record<string, number>;
}

/**
 * What advanceFinalizeCursor found: `advanced` (cursor moved, staged batch deleted), `cursor-moved` (the cursor was
 * not at the batch before it: the batch was already written) or `staging-missing` (the cursor was right but the
 * batch's staged rows were gone, so nothing was written for it).
 */
export type CursorAdvance = 'advanced' | 'cursor-moved' | 'staging-missing';

/**
 * Records that batch `batchNumber` is written: moves the cursor, adds the counts and deletes the staged batch, in the
 * caller's transaction (the one that wrote the rows). Anything but `advanced` means the caller must roll back.
 */
export async function advanceFinalizeCursor(tx: Queryable, jobId: number, batchNumber: number, counts: ChunkCounts): Promise<CursorAdvance> {
  const { rows } = await tx.query<{ advanced: number; removed: number }>(
    `WITH advanced AS (
       UPDATE csv_import_runs SET
         finalized_batches = $2,
         rows_inserted = rows_inserted + $3, rows_updated = rows_updated + $4,
         rows_unchanged = rows_unchanged + $5, rows_failed = rows_failed + $6,
         references_created = references_created || coalesce(
           (SELECT jsonb_object_agg(increment.key, coalesce((references_created ->> increment.key)::int, 0) + increment.value::int)
            FROM jsonb_each_text($7::jsonb) AS increment), '{}'::jsonb)
       WHERE job_id = $1 AND finalized_batches = $2 - 1
       RETURNING job_id
     ), removed AS (
       DELETE FROM csv_import_staged_batches WHERE job_id = $1 AND batch_number = $2 AND EXISTS (SELECT 1 FROM advanced)
       RETURNING batch_number
     )
     SELECT (SELECT count(*) FROM advanced)::int AS advanced, (SELECT count(*) FROM removed)::int AS removed`,
    [jobId, batchNumber, counts.inserted, counts.updated, counts.unchanged, counts.failed, counts.referencesCreated],
  );
  if (rows[0]?.advanced !== 1) return 'cursor-moved';
  // Validation stages every batch 1…batches (a batch emptied by duplicates stays, with no rows): a missing one means
  // its staging was discarded (a rejected run) and writing "it" would end the run as if its rows were imported.
  return rows[0].removed === 1 ? 'advanced' : 'staging-missing';
}

export async function markFinalized(tx: Queryable, jobId: number): Promise<void> {
  await tx.query(`UPDATE csv_import_runs SET finalized_at = coalesce(finalized_at, now()) WHERE job_id = $1`, [jobId]);
}

/**
 * Rejected at review: the staged rows go, the row errors stay (until retention), and the run record forgets that it
 * was validated, so a requeued run validates the file again instead of resuming from a summary whose staging is gone.
 */
export async function discardStagedRows(tx: Queryable, jobId: number): Promise<number> {
  const { rows } = await tx.query<{ rows: number }>(
    `WITH removed AS (DELETE FROM csv_import_staged_batches WHERE job_id = $1 RETURNING row_count),
          reset AS (UPDATE csv_import_runs SET validated_at = NULL WHERE job_id = $1)
     SELECT coalesce(sum(row_count), 0)::int AS rows FROM removed`,
    [jobId],
  );
  return rows[0]?.rows ?? 0;
}
