-- Up Migration

-- The backend's documents: one row per object that an import put in the bucket. A business table: it outlives the
-- jobs that filled it (retention deletes finished jobs; the row keeps its document and loses only the job link).
CREATE TABLE documents (
  id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id     text        NOT NULL,
  -- The file's path relative to the import root when it was imported (exact, not normalised).
  source_path   text        NOT NULL,
  -- Hex SHA-256 of the bytes stored in the object, computed while they were uploaded.
  sha256        text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size_bytes    bigint      NOT NULL CHECK (size_bytes >= 0),
  content_type  text        NOT NULL,
  bucket        text        NOT NULL,
  object_key    text        NOT NULL,
  import_job_id bigint      REFERENCES jobs (id) ON DELETE SET NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  -- The identity of a document is its object: keys are deterministic (prefix/tenant/path), so importing the same
  -- file again finds this row instead of adding a second one. This is what makes a re-run idempotent.
  CONSTRAINT documents_object UNIQUE (bucket, object_key)
);
-- ON DELETE SET NULL from jobs looks rows up by job; without this index every deleted job scans the table.
CREATE INDEX documents_import_job ON documents (import_job_id) WHERE import_job_id IS NOT NULL;

-- The plan of one mass-import run: every entry found under its source, and what became of it. Written once when the
-- run plans (in one transaction), then each item moves from pending to done/skipped/failed in the same transaction
-- that writes its document row. Deleted with the run (retention).
CREATE TABLE import_items (
  job_id        bigint      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  -- Position in the walk (sorted by name at each level): a stable order for paging and resumption.
  item_no       integer     NOT NULL CHECK (item_no >= 0),
  -- Relative to the import root, as found on disk (unicode, spaces and newlines included).
  relative_path text        NOT NULL,
  -- Size seen by the plan; updated to the size actually read when the file is imported.
  size_bytes    bigint      NOT NULL CHECK (size_bytes >= 0),
  state         text        NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'skipped', 'failed')),
  object_key    text,
  sha256        text        CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  -- The document this item produced (done) or found already imported with the same content (skipped). No foreign
  -- key: documents belong to the backend and may be deleted independently of the run's record.
  document_id   bigint,
  error_code    text,
  error_message text,
  -- transient failures (S3 unavailable after retries) go back to pending when the run is retried; permanent ones
  -- (unsafe entry, unreadable, content changed) stay failed.
  error_class   text        CHECK (error_class IN ('transient', 'permanent')),
  -- Tries of this item recorded with its outcome (a try cut short by a crash leaves no trace here).
  tries         integer     NOT NULL DEFAULT 0,
  updated_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (job_id, item_no),
  CONSTRAINT import_items_failed_has_error CHECK ((state = 'failed') = (error_code IS NOT NULL))
);
-- Resumption reads the pending items of a run in order; the partial index holds only the work still to do.
CREATE INDEX import_items_pending ON import_items (job_id, item_no) WHERE state = 'pending';

-- Down Migration

DROP TABLE import_items;
DROP TABLE documents;
