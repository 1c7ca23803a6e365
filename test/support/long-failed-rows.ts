// A CSV import run of `tenant`, in review, with `count` failed rows of a million characters each (a row may be that
// long, and a failed one is kept whole), stored as rows from before csv_import_row_errors.size_bytes were: their
// weight unknown, read from their fields. Returns the run's id.
import type { Queryable } from '../../worker/db/pool.js';

export async function plantLongFailedRows(db: Queryable, tenant: string, count = 12): Promise<number> {
  const { rows } = await db.query<{ id: number }>("INSERT INTO jobs (kind, tenant_id, state) VALUES ('csv-import', $1, 'review_ready') RETURNING id", [tenant]);
  const id = rows[0]!.id;
  await db.query(
    `INSERT INTO csv_import_row_errors (job_id, row_number, phase, fields, errors)
     SELECT $1, g, 'validate', ARRAY['SKU-' || g, repeat('d', 1000000)], '[{"column": "description", "rule": "max_length", "message": "too long"}]'
     FROM generate_series(1, $2::int) g`,
    [id, count],
  );
  return id;
}
