-- Up Migration

-- Retention deletes a run's child rows in chunks, each in a transaction of its own (worker/queue/maintenance.ts,
-- deleteExpiredJobs). It used to hold one transaction over a whole batch, so that no operator could requeue a run
-- whose rows were half deleted; with a campaign's million import_items that transaction lasted minutes, pinned
-- vacuum's horizon under the live queue and kept the documents it unlinked locked (a re-import of the same objects
-- waited on it). Now retention first marks its batch: retention_started_at. A requeue or replay refuses a marked run
-- (operator.ts, requeueWhere), so nothing brings it back while its rows go; a round that died half-way leaves the mark,
-- and a later round (an hour on) takes the run again. Nullable, no default: adding it only changes the catalog.
ALTER TABLE jobs ADD COLUMN retention_started_at timestamptz;
COMMENT ON COLUMN jobs.retention_started_at IS 'When retention began deleting this run (its child rows first): it can no longer be requeued';

-- Down Migration

ALTER TABLE jobs DROP COLUMN retention_started_at;
