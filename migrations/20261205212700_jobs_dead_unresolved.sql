-- Up Migration

-- The dead runs still waiting for an operator, by kind: the Dead gauge (worker/queue/gauges.ts, once a minute, and
-- `bulk-import gauges`). The gauges read the queued, running and unresolved dead runs; without this index the dead
-- part had no index of its own and the statement read the whole table, history included: a parallel scan of every
-- page once a minute (300 ms for 2,000,000 runs here, and a 10,000,000-run history written by the queue is 4.5 GB).
-- With it, each part of the statement is a partial index of exactly its runs. The queue pays nothing: a run enters it
-- only when it goes dead, and leaves it when it is resolved, replayed or purged.
CREATE INDEX jobs_dead_unresolved ON jobs (kind) WHERE state = 'dead' AND resolved_at IS NULL;

-- Down Migration

DROP INDEX jobs_dead_unresolved;
