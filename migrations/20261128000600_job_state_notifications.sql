-- Up Migration

-- Every state transition of a job is published on the channel bulk_import_job_state, so a backend can show users
-- live progress and outcomes without polling. Statement-level triggers with transition tables: one trigger call
-- per statement (a claim of 500 jobs costs one call, not 500). Transitions that share kind, tenant, old and new
-- state and progress summary are grouped (a claim of 500 no-op jobs is a few groups of ids, not 500 objects), and
-- groups are packed into as few notifications as fit under NOTIFY's 8000-byte payload limit. Payload: a JSON array
--   [{"kind": "mass-import", "tenant": "acme", "from": "queued", "to": "running",
--     "progress": {"done": 10, "total": 1607, "phase": "import"}, "ids": [42, 43], "attempts": [1, 1]}]
-- ("from" is null for new jobs; "ids" and "attempts" are parallel arrays). Delivered at commit, in commit order;
-- see docs/ARCHITECTURE.md "State notifications".
CREATE FUNCTION bulk_import_progress_summary(progress jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN progress IS NULL THEN NULL ELSE jsonb_strip_nulls(jsonb_build_object(
    'done', CASE WHEN jsonb_typeof(progress -> 'done') = 'number' THEN progress -> 'done' END,
    'total', CASE WHEN jsonb_typeof(progress -> 'total') = 'number' THEN progress -> 'total' END,
    'phase', left(progress ->> 'phase', 40))) END
$$;

-- Sizes: a group holds at most 150 ids (≤ 20 characters each) and a header of at most ~1.1 kB (tenant ≤ 200
-- characters), so ≤ 4.7 kB; packing by cumulative size in buckets of 3200 bytes keeps every payload under 7.9 kB.
CREATE FUNCTION bulk_import_publish_transitions(
  ids bigint[], kinds text[], tenants text[], old_states text[], new_states text[], attempts integer[], progress jsonb[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  message text;
BEGIN
  FOR message IN
    WITH changed AS (
      SELECT * FROM unnest(ids, kinds, tenants, old_states, new_states, attempts, progress)
        AS c(id, kind, tenant, old_state, new_state, attempt, summary)
    ), parts AS (
      SELECT *, (row_number() OVER (PARTITION BY kind, tenant, old_state, new_state, summary ORDER BY id) - 1) / 150 AS part
      FROM changed
    ), groups AS (
      SELECT min(id) AS first_id,
             json_build_object('kind', kind, 'tenant', left(tenant, 200), 'from', old_state, 'to', new_state,
                               'progress', summary, 'ids', json_agg(id ORDER BY id),
                               'attempts', json_agg(attempt ORDER BY id))::text AS entry
      FROM parts GROUP BY kind, tenant, old_state, new_state, summary, part
    ), sized AS (
      SELECT first_id, entry, sum(octet_length(entry) + 1) OVER (ORDER BY first_id ROWS UNBOUNDED PRECEDING) AS upto
      FROM groups
    )
    SELECT '[' || string_agg(entry, ',' ORDER BY first_id) || ']' FROM sized GROUP BY upto / 3200
  LOOP
    PERFORM pg_notify('bulk_import_job_state', message);
  END LOOP;
END;
$$;

-- A session (or database) that sets bulk_import.state_notifications = off publishes nothing: deployments with no
-- listener save the trigger's cost (JOB_STATE_NOTIFICATIONS=off on the workers).
CREATE FUNCTION bulk_import_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('bulk_import.state_notifications', true) = 'off' THEN
    RETURN NULL;
  END IF;
  PERFORM bulk_import_publish_transitions(array_agg(n.id), array_agg(n.kind), array_agg(n.tenant_id),
    array_agg(NULL::text), array_agg(n.state), array_agg(n.attempts), array_agg(bulk_import_progress_summary(n.progress)))
  FROM inserted_jobs n HAVING count(*) > 0;
  RETURN NULL;
END;
$$;

CREATE FUNCTION bulk_import_jobs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('bulk_import.state_notifications', true) = 'off' THEN
    RETURN NULL;
  END IF;
  -- Heartbeats and progress writes update jobs too; only rows whose state changed are transitions.
  PERFORM bulk_import_publish_transitions(array_agg(n.id), array_agg(n.kind), array_agg(n.tenant_id),
    array_agg(o.state), array_agg(n.state), array_agg(n.attempts), array_agg(bulk_import_progress_summary(n.progress)))
  FROM updated_jobs n JOIN previous_jobs o ON o.id = n.id
  WHERE o.state IS DISTINCT FROM n.state HAVING count(*) > 0;
  RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_publish_inserts AFTER INSERT ON jobs
  REFERENCING NEW TABLE AS inserted_jobs FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_inserted();
CREATE TRIGGER jobs_publish_transitions AFTER UPDATE ON jobs
  REFERENCING OLD TABLE AS previous_jobs NEW TABLE AS updated_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_updated();

-- Down Migration

DROP TRIGGER jobs_publish_transitions ON jobs;
DROP TRIGGER jobs_publish_inserts ON jobs;
DROP FUNCTION bulk_import_jobs_updated();
DROP FUNCTION bulk_import_jobs_inserted();
DROP FUNCTION bulk_import_publish_transitions(bigint[], text[], text[], text[], text[], integer[], jsonb[]);
DROP FUNCTION bulk_import_progress_summary(jsonb);
