// Duplicate natural keys inside one file, found after staging: the first row with a key is kept, every later row with
// the same key becomes a row error that names the first. Done in the database (a hash aggregate over the staged rows)
// rather than with a set of keys in the worker, whose memory would then grow with the file.
import type { PoolClient } from '../../db/pool.js';
import type { HeaderLayout } from './header.js';
import type { ImportProfile } from './profile.js';
import { insertRowErrors, type RowError } from './row-errors.js';
import { show } from './row-validator.js';
import { originalFieldsOf, removeStagedRows, toStagedRow, valueColumn } from './staged-rows.js';

const PAGE = 1_000;

/**
 * Inside the caller's transaction: records every duplicate as a row error and removes it from staging. Returns the
 * batch number of every row removed.
 */
export async function reportDuplicateKeys(tx: PoolClient, jobId: number, profile: ImportProfile, layout: HeaderLayout): Promise<number[]> {
  const positions = profile.target.naturalKey.map((key) => layout.columns.findIndex((column) => column.name === key) + 1);
  const key = positions.map(valueColumn).join(', ');
  const columnCount = layout.columns.length;
  const selected = Array.from({ length: columnCount }, (_, index) => `s.${valueColumn(index + 1)}`).join(', ');
  // A cursor keeps memory flat even when most rows are duplicates; the job id is a number, safe to inline (a
  // DECLARE cannot take bind parameters).
  const id = Number(jobId);
  await tx.query(
    `DECLARE csv_duplicates NO SCROLL CURSOR FOR
     WITH repeated AS (
       SELECT ${key}, min(row_number) AS first_row
       FROM csv_import_staged_rows WHERE job_id = ${id}
       GROUP BY ${key} HAVING count(*) > 1
     )
     SELECT s.batch_number, s.row_number, r.first_row, ${selected}, s.fields
     FROM csv_import_staged_rows s
     JOIN repeated r ON ${positions.map((p) => `r.${valueColumn(p)} = s.${valueColumn(p)}`).join(' AND ')} AND s.row_number > r.first_row
     WHERE s.job_id = ${id}
     ORDER BY s.row_number`,
  );
  const keyName = profile.target.naturalKey.join('+');
  const removedBatches: number[] = [];
  try {
    for (;;) {
      const { rows } = await tx.query<Record<string, unknown>>(`FETCH ${PAGE} FROM csv_duplicates`);
      if (rows.length === 0) break;
      const errors: RowError[] = [];
      const removed: Array<{ batch: number; row: number }> = [];
      for (const found of rows) {
        const row = toStagedRow(found, columnCount);
        const value = positions.map((position) => row.values[position - 1]).join('+');
        errors.push({
          row: row.rowNumber,
          fields: originalFieldsOf(row, layout),
          issues: [{ column: keyName, rule: 'duplicate', message: `${keyName} ${show(value)} is already on row ${found.first_row as number} of this file` }],
        });
        removed.push({ batch: found.batch_number as number, row: row.rowNumber });
        removedBatches.push(found.batch_number as number);
      }
      await insertRowErrors(tx, jobId, 'validate', errors);
      await removeStagedRows(tx, jobId, removed);
    }
  } finally {
    await tx.query('CLOSE csv_duplicates').catch(() => {});
  }
  return removedBatches;
}
