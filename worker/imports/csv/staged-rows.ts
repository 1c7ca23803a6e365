// SQL and COPY format of csv_import_staged_rows: the valid rows of a run between validation and finalize, one row per
// CSV row, value k of the run's staged columns in column v<k>. Validation loads them with COPY (the fastest way
// Postgres has to take rows in); finalize reads one batch at a time and deletes it in the transaction that writes it.
import type { Queryable } from '../../db/pool.js';
import type { HeaderLayout } from './header.js';

/** Value columns of the staging table (v1…v40): the most columns a profile may have. */
export const STAGED_VALUE_COLUMNS = 40;

/** A staged row as read back: the values in staged-column order, and the fields as written when they differ. */
export interface StagedRow {
  rowNumber: number;
  values: Array<string | null>;
  fields: string[] | null;
}

export function valueColumn(position: number): string {
  return `v${position}`;
}

/** The COPY statement for rows of `columnCount` values, in the column order of {@link stagedRowLine}. */
export function copyStagedRowsSql(columnCount: number): string {
  const values = Array.from({ length: columnCount }, (_, index) => valueColumn(index + 1));
  return `COPY csv_import_staged_rows (job_id, batch_number, row_number, ${values.join(', ')}, fields) FROM STDIN`;
}

// COPY's text format: a backslash, tab, line feed or carriage return inside a value is written as an escape.
const NEEDS_COPY_ESCAPE = /[\\\t\n\r]/;
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

function copyText(value: string): string {
  return NEEDS_COPY_ESCAPE.test(value) ? value.replace(/[\\\t\n\r]/g, (char) => COPY_ESCAPES[char]!) : value;
}

/** A text[] literal: every element quoted, `"` and `\` escaped (rare: only rows whose values differ from the file). */
function arrayLiteral(fields: readonly string[]): string {
  return `{${fields.map((field) => `"${field.replace(/["\\]/g, (char) => `\\${char}`)}"`).join(',')}}`;
}

/**
 * One line of COPY text for a staged row: `prefix` is `job_id \t batch_number \t` (built once per batch), then the row
 * number, the values and the original fields (or \N).
 */
export function stagedRowLine(prefix: string, rowNumber: number, values: ReadonlyArray<string | null>, fields: readonly string[] | null): string {
  let line = prefix + rowNumber;
  for (let index = 0; index < values.length; index++) {
    const value = values[index];
    line += value === null || value === undefined ? '\t\\N' : `\t${copyText(value)}`;
  }
  return `${line}\t${fields === null ? '\\N' : copyText(arrayLiteral(fields))}\n`;
}

/** A staged row from a query result that selected row_number, v1…v<columnCount> and fields. */
export function toStagedRow(row: Record<string, unknown>, columnCount: number): StagedRow {
  const values: Array<string | null> = [];
  for (let position = 1; position <= columnCount; position++) values.push(row[valueColumn(position)] as string | null);
  return { rowNumber: row.row_number as number, values, fields: row.fields as string[] | null };
}

function selectedColumns(columnCount: number): string {
  return ['row_number', ...Array.from({ length: columnCount }, (_, index) => valueColumn(index + 1)), 'fields'].join(', ');
}

/** The staged rows of one batch (all, or only the given row numbers), in row order. */
export async function readStagedRows(db: Queryable, jobId: number, batchNumber: number, columnCount: number): Promise<StagedRow[]> {
  const { rows } = await db.query(
    `SELECT ${selectedColumns(columnCount)} FROM csv_import_staged_rows
     WHERE job_id = $1 AND batch_number = $2 ORDER BY row_number`,
    [jobId, batchNumber],
  );
  return rows.map((row) => toStagedRow(row, columnCount));
}

/** Removes rows from staging (duplicates found after staging), each found through its batch (the index). */
export async function removeStagedRows(tx: Queryable, jobId: number, rows: ReadonlyArray<{ batch: number; row: number }>): Promise<void> {
  if (rows.length === 0) return;
  await tx.query(
    `DELETE FROM csv_import_staged_rows s USING unnest($2::int[], $3::int[]) AS removed(batch_number, row_number)
     WHERE s.job_id = $1 AND s.batch_number = removed.batch_number AND s.row_number = removed.row_number`,
    [jobId, rows.map((entry) => entry.batch), rows.map((entry) => entry.row)],
  );
}

/** Deletes a written batch from staging; returns how many rows it held. */
export async function deleteStagedBatch(tx: Queryable, jobId: number, batchNumber: number): Promise<number> {
  const { rowCount } = await tx.query(`DELETE FROM csv_import_staged_rows WHERE job_id = $1 AND batch_number = $2`, [jobId, batchNumber]);
  return rowCount ?? 0;
}

/** The fields of a staged row as the file had them (header order). */
export function originalFieldsOf(row: StagedRow, layout: HeaderLayout): string[] {
  if (row.fields !== null) return row.fields;
  const fields = new Array<string>(layout.header.length).fill('');
  layout.fieldIndex.forEach((fieldIndex, column) => {
    fields[fieldIndex] = row.values[column] ?? '';
  });
  return fields;
}
