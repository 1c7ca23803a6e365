// SQL of csv_import_staged_batches: the valid rows of a run between validation and finalize, one row per batch.
// A staged row is a JSON array [row number, value of column 1, …, value of column n] and, when the values differ
// from the fields as written (trimmed, canonical spelling …), the original fields as one more element, so the
// error listing can always show a row as the file had it.
import type { Queryable } from '../../db/pool.js';
import type { HeaderLayout } from './header.js';

export type StagedRow = [number, ...Array<string | null | string[]>];

export interface StagedBatch {
  batchNumber: number;
  firstRow: number;
  lastRow: number;
  rowCount: number;
  /** The JSON text of the rows array, built by the caller (one string per batch, no intermediate objects). */
  rowsJson: string;
}

export async function insertStagedBatch(tx: Queryable, jobId: number, batch: StagedBatch): Promise<void> {
  await tx.query(
    `INSERT INTO csv_import_staged_batches (job_id, batch_number, first_row, last_row, row_count, rows)
     VALUES ($1, $2, $3, $4, $5, $6::jsonb)`,
    [jobId, batch.batchNumber, batch.firstRow, batch.lastRow, batch.rowCount, batch.rowsJson],
  );
}

/** The staged rows of one batch (all, or only the given row numbers), in row order. */
export async function readStagedRows(db: Queryable, jobId: number, batchNumber: number, only?: number[]): Promise<StagedRow[]> {
  const { rows } = await db.query<{ row: StagedRow }>(
    `SELECT e AS row FROM csv_import_staged_batches b CROSS JOIN LATERAL jsonb_array_elements(b.rows) AS e
     WHERE b.job_id = $1 AND b.batch_number = $2 AND ($3::int[] IS NULL OR (e ->> 0)::int = ANY($3))
     ORDER BY (e ->> 0)::int`,
    [jobId, batchNumber, only ?? null],
  );
  return rows.map((row) => row.row);
}

/** Removes rows from their batches (duplicates found after staging). */
export async function removeStagedRows(tx: Queryable, jobId: number, byBatch: Map<number, number[]>): Promise<void> {
  if (byBatch.size === 0) return;
  await tx.query(
    `UPDATE csv_import_staged_batches b SET
       rows = (SELECT coalesce(jsonb_agg(e ORDER BY position), '[]'::jsonb)
               FROM jsonb_array_elements(b.rows) WITH ORDINALITY AS kept(e, position)
               WHERE (e ->> 0)::int <> ALL(removal.rows)),
       row_count = b.row_count - cardinality(removal.rows)
     FROM (SELECT batch_number, array_agg(row_number) AS rows
           FROM unnest($2::int[], $3::int[]) AS input(batch_number, row_number) GROUP BY batch_number) AS removal
     WHERE b.job_id = $1 AND b.batch_number = removal.batch_number`,
    [jobId, [...byBatch.entries()].flatMap(([batch, rows]) => rows.map(() => batch)), [...byBatch.values()].flat()],
  );
}

/** The fields of a staged row as the file had them (header order). */
export function originalFieldsOf(row: StagedRow, layout: HeaderLayout): string[] {
  const columns = layout.columns.length;
  if (row.length === columns + 2) return row[columns + 1] as string[];
  const fields = new Array<string>(layout.header.length).fill('');
  layout.fieldIndex.forEach((fieldIndex, column) => {
    fields[fieldIndex] = (row[column + 1] as string | null) ?? '';
  });
  return fields;
}
