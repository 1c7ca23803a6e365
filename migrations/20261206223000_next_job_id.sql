-- Up Migration

-- The number of a run that enqueue inserts into jobs_live. Runs are numbered by the identity of the partitioned `jobs`
-- (20261206063000); enqueue inserts into the partition, where the dedupe keys' unique indexes are (for ON CONFLICT).
-- From Postgres 17 a partition shares its parent's identity; before, jobs_live.id has no default, so enqueue names the
-- id itself. Not with nextval on the sequence: an identity needs no privilege on its sequence, nextval does, and a
-- worker role granted only its tables (docs/DEPLOYMENT.md) would then be refused every submit. This function runs as
-- its owner (the owner of jobs and of the sequence); functions are executable by everyone unless revoked.
DO $$ BEGIN
  EXECUTE format($sql$
    CREATE FUNCTION bulk_import_next_job_id() RETURNS bigint LANGUAGE sql VOLATILE SECURITY DEFINER
      SET search_path = pg_catalog, pg_temp
      AS $body$ SELECT nextval(%L::regclass) $body$
  $sql$, pg_get_serial_sequence('jobs', 'id'));
END $$;
COMMENT ON FUNCTION bulk_import_next_job_id() IS 'The next run id from the identity of jobs, for inserts into jobs_live (enqueue)';

-- Down Migration

DROP FUNCTION bulk_import_next_job_id();
