-- Up Migration

-- The runs that need an operator: the listing of one such state, newest first (`GET /v1/jobs?state=failed`, the admin
-- page's filters, `bulk-import list --state dead`). Without it the listing walked the primary key backwards and
-- dropped every run in another state: 863 rows read for a page of 50 failed runs among 1,000,000 (5 % failed), and
-- Postgres's CPU per request was half as much again as a tenant's listing. Partial, so that the queue pays nothing
-- for it: a run enters it only when it ends failed, dead or partial (a transition that writes its row anyway). On `id`
-- alone, in the heap's order: on (state, id) the planner costed every row as a random read (the state column has no
-- correlation with the heap) and kept to the primary key. For one of the three states it skips the other two's rows
-- (68 rows for a page of 50 failed runs, 0.05 ms against 0.18).
CREATE INDEX jobs_needing_attention ON jobs (id) WHERE state IN ('failed', 'dead', 'partial');

-- Down Migration

DROP INDEX jobs_needing_attention;
