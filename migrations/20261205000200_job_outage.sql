-- Up Migration

-- A dependency outage (S3 or the database unavailable) is not a run's fault: while it lasts, the run goes back to the
-- queue with a backoff that grows with the outage, without spending an attempt, until the outage has lasted longer
-- than DEPENDENCY_OUTAGE_BUDGET_MS; then it ends `dead` with DEPENDENCY_OUTAGE. These columns say which dependency the
-- run waits for and since when (the first failure of this outage). Set by a failure classified as an outage, cleared
-- by any other outcome (success, another kind of failure, requeue, replay). See docs/ARCHITECTURE.md "Finishing,
-- retries and the dead-letter state". No index: read per run (`show`), and written only on failures.
ALTER TABLE jobs
  ADD COLUMN outage_started_at timestamptz,
  ADD COLUMN outage_dependency text,
  ADD CONSTRAINT jobs_outage_dependency CHECK (
    (outage_dependency IS NULL) = (outage_started_at IS NULL) AND (outage_dependency IS NULL OR outage_dependency IN ('s3', 'database'))
  );

-- Down Migration

ALTER TABLE jobs
  DROP CONSTRAINT jobs_outage_dependency,
  DROP COLUMN outage_dependency,
  DROP COLUMN outage_started_at;
