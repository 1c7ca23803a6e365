-- Up Migration

-- Every group of a state notification names the transaction that made it: "xid", the top-level transaction id as
-- text (pg_current_xact_id()). Notifications are delivered in commit order, but a reader that also polls the runs
-- (the API's event streams, worker/http/event-hub.ts) cannot otherwise tell whether a poll's rows are older or newer
-- than a notification that crossed it: with the id, a poll that read pg_current_snapshot() knows which transitions it
-- saw (worker/db/snapshot.ts), and neither source can take a run's state backwards. One id per group: ~30 bytes. The
-- packing's margin under NOTIFY's 8000 bytes holds: a payload is at most one group plus 3.2 kB of smaller ones, and
-- the widest group measured (test/queue-state-notifications.test.ts: 150 16-digit ids — the largest a JavaScript
-- number, as the driver reads ids, holds exactly — 10-digit attempts, a 64-character kind, a tenant and a phase of
-- control characters that JSON writes as 6 bytes each) is 4.6 kB.
CREATE OR REPLACE FUNCTION bulk_import_publish_transitions(
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
                               'attempts', json_agg(attempt ORDER BY id), 'xid', pg_current_xact_id()::text)::text AS entry
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

-- Down Migration

CREATE OR REPLACE FUNCTION bulk_import_publish_transitions(
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
