// Duplicate natural keys inside one file, found after staging: the first row with a key is kept, every later row with
// the same key becomes a row error that names the first. Done in the database (a hash aggregate over the staged rows)
// rather than with a set of keys in the worker, whose memory would then grow with the file.
import type { PoolClient } from '../../db/pool.js';
import type { HeaderLayout } from './header.js';
import type { ImportProfile } from './profile.js';
import { insertRowErrors, type RowError } from './row-errors.js';
import { show } from './row-validator.js';
import { originalFieldsOf, removeStagedRows, type StagedRow } from './staged-batches.js';

const PAGE = 1_000;

/**
 * Inside the caller's transaction: records every duplicate as a row error and removes it from its batch. Returns how
 * many rows were duplicates.
 */
export async function reportDuplicateKeys(tx: PoolClient, jobId: number, profile: ImportProfile, layout: HeaderLayout): Promise<number> {
  const positions = profile.target.naturalKey.map((key) => layout.columns.findIndex((column) => column.name === key) + 1);
  const keyOf = (element: string) =>
    positions.length === 1 ? `${element} ->> ${positions[0]}` : `jsonb_build_array(${positions.map((p) => `${element} -> ${p}`).join(', ')})::text`;
  // A cursor keeps memory flat even when most rows are duplicates; the job id is a number, safe to inline (a
  // DECLARE cannot take bind parameters).
  const id = Number(jobId);
  await tx.query(
    `DECLARE csv_duplicates NO SCROLL CURSOR FOR
     WITH repeated AS (
       SELECT ${keyOf('e')} AS key, min((e ->> 0)::int) AS first_row
       FROM csv_import_staged_batches b CROSS JOIN LATERAL jsonb_array_elements(b.rows) AS e
       WHERE b.job_id = ${id}
       GROUP BY 1 HAVING count(*) > 1
     )
     SELECT b.batch_number, (e ->> 0)::int AS row_number, r.first_row, e AS row
     FROM csv_import_staged_batches b CROSS JOIN LATERAL jsonb_array_elements(b.rows) AS e
     JOIN repeated r ON r.key = ${keyOf('e')} AND (e ->> 0)::int > r.first_row
     WHERE b.job_id = ${id} AND EXISTS (SELECT 1 FROM repeated)
     ORDER BY 2`,
  );
  const keyName = profile.target.naturalKey.join('+');
  let duplicates = 0;
  try {
    for (;;) {
      const { rows } = await tx.query<{ batch_number: number; row_number: number; first_row: number; row: StagedRow }>(
        `FETCH ${PAGE} FROM csv_duplicates`,
      );
      if (rows.length === 0) break;
      const errors: RowError[] = [];
      const removals = new Map<number, number[]>();
      for (const { batch_number: batch, row_number: rowNumber, first_row: firstRow, row } of rows) {
        const value = positions.map((position) => row[position] as string).join('+');
        errors.push({
          row: rowNumber,
          fields: originalFieldsOf(row, layout),
          issues: [{ column: keyName, rule: 'duplicate', message: `${keyName} ${show(value)} is already on row ${firstRow} of this file` }],
        });
        removals.set(batch, [...(removals.get(batch) ?? []), rowNumber]);
      }
      await insertRowErrors(tx, jobId, 'validate', errors);
      await removeStagedRows(tx, jobId, removals);
      duplicates += rows.length;
    }
  } finally {
    await tx.query('CLOSE csv_duplicates').catch(() => {});
  }
  return duplicates;
}
