-- Up Migration

-- The count of the runs ahead of a queued run (worker/queue/estimate.ts, AHEAD_STATEMENT) gets an index whose order
-- is the claim order within a kind, so that "ahead of this run" is one range of it and the count an index-only scan
-- of exactly the runs ahead. On jobs_queued_by_kind_tenant (with `id` included, 20261205174354) tenant_id sits between
-- the kind and the claim order: the scan read every queued run of the kind, and because the planner estimates a row
-- comparison badly (159 runs ahead expected, 2,000 found) it often chose a bitmap scan reading every run's row
-- instead: 24 ms against 3.5 ms for 10,000 ahead, the p99 of bench:api's run-record reads (25 ms or 50-60 ms from
-- one run to the next, by the plan ANALYZE's sample led to). The cost is one more entry per enqueued run; the index
-- is partial, so it holds the backlog only. jobs_queued_by_kind_tenant goes back to what admission and fair share
-- need.
CREATE INDEX jobs_queued_ahead ON jobs (kind, priority, fair_tag, run_at, id) WHERE state = 'queued';
DROP INDEX jobs_queued_by_kind_tenant;
CREATE INDEX jobs_queued_by_kind_tenant ON jobs (kind, tenant_id, priority, fair_tag) INCLUDE (run_at, size_bytes)
  WHERE state = 'queued';

-- Down Migration

DROP INDEX jobs_queued_by_kind_tenant;
CREATE INDEX jobs_queued_by_kind_tenant ON jobs (kind, tenant_id, priority, fair_tag) INCLUDE (run_at, size_bytes, id)
  WHERE state = 'queued';
DROP INDEX jobs_queued_ahead;
