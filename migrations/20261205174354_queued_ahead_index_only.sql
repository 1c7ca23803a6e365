-- Up Migration

-- The runs ahead of a queued run (worker/queue/estimate.ts, AHEAD_STATEMENT) are counted on every detail of a queued
-- run (`GET /v1/jobs/{id}`, `show`, `watch`, the admin page) and on every submit. The count reads this index's
-- entries of the run's kind (tenant_id, the second key column, keeps the (priority, fair_tag) bound from narrowing
-- it further), and had to visit each entry's row for `id` (the tie-break of the claim order): one heap page per
-- queued run of the kind in bench:api, 17 ms for 10,000, the slowest 1 % of its detail requests. With `id` in the
-- INCLUDE list the count can be an index-only scan (4.7 ms for the same 10,000). The index is partial (the backlog
-- only), so rebuilding it is quick.
DROP INDEX jobs_queued_by_kind_tenant;
CREATE INDEX jobs_queued_by_kind_tenant ON jobs (kind, tenant_id, priority, fair_tag) INCLUDE (run_at, size_bytes, id)
  WHERE state = 'queued';

-- Down Migration

DROP INDEX jobs_queued_by_kind_tenant;
CREATE INDEX jobs_queued_by_kind_tenant ON jobs (kind, tenant_id, priority, fair_tag) INCLUDE (run_at, size_bytes)
  WHERE state = 'queued';
