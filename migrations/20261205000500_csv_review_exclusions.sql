-- Up Migration

-- Approval per batch: a reviewer may finalize a CSV import while excluding rows (`bulk-import finalize <id>
-- --exclude-rows 12,40-90`, finalizeImport(db, id, { excludeRows }), POST /v1/jobs/{id}/finalize). The exclusion is
-- kept with the run as line ranges [[from, to], …] (inclusive, sorted, merged), set in the transaction that resumes the
-- run; finalize reads it on every attempt and records each excluded valid row as a row error of phase 'finalize'
-- (rule 'excluded') in its batch's transaction, so `errors <id> --csv` exports them like the failed rows. NULL: no
-- exclusion.
ALTER TABLE csv_import_runs ADD COLUMN excluded_rows jsonb;

-- Down Migration

ALTER TABLE csv_import_runs DROP COLUMN excluded_rows;
