-- Up Migration

-- A notification that SNS keeps refusing is parked (worker/notifications/outbox-publisher.ts): set aside after a
-- bounded number of tries instead of being tried for ever. parked_at says when; the publisher also moves its
-- next_attempt_at to 'infinity', so the claim's range on job_notifications_due (next_attempt_at <= now()) never
-- reaches it. It stays unsent, so the due index (sent_at IS NULL) still finds it for operators: `WHERE sent_at IS NULL
-- AND parked_at IS NOT NULL`. Setting next_attempt_at = now() gives it one more try (docs/RUNBOOK.md). Nullable and
-- without a default, adding the column only changes the catalog: instant, whatever the table holds.
ALTER TABLE job_notifications ADD COLUMN parked_at timestamptz;

-- Down Migration

-- Earlier images know no parking: parked notifications are due again, and tried as before.
UPDATE job_notifications SET next_attempt_at = now() WHERE parked_at IS NOT NULL AND sent_at IS NULL;
ALTER TABLE job_notifications DROP COLUMN parked_at;
