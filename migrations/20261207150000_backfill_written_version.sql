-- Up Migration

-- The row version a backfill's write made, with each before-image: the id of the batch transaction that wrote the row
-- (64 bits, pg_current_xact_id(); the written version's xmin is its low 32 bits). `bulk-import backfill undo`
-- restores a row only while it is still that version (xmin unchanged) and holds the value written: any later write to
-- the row — an application that wrote the same value, a trigger, a change of another column — makes a new version, and
-- the row is left alone. Before, the value alone decided, so a row an application had set to the same value was
-- reverted. Freezing keeps a tuple's xmin readable (Postgres 9.4 and later mark it frozen in place), so the check holds
-- for as long as a 32-bit xid means one transaction: an image older than 2^31 transactions is treated as changed.
-- NULL for images saved before this migration: they keep the value rule. Nullable, no default: only the catalog
-- changes.
ALTER TABLE backfill_before_images ADD COLUMN written_xid xid8;
COMMENT ON COLUMN backfill_before_images.written_xid IS
  'Transaction that wrote the row (its version''s xmin): undo restores only that version; NULL = saved before 20261207150000, value rule';

-- Down Migration

ALTER TABLE backfill_before_images DROP COLUMN written_xid;
