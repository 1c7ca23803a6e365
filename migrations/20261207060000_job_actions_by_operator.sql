-- Up Migration

-- Whether an action in a run's history was taken by an operator (the CLI, an operator key or session) rather than by
-- the run's tenant. A tenant reading its run sees an operator's actions as "operator", not the person's CLI account or
-- key name (views.ts). Earlier actions: the name of a key of the run's own tenant marks the tenant's own; everything
-- else was an operator's (or is read as one: a purged run, a key name shared with another tenant's).
-- Nullable, so a process of the previous release that records an action during the deploy is not refused; a null
-- reads as an operator's (the safe side: a tenant may see its own action as "operator", never an operator's name).
ALTER TABLE job_actions ADD COLUMN by_operator boolean;
UPDATE job_actions a SET by_operator = NOT EXISTS (
  SELECT 1 FROM api_keys k JOIN jobs j ON j.tenant_id = k.tenant_id WHERE k.name = a.actor AND j.id = a.job_id
);

-- Down Migration

ALTER TABLE job_actions DROP COLUMN by_operator;
