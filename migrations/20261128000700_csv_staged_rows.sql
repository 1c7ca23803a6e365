-- Up Migration

-- CSV staging, second form: one plain row per valid CSV row, loaded with COPY, instead of one JSON array per batch
-- loaded with INSERT. Measured on 1M product rows (bench/csv.ts): COPY into text columns costs the database about a
-- third of parsing JSON arrays, and finalize reads plain columns instead of expanding JSON. See docs/ARCHITECTURE.md
-- "csv-import" for the figures.
DROP TABLE csv_import_staged_batches;

-- The valid rows of a run between validation and finalize. v1…v40 hold the values of the run's staged columns
-- (csv_import_runs.columns, in that order; a profile has at most 40 columns), normalised text, NULL when empty.
-- fields holds the row as the file had it, only when that differs from the values (trimmed, canonical spelling …),
-- so the error listing can always show a row as written.
-- No foreign key on purpose: a key check per COPY'd row doubled the load time (measured 4.5 s → 8.9 s per 1M rows).
-- The rows are deleted by the finalize transaction that writes their batch, by a reject, by a new validation
-- attempt, and with their job (the trigger below), so none outlives its run.
CREATE TABLE csv_import_staged_rows (
  job_id       bigint  NOT NULL,
  batch_number integer NOT NULL,
  row_number   integer NOT NULL,
  v1 text, v2 text, v3 text, v4 text, v5 text, v6 text, v7 text, v8 text, v9 text, v10 text,
  v11 text, v12 text, v13 text, v14 text, v15 text, v16 text, v17 text, v18 text, v19 text, v20 text,
  v21 text, v22 text, v23 text, v24 text, v25 text, v26 text, v27 text, v28 text, v29 text, v30 text,
  v31 text, v32 text, v33 text, v34 text, v35 text, v36 text, v37 text, v38 text, v39 text, v40 text,
  fields       text[]
);
CREATE INDEX csv_import_staged_rows_batch ON csv_import_staged_rows (job_id, batch_number);

-- One row per staged batch: how many rows it holds and, once finalize has written it, what became of them. A batch
-- is marked in the same transaction that writes its rows (and deletes them from staging), so a crash leaves every
-- batch either written and marked, or still staged and unmarked; batches are written by several connections at
-- once, so there is no single cursor.
CREATE TABLE csv_import_batches (
  job_id         bigint      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  batch_number   integer     NOT NULL CHECK (batch_number >= 1),
  row_count      integer     NOT NULL CHECK (row_count >= 0),
  finalized_at   timestamptz,
  rows_inserted  integer     NOT NULL DEFAULT 0,
  rows_updated   integer     NOT NULL DEFAULT 0,
  rows_unchanged integer     NOT NULL DEFAULT 0,
  rows_failed    integer     NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, batch_number)
);

-- Runs from before this migration: a finished or partly finished finalize keeps its counts as one written batch;
-- a run validated but not finalized loses its staging with the old table, so it is marked not validated (finalize
-- then refuses it with "its staging is gone", and a requeue validates the file again) instead of "finalizing"
-- nothing.
INSERT INTO csv_import_batches (job_id, batch_number, row_count, finalized_at, rows_inserted, rows_updated, rows_unchanged, rows_failed)
SELECT job_id, 1, rows_inserted + rows_updated + rows_unchanged + rows_failed, coalesce(finalized_at, now()),
       rows_inserted, rows_updated, rows_unchanged, rows_failed
FROM csv_import_runs WHERE finalized_batches > 0 OR finalized_at IS NOT NULL;
UPDATE csv_import_runs SET validated_at = NULL WHERE validated_at IS NOT NULL AND finalized_at IS NULL;

-- The finalize counts now live per batch (summed when read). reference_names: per reference column (its staged
-- position), the distinct names of the valid rows as validation saw them, or null when there were too many to list;
-- finalize creates the missing ones from it.
ALTER TABLE csv_import_runs
  ADD COLUMN reference_names jsonb NOT NULL DEFAULT '{}'::jsonb,
  DROP COLUMN finalized_batches,
  DROP COLUMN rows_inserted,
  DROP COLUMN rows_updated,
  DROP COLUMN rows_unchanged,
  DROP COLUMN rows_failed;

-- Staged rows go with their job (retention, purge of dead jobs): one statement-level call per DELETE on jobs.
CREATE FUNCTION csv_import_delete_staged_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM csv_import_staged_rows s USING deleted_jobs d WHERE s.job_id = d.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER csv_import_staged_rows_follow_jobs AFTER DELETE ON jobs
  REFERENCING OLD TABLE AS deleted_jobs FOR EACH STATEMENT EXECUTE FUNCTION csv_import_delete_staged_rows();

-- Down Migration

DROP TRIGGER csv_import_staged_rows_follow_jobs ON jobs;
DROP FUNCTION csv_import_delete_staged_rows();
ALTER TABLE csv_import_runs
  DROP COLUMN reference_names,
  ADD COLUMN finalized_batches integer NOT NULL DEFAULT 0 CHECK (finalized_batches >= 0),
  ADD COLUMN rows_inserted integer NOT NULL DEFAULT 0,
  ADD COLUMN rows_updated integer NOT NULL DEFAULT 0,
  ADD COLUMN rows_unchanged integer NOT NULL DEFAULT 0,
  ADD COLUMN rows_failed integer NOT NULL DEFAULT 0;
DROP TABLE csv_import_batches;
DROP TABLE csv_import_staged_rows;
CREATE TABLE csv_import_staged_batches (
  job_id       bigint  NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  batch_number integer NOT NULL CHECK (batch_number >= 1),
  first_row    integer NOT NULL,
  last_row     integer NOT NULL,
  row_count    integer NOT NULL CHECK (row_count >= 0),
  rows         jsonb   NOT NULL,
  PRIMARY KEY (job_id, batch_number)
);
ALTER TABLE csv_import_staged_batches ALTER COLUMN rows SET STORAGE EXTERNAL;
