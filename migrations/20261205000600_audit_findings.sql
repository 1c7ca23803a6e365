-- Up Migration

-- Findings of the `audit` job kind (worker/audit/consistency-audit.ts): what imports wrote that no longer holds —
-- products whose category/supplier/location id points at no row of their tenant (`missing-reference`), finished CSV
-- runs whose written rows no longer carry their job id beyond what later imports explain (`csv-run-count`),
-- documents rows without their object and objects without a row (`document-without-object`, `object-without-document`).
-- Stored with the audit run (deleted with it by retention), listed by `bulk-import audit findings <id>` (--json, --csv),
-- repaired only by the explicit `bulk-import audit repair <id>`. `subject_id` is the product or document id, or the
-- CSV run's job id; `details` what the check saw.
CREATE TABLE audit_findings (
  id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job_id      bigint      NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  check_name  text        NOT NULL CHECK (check_name IN ('missing-reference', 'csv-run-count', 'document-without-object', 'object-without-document')),
  tenant_id   text,
  subject     text        NOT NULL,
  subject_id  bigint,
  details     jsonb       NOT NULL DEFAULT '{}'::jsonb,
  repaired_at timestamptz,
  repair      jsonb,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_findings_job ON audit_findings (job_id, id);

-- Down Migration

DROP TABLE audit_findings;
