-- Up Migration

-- bulk_import_progress_summary was declared IMMUTABLE, but jsonb_build_object is only STABLE, and Postgres never
-- inlines an IMMUTABLE SQL function whose body is not: the state-notification trigger paid a full SQL-function call
-- per transition (about a quarter of a no-op job's database time in bench:queue's black box). STABLE is its true
-- volatility, and lets the planner inline the body into the trigger's query.
ALTER FUNCTION bulk_import_progress_summary(jsonb) STABLE;

-- Down Migration

ALTER FUNCTION bulk_import_progress_summary(jsonb) IMMUTABLE;
