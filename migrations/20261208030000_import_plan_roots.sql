-- Up Migration

-- The import root a mass-import run planned from: its real path and its directory's inode number, written with the
-- plan's items (one transaction). The plan's paths are relative to that root; a later attempt against another root —
-- a `bulk-import local` of another directory, a campaign mount swapped before a requeue — would read other files
-- under the same names. A resumed run compares the root it finds with this one and fails ROOT_CHANGED when they
-- differ. No device number: a network file system (EFS) is numbered anew at every mount, while the inode number is
-- the file server's and stays. Runs planned before this migration have no row, and are not checked.
CREATE TABLE import_plan_roots (
  job_id     bigint      PRIMARY KEY,
  root_path  text        NOT NULL,
  -- Up to 64 bits (EFS uses all of them): numeric, not bigint, which stops at 2^63 - 1.
  root_inode numeric(20) NOT NULL CHECK (root_inode >= 0),
  planned_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO job_child_tables (table_name, column_name, on_delete) VALUES ('import_plan_roots', 'job_id', 'cascade');

-- Down Migration

DELETE FROM job_child_tables WHERE table_name = 'import_plan_roots';
DROP TABLE import_plan_roots;
