-- Up Migration

-- Keys of the HTTP API (`bulk-import serve`). Only a SHA-256 of the key is stored: a key is 32 random bytes, so a
-- fast hash is as safe as a slow one and lets every request find its key through the unique index. `key_prefix` is
-- the key's first characters, public, so an operator can tell keys apart in `bulk-import api-keys list`.
CREATE TABLE api_keys (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  name        text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  role        text        NOT NULL CHECK (role IN ('tenant', 'operator')),
  -- A tenant key sees and acts on this tenant's runs only; an operator key on all.
  tenant_id   text,
  key_prefix  text        NOT NULL,
  key_hash    bytea       NOT NULL UNIQUE,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz,
  CONSTRAINT api_keys_tenant_of_role CHECK ((role = 'tenant') = (tenant_id IS NOT NULL))
);
-- One active key per name: the name is the actor of every action taken with the key.
CREATE UNIQUE INDEX api_keys_active_name ON api_keys (name) WHERE revoked_at IS NULL;

-- What operators and API callers did to runs (submitted, finalized, rejected, canceled, requeued, replayed, resolved,
-- purged), with who did it and why. No foreign key on purpose: the history outlives its run (a purged run keeps the
-- record of who purged it).
CREATE TABLE job_actions (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id      bigint      NOT NULL,
  action      text        NOT NULL CHECK (action IN
                ('submitted', 'finalized', 'rejected', 'canceled', 'requeued', 'replayed', 'resolved', 'purged')),
  actor       text        NOT NULL,
  note        text,
  -- The run's state right after the action (null for a purge).
  state_after text,
  at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_actions_job ON job_actions (job_id, id);

-- Resolve: an operator marks a failed, dead or partial run as handled. The run keeps its state (history stays
-- true), leaves the dead-jobs gauge and the dead list, and the note says who, when and why.
ALTER TABLE jobs
  ADD COLUMN resolved_at timestamptz,
  ADD COLUMN resolved_by text,
  ADD COLUMN resolution_note text;

-- Tenant listings of the API (a tenant key always filters by its tenant), newest first, keyset-paged by id. Both
-- columns never change after the insert, so the index does not stop HOT updates of the queue's state changes.
CREATE INDEX jobs_tenant_id ON jobs (tenant_id, id);

-- Down Migration

DROP INDEX jobs_tenant_id;
ALTER TABLE jobs
  DROP COLUMN resolution_note,
  DROP COLUMN resolved_by,
  DROP COLUMN resolved_at;
DROP TABLE job_actions;
DROP TABLE api_keys;
