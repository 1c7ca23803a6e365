-- Up Migration

-- What a failed CSV row weighs: the bytes of its fields and its issues, written with the row. A page of a run's row
-- errors holds at most a byte budget of them (row-errors.ts ROW_ERRORS_PAGE_STATEMENT); sizing rows from their
-- fields when the page is read detoasted every row the limit took (up to 1,000 of up to a megabyte each) to return a
-- few, on every page. Nullable, no default: adding it is instant; rows stored before it are sized from their fields
-- when read, as before. Its check is NOT VALID: a CHECK added with the column would read the whole table (a
-- million-error import is millions of rows) under this statement's exclusive lock; new rows are checked all the same.
ALTER TABLE csv_import_row_errors ADD COLUMN size_bytes integer;
ALTER TABLE csv_import_row_errors ADD CONSTRAINT csv_import_row_errors_size_bytes_check CHECK (size_bytes >= 0) NOT VALID;

-- Down Migration

ALTER TABLE csv_import_row_errors DROP COLUMN size_bytes;
