-- Up Migration

-- Every state transition of a job is published on the channel bulk_import_job_state, so a backend can show users
-- live progress and outcomes without polling. Statement-level triggers with transition tables: one trigger call
-- per statement (a claim of 500 jobs costs one call, not 500), and the transitions of one statement are packed into
-- as few notifications as fit under NOTIFY's 8000-byte payload limit. Payload: a JSON array of
--   {"id": 42, "kind": "mass-import", "tenant": "acme", "from": "queued", "to": "running", "attempt": 1,
--    "progress": {"done": 10, "total": 1607, "phase": "import"}}
-- ("from" is null for a new job). Notifications are delivered at commit, in commit order; see docs/ARCHITECTURE.md.
CREATE FUNCTION bulk_import_publish_transitions(changes jsonb[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  message text;
BEGIN
  FOR message IN
    WITH entries AS (
      SELECT change::text AS entry, ordinality FROM unnest(changes) WITH ORDINALITY AS c(change, ordinality)
    ), sized AS (
      SELECT entry, ordinality,
             sum(octet_length(entry) + 1) OVER (ORDER BY ordinality ROWS UNBOUNDED PRECEDING) AS upto
      FROM entries
    )
    SELECT '[' || string_agg(entry, ',' ORDER BY ordinality) || ']' FROM sized GROUP BY upto / 7000
  LOOP
    PERFORM pg_notify('bulk_import_job_state', message);
  END LOOP;
END;
$$;

CREATE FUNCTION bulk_import_transition(id bigint, kind text, tenant text, old_state text, new_state text,
                                       attempt integer, progress jsonb) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object(
    'id', id, 'kind', kind, 'tenant', left(tenant, 200), 'from', old_state, 'to', new_state, 'attempt', attempt,
    'progress', CASE WHEN progress IS NULL THEN NULL ELSE jsonb_strip_nulls(jsonb_build_object(
      'done', CASE WHEN jsonb_typeof(progress -> 'done') = 'number' THEN progress -> 'done' END,
      'total', CASE WHEN jsonb_typeof(progress -> 'total') = 'number' THEN progress -> 'total' END,
      'phase', left(progress ->> 'phase', 40))) END)
$$;

CREATE FUNCTION bulk_import_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM bulk_import_publish_transitions(ARRAY(
    SELECT bulk_import_transition(n.id, n.kind, n.tenant_id, NULL, n.state, n.attempts, n.progress)
    FROM inserted_jobs n ORDER BY n.id));
  RETURN NULL;
END;
$$;

CREATE FUNCTION bulk_import_jobs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- Heartbeats and progress writes update jobs too; only rows whose state changed are transitions.
  PERFORM bulk_import_publish_transitions(ARRAY(
    SELECT bulk_import_transition(n.id, n.kind, n.tenant_id, o.state, n.state, n.attempts, n.progress)
    FROM updated_jobs n JOIN previous_jobs o ON o.id = n.id
    WHERE o.state IS DISTINCT FROM n.state ORDER BY n.id));
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
DROP FUNCTION bulk_import_transition(bigint, text, text, text, text, integer, jsonb);
DROP FUNCTION bulk_import_publish_transitions(jsonb[]);
