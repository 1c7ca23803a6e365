-- Up Migration

-- A listing of runs in states other than queued and running (`GET /v1/jobs?state=succeeded`, the admin page's
-- filters), newest first, merges the newest matching runs of both partitions. The archive's pkey serves it. In
-- jobs_live the only index in id order was the pkey, so the plan walked it backwards through every queued run to find
-- the few finished ones: with a campaign's 200,000 runs queued a page cost 28.6 ms of Postgres time (0.18 ms with this
-- index), and review_ready runs 39 ms. The index holds the runs a worker does not hold or wait on: those parked for
-- review and those finished in the last minute, before the archiver moves them. Running runs are left out, so a claim
-- adds no entry to it; a listing of running runs alone reads jobs_live_lease_expiry and sorts the few there are. A set
-- of states mixing running with others still reads the pkey.
--
-- On jobs_live alone: the archive's pkey is already this index there. Built under a lock that holds writes to
-- jobs_live until it is done: a scan of jobs_live, small in steady state (docs/DEPLOYMENT.md §4.1 for a database just
-- converted by 20261206063000, whose history is still in it).
CREATE INDEX jobs_live_not_waiting ON jobs_live (id) WHERE state NOT IN ('queued', 'running');

-- Down Migration

DROP INDEX jobs_live_not_waiting;
