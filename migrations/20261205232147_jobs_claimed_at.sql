-- Up Migration

-- When the run's current (or last) attempt was claimed. started_at is the first claim and stays, so a run's
-- finished_at - started_at counted every retry backoff and outage wait, and for a CSV import the whole review (the
-- run changes kind at finalize and keeps started_at): the estimates' mean run time (queue/estimate.ts) was hours for
-- runs that take seconds. The claim sets claimed_at on every attempt; runs finished before this migration have none,
-- and the estimate falls back to started_at for them. A nullable column without a default: no table rewrite.
ALTER TABLE jobs ADD COLUMN claimed_at timestamptz;

-- Down Migration

ALTER TABLE jobs DROP COLUMN claimed_at;
