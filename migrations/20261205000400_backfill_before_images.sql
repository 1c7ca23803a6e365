-- Up Migration

-- Before-images of backfills run with `"saveBeforeImage": true`: for every row a batch writes, the row's key and the
-- target column's value before and after the write, committed in the batch's own transaction (so a crashed or
-- resumed run never has a written row without its before-image). `bulk-import backfill undo <name>` writes the old
-- values back, in keyset batches, to the rows that still hold the value the backfill wrote, and deletes their
-- before-images; `bulk-import backfill discard <name>` deletes them once the run is accepted. See docs/RUNBOOK.md,
-- "Backfills › Rollback". Values are stored as jsonb (to_jsonb of the column), which round-trips any column type.
-- One before-image per backfill and row: the first write of a row is the one an undo must restore (ON CONFLICT DO
-- NOTHING). No foreign key to jobs: retention deletes finished runs, their before-images must stay.
CREATE TABLE backfill_before_images (
  backfill     text        NOT NULL,
  row_key      text        NOT NULL,
  table_name   text        NOT NULL,
  column_name  text        NOT NULL,
  tenant_id    text,
  old_value    jsonb,
  new_value    jsonb,
  job_id       bigint      NOT NULL,
  saved_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (backfill, row_key)
);

-- Down Migration

DROP TABLE backfill_before_images;
