-- Up Migration

-- The queue and the history apart. `jobs` becomes a table partitioned on a new column, `archived`:
--   jobs_live     (archived = false) every run that is queued, running or in review, and finished runs until the
--                 archiver moves them (queue/maintenance.ts, archiveFinishedRuns: finished over a minute ago);
--   jobs_archive  (archived = true)  the history, until retention deletes it.
-- Why: with one table, a history of millions of finished runs slowed the queue. New runs were inserted into free
-- space spread over the history's pages (cold, out of the buffer cache), so claims read them from disk
-- (bench:queue-history measured 0.56x throughput and 5.6x claim p99 at 10,000,000 finished runs). In its own small
-- partition the live queue reuses its own hot pages. Every statement still reads and writes `jobs`; only the archiver
-- and a requeue of an archived run move rows, and neither touches a run a worker holds, so no hot-path statement ever
-- meets a row moving between partitions (that makes Postgres raise 40001 to a statement waiting on the row; operator
-- actions, retention and the archiver retry on it, worker/db/row-moved.ts).
--
-- What the layout changes:
--  * Unique indexes of a partitioned table must include its partition key, so the dedupe-key indexes stay on
--    jobs_live (where every active run is) and enqueue inserts into jobs_live. The ids stay unique: one identity.
--  * Foreign keys cannot reference a partitioned table's id. The six that referenced jobs(id) are replaced by the
--    registry job_child_tables and statement triggers that delete (or unlink) the child rows of deleted or truncated
--    runs; retention reads the same registry to delete them in chunks first. A table that points at runs must be
--    registered there (docs/ARCHITECTURE.md; test/migrations.test.ts checks every job_id column). What the keys also
--    did and nothing does now: refuse a child row for a run that does not exist.
--  * The conversion renames the table and attaches it as jobs_live: no copy, but the attach reads the whole table
--    once while this migration holds its lock (0.6 s per million runs here, warm cache). docs/DEPLOYMENT.md §4.1.

CREATE TABLE job_child_tables (
  table_name  text NOT NULL,
  column_name text NOT NULL,
  on_delete   text NOT NULL CHECK (on_delete IN ('cascade', 'set-null')),
  PRIMARY KEY (table_name, column_name)
);
COMMENT ON TABLE job_child_tables IS 'Tables whose rows point at a run (jobs.id): what happens to them when the run is deleted';
INSERT INTO job_child_tables (table_name, column_name, on_delete)
  SELECT c.conrelid::regclass::text, a.attname, CASE c.confdeltype WHEN 'c' THEN 'cascade' ELSE 'set-null' END
  FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
  WHERE c.contype = 'f' AND c.confrelid = 'jobs'::regclass;
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT conrelid::regclass AS child, conname FROM pg_constraint WHERE contype = 'f' AND confrelid = 'jobs'::regclass LOOP
    EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.child, r.conname);
  END LOOP;
END $$;

-- A constant default: no rewrite.
ALTER TABLE jobs ADD COLUMN archived boolean NOT NULL DEFAULT false;
ALTER TABLE jobs RENAME TO jobs_live;
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'jobs_live' LOOP
    EXECUTE format('ALTER INDEX %I RENAME TO %I', r.indexname, 'jobs_live_' || substr(r.indexname, 6));
  END LOOP;
END $$;
CREATE TABLE jobs (LIKE jobs_live INCLUDING DEFAULTS INCLUDING CONSTRAINTS) PARTITION BY LIST (archived);
-- A partition cannot have an identity of its own: the partitioned table takes it over, numbering on where it was.
DO $$ DECLARE next_id bigint; BEGIN
  SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_id FROM jobs_id_seq;
  ALTER TABLE jobs_live ALTER COLUMN id DROP IDENTITY;
  EXECUTE format('ALTER TABLE jobs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (START WITH %s)', next_id);
END $$;
ALTER TABLE jobs ATTACH PARTITION jobs_live FOR VALUES IN (false);
CREATE TABLE jobs_archive PARTITION OF jobs FOR VALUES IN (true);
ALTER TABLE jobs_archive ADD CONSTRAINT jobs_archive_pkey PRIMARY KEY (id);
-- Only finished runs are archived; a run that becomes active again must move back (a requeue sets archived = false),
-- where the dedupe keys are checked. A statement that forgets fails here instead of hiding an active run.
ALTER TABLE jobs_archive ADD CONSTRAINT jobs_archive_finished_runs_only
  CHECK (state IN ('succeeded', 'partial', 'failed', 'dead', 'canceled'));
-- A history is appended to and deleted from in batches, never updated in place: packed pages.
ALTER TABLE jobs_archive SET (fillfactor = 100, autovacuum_vacuum_insert_scale_factor = 0.05);

-- The indexes, on the partitioned table under their old names, made from jobs_live's own definitions: Postgres adopts
-- jobs_live's identical index (no build) and builds jobs_archive's (empty: most are partial over active states).
-- Not the unique ones: the primary key is per partition, the dedupe keys are jobs_live's (above).
DO $$ DECLARE r record; BEGIN
  FOR r IN SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition
           FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
           WHERE x.indrelid = 'jobs_live'::regclass AND NOT x.indisunique ORDER BY i.relname LOOP
    EXECUTE regexp_replace(r.definition, '^CREATE INDEX \S+ ON (\S+\.)?jobs_live ',
                           format('CREATE INDEX %I ON jobs ', 'jobs_' || substr(r.name, 11)));
  END LOOP;
