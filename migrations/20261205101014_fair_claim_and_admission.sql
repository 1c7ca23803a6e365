-- Up Migration

-- Fair share between tenants (docs/ARCHITECTURE.md, "Fair share between tenants") and admission control on submit.
--
-- `fair_tag` is a run's place in its priority's virtual timeline, given at enqueue (worker/queue/fair-share.ts,
-- start-time fair queuing): one step of 1000 / weight after the last queued run of the same tenant and kind, but
-- never before the head of the queue. The claim walks (priority, fair_tag, run_at, id), so within a priority tenants
-- take turns while the claim stays one ordered range scan of a partial index with SKIP LOCKED. A run enqueued with
-- fair share off gets 0: with every tag 0 the order is the old (priority, run_at, id). `run_at` is a key column (not
-- INCLUDE) so `run_at <= now()` is checked on the index entry, without visiting the row of a run not yet due.
--
-- `size_bytes` is the work's size as the submitter knew it (a CSV object's size, a mass import's planned bytes); the
-- admission limits on queued bytes add it up.
ALTER TABLE jobs
  ADD COLUMN fair_tag bigint NOT NULL DEFAULT 0,
  ADD COLUMN size_bytes bigint CHECK (size_bytes >= 0);

DROP INDEX jobs_claim_order;
CREATE INDEX jobs_claim_order ON jobs (priority, fair_tag, run_at, id) WHERE state = 'queued';

-- A tenant's queued runs of one kind: the admission counts (runs, bytes, oldest) per kind and per tenant, and the tail
-- of the tenant's timeline for the next fair_tag. Partial: a claimed run leaves it, so it holds only the backlog.
CREATE INDEX jobs_queued_by_kind_tenant ON jobs (kind, tenant_id, priority, fair_tag) INCLUDE (run_at, size_bytes)
  WHERE state = 'queued';

-- Down Migration

DROP INDEX jobs_queued_by_kind_tenant;
DROP INDEX jobs_claim_order;
CREATE INDEX jobs_claim_order ON jobs (priority, run_at, id) WHERE state = 'queued';
ALTER TABLE jobs DROP COLUMN size_bytes, DROP COLUMN fair_tag;
