-- Up Migration

-- The outbox of terminal-outcome notifications (SNS, worker/notifications/). A row is written by a trigger in the
-- same transaction as the state change it reports, whichever statement made it (worker, rescuer, operator action, a
-- backend through worker/api.ts), so a committed transition always has its row and a rolled-back one never does.
-- Workers publish the rows and mark them sent (claimed with FOR UPDATE SKIP LOCKED inside the publishing
-- transaction: a worker that dies mid-publish releases its rows at once). No foreign key: a notification outlives
-- the retention of its run until it is sent.
CREATE TABLE job_notifications (
  id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id           bigint      NOT NULL,
  kind             text        NOT NULL,
  tenant_id        text,
  from_state       text        NOT NULL,
  state            text        NOT NULL,
  attempt          integer     NOT NULL,
  -- last_error.code for runs that end failed or dead.
  error_code       text,
  finished_at      timestamptz,
  created_at       timestamptz NOT NULL DEFAULT now(),
  -- Publication: tries so far, when the next try is due (backoff), why the last one failed, when it went out.
  publish_attempts integer     NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  last_error       text,
  sent_at          timestamptz,
  message_id       text
);
CREATE INDEX job_notifications_due ON job_notifications (next_attempt_at, id) WHERE sent_at IS NULL;
CREATE INDEX job_notifications_sent ON job_notifications (sent_at) WHERE sent_at IS NOT NULL;

-- Which terminal states get a row: written by every worker at start-up from NOTIFICATIONS_TOPIC_ARN and
-- NOTIFY_STATES (empty without a topic, so nothing piles up that no one publishes). One row.
CREATE TABLE job_notification_settings (
  only_row   boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
  states     text[]      NOT NULL DEFAULT '{}' CHECK (states <@ ARRAY['succeeded', 'partial', 'failed', 'dead', 'canceled']),
  updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO job_notification_settings DEFAULT VALUES;

-- Statement-level, like the state notifications: one call per statement. Heartbeats and progress writes (no state
-- change) and deployments without notifications cost a lookup of the one settings row.
CREATE FUNCTION bulk_import_jobs_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  wanted text[];
BEGIN
  SELECT states INTO wanted FROM job_notification_settings;
  IF wanted IS NULL OR cardinality(wanted) = 0 THEN
    RETURN NULL;
  END IF;
  INSERT INTO job_notifications (job_id, kind, tenant_id, from_state, state, attempt, error_code, finished_at)
  SELECT n.id, n.kind, n.tenant_id, o.state, n.state, n.attempts,
         CASE WHEN n.state IN ('failed', 'dead') THEN left(n.last_error ->> 'code', 200) END, n.finished_at
  FROM updated_jobs n JOIN previous_jobs o ON o.id = n.id
  WHERE n.state IS DISTINCT FROM o.state AND n.state = ANY (wanted)
  ORDER BY n.id;
  RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notification_outbox AFTER UPDATE ON jobs
  REFERENCING OLD TABLE AS previous_jobs NEW TABLE AS updated_jobs
  FOR EACH STATEMENT EXECUTE FUNCTION bulk_import_jobs_outbox();

-- Down Migration

DROP TRIGGER jobs_notification_outbox ON jobs;
DROP FUNCTION bulk_import_jobs_outbox();
DROP TABLE job_notification_settings;
DROP TABLE job_notifications;
