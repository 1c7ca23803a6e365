-- Up Migration

-- The runs ahead of a queued run (worker/queue/estimate.ts, AHEAD_STATEMENT) are counted on every detail of a queued
-- run (`GET /v1/jobs/{id}`, `show`, `watch`, the admin page) and on every submit. The count walks this index by kind
-- and (priority, fair_tag), but had to visit each run's row for `id` (the tie-break of the claim order), one heap page
-- per run ahead: 17 ms for 10,000 runs, the slowest 1 % of detail requests in bench:api. With `id` in the INCLUDE
-- list the count is an index-only scan (4.7 ms for the same 10,000). The index is partial (the backlog only), so
-- rebuilding it is quick.
DROP INDEX jobs_queued_by_kind_tenant;
CREATE INDEX jobs_queued_by_kind_tenant ON jobs (kind, tenant_id, priority, fair_tag) INCLUDE (run_at, size_bytes, id)
  WHERE state = 'queued';

-- Down Migration

DROP INDEX jobs_queued_by_kind_tenant;
CREATE INDEX jobs_queued_by_kind_tenant ON jobs (kind, tenant_id, priority, fair_tag) INCLUDE (run_at, size_bytes)
  WHERE state = 'queued';
