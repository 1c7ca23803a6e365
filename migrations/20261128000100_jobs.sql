-- Up Migration

-- One row per run: the queue entry and the run record at once. See docs/ARCHITECTURE.md for the lifecycle.
CREATE TABLE jobs (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  kind             text        NOT NULL CHECK (kind ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
  tenant_id        text,
  payload          jsonb       NOT NULL DEFAULT '{}'::jsonb,
  -- Idempotency key: while a run with this key is active, enqueuing it again returns that run.
  dedupe_key       text,
  state            text        NOT NULL DEFAULT 'queued' CHECK (state IN
                     ('queued', 'running', 'review_ready', 'succeeded', 'partial', 'failed', 'dead', 'canceled')),
  -- Lower runs first.
  priority         integer     NOT NULL DEFAULT 0,
  run_at           timestamptz NOT NULL DEFAULT now(),
  attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  max_attempts     integer     NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
  lease_owner      text,
  lease_expires_at timestamptz,
  heartbeat_at     timestamptz,
  cancel_requested_at timestamptz,
  progress         jsonb,
  result           jsonb,
  last_error       jsonb,
  created_at       timestamptz NOT NULL DEFAULT now(),
  started_at       timestamptz,
  finished_at      timestamptz,
  updated_at       timestamptz NOT NULL DEFAULT now(),
  -- A lease exists exactly while the job runs; fencing relies on it.
  CONSTRAINT jobs_lease_only_while_running CHECK ((state = 'running') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- The claim: due queued jobs in priority order. Partial, so it only ever holds the queued backlog.
CREATE INDEX jobs_claim_order ON jobs (priority, run_at, id) WHERE state = 'queued';
-- The rescue: running jobs by lease expiry.
CREATE INDEX jobs_lease_expiry ON jobs (lease_expires_at) WHERE state = 'running';
-- Idempotency: one active run per key.
CREATE UNIQUE INDEX jobs_active_dedupe_key ON jobs (dedupe_key)
  WHERE dedupe_key IS NOT NULL AND state IN ('queued', 'running', 'review_ready');
-- Retention and operator listings of finished runs.
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
-- A queue table churns: every run is inserted and updated two or three times. Vacuum and analyze it far more
-- often than the defaults (20% / 10% of the table) so dead index entries and stale statistics never pile up.
ALTER TABLE jobs SET (
  autovacuum_vacuum_scale_factor = 0.02,
  autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_insert_scale_factor = 0.05,
  fillfactor = 90
);

-- No other index on purpose: every state change rewrites the row into every index (a partial index on state rules
-- out HOT updates), so each extra index slows the claim and the completion. Listings and gauges scan a table that
-- the retention service keeps small.

-- Down Migration

DROP TABLE jobs;
