-- Up Migration

-- When this run's validation read its file to the end, so that its row errors are the whole list. Unlike validated_at,
-- which a reject clears (so a requeued run validates again), this stays: the rejected run's failed rows are still
-- all of them. A validation that stopped part-way (canceled, failed, dead) leaves it NULL, and the failed-rows export
-- refuses to pass the rows found so far off as the list. A new validation starts with a new run record (NULL).
ALTER TABLE csv_import_runs ADD COLUMN validation_ended_at timestamptz;
-- Runs from before: validated, rejected after a validation (its counts were written with it), or finalized.
UPDATE csv_import_runs SET validation_ended_at = coalesce(validated_at, finalized_at, created_at)
WHERE validated_at IS NOT NULL OR finalized_at IS NOT NULL OR rows_read > 0;

-- Down Migration

ALTER TABLE csv_import_runs DROP COLUMN validation_ended_at;
