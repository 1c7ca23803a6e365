-- Up Migration

-- CSV staging, third form: the valid rows are no longer copied into Postgres between validation and finalize. The
-- uploaded object itself is the staging: validation records its ETag, and finalize reads it again from S3 pinned to
-- that ETag (a changed or deleted object stops finalize before it writes anything of it), checks each row again with
-- the same profile and writes the rows straight into the target. Writing every row twice (a COPY into staging, then
-- an INSERT … SELECT out of it) cost more than the import itself; see docs/ARCHITECTURE.md "csv-import" for the
-- figures. What validation keeps in the database is what review and a resumed finalize need: the row errors (with
-- every invalid and duplicate row, which finalize skips) and the batch ledger below.
DROP TRIGGER csv_import_staged_rows_follow_jobs ON jobs;
DROP FUNCTION csv_import_delete_staged_rows();
DROP TABLE csv_import_staged_rows;

-- The object as validation read it: finalize reads exactly these bytes (If-Match on the ETag) or nothing, decoded
-- the same way.
ALTER TABLE csv_import_runs
  ADD COLUMN encoding text NOT NULL DEFAULT 'utf-8',
  ADD COLUMN object_etag text,
  ADD COLUMN object_size bigint,
  DROP COLUMN reference_names;

-- A batch is now a range of the file's lines: the valid rows of lines first_row…last_row (the row errors of phase
-- 'validate' name the rows in that range that are not written). row_count is how many rows the batch writes. Null only
-- for batches of runs from before this migration, which are all either written or discarded below.
ALTER TABLE csv_import_batches
  ADD COLUMN first_row integer,
  ADD COLUMN last_row integer,
  ADD CONSTRAINT csv_import_batches_range CHECK (first_row IS NULL OR (first_row >= 2 AND last_row >= first_row));

-- Fails the statement (and with it the transaction) when a check does not hold: lets a client send checks, writes and
-- COMMIT in one round trip (a failed check skips the rest). The HINT marks the error as a check, the message names it.
CREATE FUNCTION bulk_import_check(ok boolean, failure text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = failure, HINT = 'bulk-import-check';
  END IF;
  RETURN true;
END
$$;

-- Deletions from reference tables, counted per table. Finalize caches the ids of the names it resolves; every batch
-- checks, in its own transaction, that no reference table it uses has seen a deletion since its cache was filled (one
-- primary-key lookup per table instead of looking up every id it uses: that cost a tenth of finalize). A statement
-- trigger counts, so a DELETE of a thousand rows is one increment. A profile that names a new reference table must
-- attach the trigger to it (test/csv-batch-writer.test.ts checks every profile's tables).
CREATE TABLE reference_deletions (
  table_name text   PRIMARY KEY,
  deletions  bigint NOT NULL DEFAULT 0
);
CREATE FUNCTION count_reference_deletions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO reference_deletions AS counted (table_name, deletions) VALUES (TG_TABLE_NAME, 1)
  ON CONFLICT (table_name) DO UPDATE SET deletions = counted.deletions + 1;
  RETURN NULL;
END
$$;
CREATE TRIGGER categories_count_deletions AFTER DELETE OR TRUNCATE ON categories
  FOR EACH STATEMENT EXECUTE FUNCTION count_reference_deletions();
CREATE TRIGGER suppliers_count_deletions AFTER DELETE OR TRUNCATE ON suppliers
  FOR EACH STATEMENT EXECUTE FUNCTION count_reference_deletions();
CREATE TRIGGER locations_count_deletions AFTER DELETE OR TRUNCATE ON locations
  FOR EACH STATEMENT EXECUTE FUNCTION count_reference_deletions();

-- Runs validated but not finished lose their staged rows with the table: they are marked not validated (finalize
-- refuses them with a clear message; a requeue validates the file again, and the upsert makes rows written by an
-- interrupted finalize come out unchanged).
UPDATE csv_import_runs SET validated_at = NULL WHERE validated_at IS NOT NULL AND finalized_at IS NULL;
DELETE FROM csv_import_batches b USING csv_import_runs r WHERE b.job_id = r.job_id AND r.validated_at IS NULL AND b.finalized_at IS NULL;

-- Down Migration

DROP FUNCTION bulk_import_check(boolean, text);
DROP TRIGGER categories_count_deletions ON categories;
DROP TRIGGER suppliers_count_deletions ON suppliers;
DROP TRIGGER locations_count_deletions ON locations;
DROP FUNCTION count_reference_deletions();
DROP TABLE reference_deletions;

ALTER TABLE csv_import_batches DROP CONSTRAINT csv_import_batches_range, DROP COLUMN first_row, DROP COLUMN last_row;
ALTER TABLE csv_import_runs
  DROP COLUMN encoding,
  DROP COLUMN object_etag,
  DROP COLUMN object_size,
  ADD COLUMN reference_names jsonb NOT NULL DEFAULT '{}'::jsonb;
UPDATE csv_import_runs SET validated_at = NULL WHERE validated_at IS NOT NULL AND finalized_at IS NULL;
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
CREATE FUNCTION csv_import_delete_staged_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM csv_import_staged_rows s USING deleted_jobs d WHERE s.job_id = d.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER csv_import_staged_rows_follow_jobs AFTER DELETE ON jobs
  REFERENCING OLD TABLE AS deleted_jobs FOR EACH STATEMENT EXECUTE FUNCTION csv_import_delete_staged_rows();