END $$;
DO $$ DECLARE r record; BEGIN
  -- Postgres names the archive's copies after their columns; name them after the parent's, as jobs_live's are.
  FOR r IN SELECT child.relname AS child, parent.relname AS parent
           FROM pg_inherits i JOIN pg_class child ON child.oid = i.inhrelid JOIN pg_class parent ON parent.oid = i.inhparent
           JOIN pg_index x ON x.indexrelid = child.oid
           WHERE x.indrelid = 'jobs_archive'::regclass AND parent.relname LIKE 'jobs\_%' LOOP
    EXECUTE format('ALTER INDEX %I RENAME TO %I', r.child, 'jobs_archive_' || substr(r.parent, 6));
  END LOOP;
END $$;

-- The statement triggers of the table stay on jobs_live, for enqueue's inserts into it; statements on jobs fire the
-- partitioned table's own (a statement fires the statement triggers of the table it names only).
CREATE TRIGGER jobs_publish_inserts AFTER INSERT ON jobs
  REFERENCING NEW TABLE AS inserted_jobs FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_inserted();
CREATE TRIGGER jobs_publish_transitions AFTER UPDATE ON jobs
  REFERENCING OLD TABLE AS previous_jobs NEW TABLE AS updated_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_updated();
CREATE TRIGGER jobs_notification_outbox AFTER UPDATE ON jobs
  REFERENCING OLD TABLE AS previous_jobs NEW TABLE AS updated_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_outbox();

-- What the foreign keys did on a run's delete, for every delete statement on jobs or on either partition (purge,
-- retention's last step). The archiver's move between partitions is an UPDATE: it fires no delete trigger, and the
-- child rows stay. A TRUNCATE of jobs (tests and benches reset with it) takes every run's rows with it.
CREATE FUNCTION bulk_import_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  child record;
  condition text;
BEGIN
  FOR child IN SELECT table_name, column_name, on_delete FROM job_child_tables ORDER BY table_name, column_name LOOP
    condition := CASE WHEN TG_OP = 'TRUNCATE' THEN format('%I IS NOT NULL', child.column_name)
                      ELSE format('%I IN (SELECT id FROM deleted_jobs)', child.column_name) END;
    IF child.on_delete = 'cascade' THEN
      EXECUTE format('DELETE FROM %s WHERE %s', child.table_name, condition);
    ELSE
      EXECUTE format('UPDATE %s SET %I = NULL WHERE %s', child.table_name, child.column_name, condition);
    END IF;
  END LOOP;
  RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_delete_children AFTER DELETE ON jobs
  REFERENCING OLD TABLE AS deleted_jobs FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_deleted();
CREATE TRIGGER jobs_delete_children AFTER DELETE ON jobs_live
  REFERENCING OLD TABLE AS deleted_jobs FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_deleted();
CREATE TRIGGER jobs_delete_children AFTER DELETE ON jobs_archive
  REFERENCING OLD TABLE AS deleted_jobs FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_deleted();
CREATE TRIGGER jobs_truncate_children AFTER TRUNCATE ON jobs FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_deleted();

-- Autovacuum analyzes the partitions, never a partitioned table: statistics for plans that join on jobs as a whole.
ANALYZE jobs;

-- Down Migration

-- The history goes back into the one table (a copy: slow for a large history), and the foreign keys come back. The
-- copy is no news: no state notification for it (jobs_live's insert trigger would announce every run as new).
SELECT set_config('bulk_import.state_notifications', 'off', true);
DROP TRIGGER jobs_truncate_children ON jobs;
DROP TRIGGER jobs_delete_children ON jobs;
DROP TRIGGER jobs_delete_children ON jobs_live;
DROP TRIGGER jobs_delete_children ON jobs_archive;
DROP FUNCTION bulk_import_jobs_deleted();
CREATE TEMP TABLE jobs_next_id AS SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END AS next_id FROM jobs_id_seq;
ALTER TABLE jobs DETACH PARTITION jobs_live;
ALTER TABLE jobs DETACH PARTITION jobs_archive;
DROP TABLE jobs;
INSERT INTO jobs_live SELECT * FROM jobs_archive;
DROP TABLE jobs_archive;
ALTER TABLE jobs_live RENAME TO jobs;
DO $$ DECLARE r record; next_id bigint; BEGIN
  FOR r IN SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'jobs' AND indexname LIKE 'jobs\_live\_%' LOOP
    EXECUTE format('ALTER INDEX %I RENAME TO %I', r.indexname, 'jobs_' || substr(r.indexname, 11));
  END LOOP;
  SELECT jobs_next_id.next_id INTO next_id FROM jobs_next_id;
  EXECUTE format('ALTER TABLE jobs ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (START WITH %s)', next_id);
  FOR r IN SELECT table_name, column_name, on_delete FROM job_child_tables LOOP
    -- Rows of runs that are gone (nothing refused them while there was no key) would fail the key's check.
    IF r.on_delete = 'cascade' THEN
      EXECUTE format('DELETE FROM %s c WHERE NOT EXISTS (SELECT FROM jobs WHERE jobs.id = c.%I)', r.table_name, r.column_name);
    ELSE
      EXECUTE format('UPDATE %s c SET %2$I = NULL WHERE %2$I IS NOT NULL AND NOT EXISTS (SELECT FROM jobs WHERE jobs.id = c.%2$I)',
                     r.table_name, r.column_name);
    END IF;
    EXECUTE format('ALTER TABLE %s ADD FOREIGN KEY (%I) REFERENCES jobs (id) ON DELETE %s', r.table_name, r.column_name,
                   CASE r.on_delete WHEN 'cascade' THEN 'CASCADE' ELSE 'SET NULL' END);
  END LOOP;
END $$;
DROP TABLE jobs_next_id;
ALTER TABLE jobs DROP COLUMN archived;
DROP TABLE job_child_tables;
