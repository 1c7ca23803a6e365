-- Up Migration

-- Whether an action in a run's history was taken by an operator (the CLI, an operator key or session) rather than by
-- the run's tenant. A tenant reading its run sees an operator's actions as "operator", not the person's CLI account or
-- key name (views.ts). Nullable and without a backfill: adding it is instant, where an UPDATE of every history row
-- would hold this table's lock (and every submit behind it) for as long as the rewrite takes. An action without it —
-- recorded before, or by the previous release during the deploy — is judged when read (job-actions.ts): the name of
-- a key of the run's own tenant marks the tenant's own; anything else reads as an operator's.
ALTER TABLE job_actions ADD COLUMN by_operator boolean;

-- Down Migration

ALTER TABLE job_actions DROP COLUMN by_operator;
