-- Up Migration

-- The W3C trace context (`traceparent`) of whoever enqueued the run (an API request, the CLI, a backend calling
-- worker/api.ts in its own trace), written by enqueue when tracing is on: the worker's spans of every attempt join
-- that trace (docs/ARCHITECTURE.md, "Tracing"). NULL when the submitter was not traced. Version 00 is 55 characters;
-- the bound leaves room for later versions and keeps a forged value from bloating the row.
ALTER TABLE jobs ADD COLUMN traceparent text CHECK (char_length(traceparent) <= 256);

-- Down Migration

ALTER TABLE jobs DROP COLUMN traceparent;
