-- Up Migration

-- Whether an action in a run's history was taken by an operator (the CLI, an operator key or session) rather than by
-- the run's tenant. A tenant reading its run sees an operator's actions as "operator", not the person's CLI account or
-- key name (views.ts). Earlier actions: a tenant key's name marks the tenant's own; everything else was an operator.
-- Nullable, so a process of the previous release that records an action during the deploy is not refused; a null
-- reads as an operator's (the safe side: a tenant may see its own action as "operator", never an operator's name).
ALTER TABLE job_actions ADD COLUMN by_operator boolean;
UPDATE job_actions a SET by_operator = NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.name = a.actor AND k.tenant_id IS NOT NULL);

-- Down Migration

ALTER TABLE job_actions DROP COLUMN by_operator;
