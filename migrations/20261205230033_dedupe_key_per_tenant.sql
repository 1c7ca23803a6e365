-- Up Migration

-- A dedupe key was unique among all active runs, whoever they belonged to: a submit for tenant B that reused tenant
-- A's key (the kinds' default keys are easy to guess: `csv-import:<tenant>:<profile>:<bucket>/<key>`) got A's run
-- back as its own, payload and result included, and a key B took first made A's real submits return B's run. The key
-- is now unique per tenant: one partial index for runs with a tenant and one for runs without (a NULL tenant is a
-- scope of its own; NULLS NOT DISTINCT would do it in one index but needs PostgreSQL 15). `worker/queue/enqueue.ts`
-- spells both predicates so that ON CONFLICT infers the right one. Kind is not part of the scope on purpose: a CSV
-- import changes kind when it is finalized (csv-import → csv-finalize) and must still hold its key meanwhile.
CREATE UNIQUE INDEX jobs_active_dedupe_key_tenant ON jobs (dedupe_key, tenant_id)
  WHERE dedupe_key IS NOT NULL AND tenant_id IS NOT NULL AND state IN ('queued', 'running', 'review_ready');
CREATE UNIQUE INDEX jobs_active_dedupe_key_no_tenant ON jobs (dedupe_key)
  WHERE dedupe_key IS NOT NULL AND tenant_id IS NULL AND state IN ('queued', 'running', 'review_ready');
DROP INDEX jobs_active_dedupe_key;

-- Down Migration

-- Fails while two tenants' active runs hold the same key: finish or cancel one of them first.
CREATE UNIQUE INDEX jobs_active_dedupe_key ON jobs (dedupe_key)
  WHERE dedupe_key IS NOT NULL AND state IN ('queued', 'running', 'review_ready');
DROP INDEX jobs_active_dedupe_key_no_tenant;
DROP INDEX jobs_active_dedupe_key_tenant;
