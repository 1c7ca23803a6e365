-- Up Migration

-- The update triggers of jobs (state notifications, the notification outbox) join the statement's old and new rows
-- (transition tables) on id. PL/pgSQL plans that join once per session and keeps the plan, sized for the row counts
-- of the first statement that fired it: after a one-row update (a heartbeat, an operator's cancel) the session joined
-- every later statement's rows by a nested loop over both tables, quadratic in the statement's rows. Measured: a
-- 5,000-row update spent 5.3 s in the trigger after a one-row update in the same session, 62 ms without it; a claim
-- or a completion batch of 500 runs pays about a hundredth of that on every pooled connection. Without nested loops
-- the planner hashes the join whatever it expects, which costs a one-row update nothing measurable.
ALTER FUNCTION bulk_import_jobs_updated() SET enable_nestloop = off;
ALTER FUNCTION bulk_import_jobs_outbox() SET enable_nestloop = off;

-- Down Migration

ALTER FUNCTION bulk_import_jobs_outbox() RESET enable_nestloop;
ALTER FUNCTION bulk_import_jobs_updated() RESET enable_nestloop;
