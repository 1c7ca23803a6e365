-- Up Migration

-- documents.file_extension: the lowercase extension of the file name in source_path ('pdf', 'gz' for a.tar.gz), or
-- '' when the name has none. NULL means "not computed yet": rows imported before this column existed get it from
-- the `documents-file-extension` backfill job (see docs/RUNBOOK.md, "Backfills"), new and renamed rows from the
-- trigger below. A nullable column without a default is a catalog-only change: no table rewrite, so this migration
-- takes its lock for milliseconds even on millions of rows (a generated column would rewrite the whole table under
-- an exclusive lock — the downtime the backfill avoids).
ALTER TABLE documents ADD COLUMN file_extension text;

-- The one rule, shared by the trigger and the backfill. String functions only (a regular expression costs about
-- five times as much per row); a single SQL expression, so the planner inlines it into the backfill's UPDATE.
-- The extension is the text after the last dot of the last path segment when that segment has a dot that is not a
-- leading one (".env" has no extension) and the text is 1-16 ASCII letters or digits.
CREATE FUNCTION documents_file_extension(path text) RETURNS text
  LANGUAGE sql IMMUTABLE PARALLEL SAFE
  RETURN CASE
    WHEN strpos(ltrim(split_part(path, '/', -1), '.'), '.') > 0
     AND length(split_part(path, '.', -1)) BETWEEN 1 AND 16
     AND translate(lower(split_part(path, '.', -1)), 'abcdefghijklmnopqrstuvwxyz0123456789', '') = ''
    THEN lower(split_part(path, '.', -1))
    ELSE ''
  END;

CREATE FUNCTION documents_fill_file_extension() RETURNS trigger
  LANGUAGE plpgsql AS $$
BEGIN
  NEW.file_extension := documents_file_extension(NEW.source_path);
  RETURN NEW;
END
$$;

-- New rows (the mass import's insert) and rows whose path changes keep the field filled; the backfill itself only
-- sets file_extension, so it does not fire this trigger.
CREATE TRIGGER documents_file_extension_on_write
  BEFORE INSERT OR UPDATE OF source_path ON documents
  FOR EACH ROW EXECUTE FUNCTION documents_fill_file_extension();

-- Down Migration

DROP TRIGGER documents_file_extension_on_write ON documents;
DROP FUNCTION documents_fill_file_extension();
ALTER TABLE documents DROP COLUMN file_extension;
DROP FUNCTION documents_file_extension(text);
