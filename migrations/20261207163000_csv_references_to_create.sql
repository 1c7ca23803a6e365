-- Up Migration

-- What validation counted of the reference names finalize will create (per reference table, the distinct names of
-- valid rows the table lacked; references-to-create.ts), kept with the validation's other counts. The review page and
-- `show` list it; a worker that died after marking the run validated and before storing its outcome rebuilt the
-- summary without it, and the reviewer approved without being told. NULL: a profile without references, or a run
-- validated before this migration.
ALTER TABLE csv_import_runs ADD COLUMN references_to_create jsonb;
-- The tables whose count is a floor (more new names than validation counts).
ALTER TABLE csv_import_runs ADD COLUMN references_to_create_at_least text[];

-- Down Migration

ALTER TABLE csv_import_runs DROP COLUMN references_to_create_at_least;
ALTER TABLE csv_import_runs DROP COLUMN references_to_create;
