-- A prototype layout for `npm run bench:queue-history -- --layout partitioned`, not the shipped schema: jobs becomes a
-- table partitioned by state, the active runs (queued, running, review_ready) in jobs_active and the finished ones in
-- jobs_done. Every statement of the queue reads and writes `jobs` as before; Postgres routes each row, and moves a run
-- from jobs_active to jobs_done when its state changes (the completion's UPDATE becomes a delete and an insert). The
-- question it answers: does a history that never shares pages or free space with the queue keep the queue as fast as
-- an empty table, and what does the move cost?
--
-- What it gives up, and what shipping it would need:
--  * The foreign keys to jobs (id): a partitioned table's unique keys must include the partition key, so (id) alone
--    cannot be referenced. They are dropped here; shipped, children would reference a narrow run-id table, or lose
--    the keys and be deleted by retention explicitly (it deletes them in chunks already).
--  * The dedupe indexes are unique per partition only (on jobs_active, where active runs are), so enqueue's ON
--    CONFLICT would have to insert into jobs_active directly. The bench enqueues without dedupe keys.
--  * A statement that locks a run another transaction has just moved to jobs_done fails with a serialization error
--    (40001) instead of finding no row: claim, heartbeat, cancel and the lease rescue would retry on it.
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT conrelid::regclass AS tbl, conname FROM pg_constraint WHERE confrelid = 'jobs'::regclass LOOP
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
  END LOOP;
END $$;
CREATE TEMP TABLE saved_indexes AS
  SELECT indexname, indexdef FROM pg_indexes
  WHERE schemaname = 'public' AND tablename = 'jobs' AND indexname <> 'jobs_pkey' AND indexdef NOT LIKE 'CREATE UNIQUE%';
CREATE TEMP TABLE saved_unique AS
  SELECT indexname, indexdef FROM pg_indexes
  WHERE schemaname = 'public' AND tablename = 'jobs' AND indexname <> 'jobs_pkey' AND indexdef LIKE 'CREATE UNIQUE%';
CREATE TEMP TABLE saved_triggers AS SELECT pg_get_triggerdef(oid) AS def FROM pg_trigger WHERE tgrelid = 'jobs'::regclass AND NOT tgisinternal;
CREATE TEMP TABLE saved_options AS SELECT reloptions FROM pg_class WHERE oid = 'jobs'::regclass;
ALTER TABLE jobs RENAME TO jobs_flat;
CREATE TABLE jobs (LIKE jobs_flat INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING STORAGE) PARTITION BY LIST (state);
DROP TABLE jobs_flat CASCADE;
CREATE TABLE jobs_active PARTITION OF jobs FOR VALUES IN ('queued', 'running', 'review_ready');
CREATE TABLE jobs_done PARTITION OF jobs FOR VALUES IN ('succeeded', 'partial', 'failed', 'dead', 'canceled');
ALTER TABLE jobs ADD PRIMARY KEY (id, state);
DO $$ DECLARE r record; options text; BEGIN
  -- The definitions were read before the rename: they name public.jobs, now the partitioned table.
  FOR r IN SELECT * FROM saved_indexes LOOP EXECUTE r.indexdef; END LOOP;
  FOR r IN SELECT * FROM saved_unique LOOP EXECUTE replace(r.indexdef, ' ON public.jobs ', ' ON public.jobs_active '); END LOOP;
  FOR r IN SELECT * FROM saved_triggers LOOP EXECUTE r.def; END LOOP;
  SELECT array_to_string(reloptions, ', ') INTO options FROM saved_options;
  IF options IS NOT NULL THEN
    EXECUTE format('ALTER TABLE jobs_active SET (%s)', options);
    EXECUTE format('ALTER TABLE jobs_done SET (%s)', options);
  END IF;
END $$;
DROP TABLE saved_indexes, saved_unique, saved_triggers, saved_options;
