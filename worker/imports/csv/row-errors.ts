// SQL of csv_import_row_errors, and the two views of it the handler contract asks for: a page for `show`/`errors`,
// and the whole list as a CSV the user can fix and import again (`errors <id> --csv`).
import { once } from 'node:events';
import type { Queryable } from '../../db/pool.js';
import type { RunErrors } from '../../handlers/types.js';
import { escapeFormula } from './formula-escape.js';
import { isAnnotationColumn } from './profile.js';
import { getCsvImportRun, validationEnded, type CsvImportRun } from './run-record.js';
import { RowSet } from './row-set.js';
import type { RowIssue } from './row-validator.js';

export interface RowError {
  row: number;
  /** The row's fields as read, in file order; null when the row could not be split into fields. */
  fields: string[] | null;
  issues: RowIssue[];
}

/**
 * Row errors are written at least once their fields hold this many characters (validation's writer, the duplicate
 * search): a row may be up to a million characters, and a thousand such rows would be a gigabyte held at once and more
 * than the longest string V8 builds (a write sends them as one JSON text).
 */
export const ROW_ERRORS_WRITE_CHARS = 8 * 1024 * 1024;

// Postgres text and jsonb cannot hold U+0000 (SQLSTATE 22P05); a row with one is still recorded, its NULs shown as
// U+FFFD so the user sees where they were (row-validator.ts reports them as `nul_byte`).
const storable = (text: string): string => (text.indexOf('\u0000') === -1 ? text : text.replaceAll('\u0000', '\uFFFD'));

function storableError(error: RowError): RowError {
  return {
    row: error.row,
    fields: error.fields === null ? null : error.fields.map(storable),
    issues: error.issues.map((issue) => ({ ...issue, message: storable(issue.message) })),
  };
}

/**
 * What a field costs beyond its text: its slot in an array in memory (8 bytes), its quotes and comma in JSON. A row of
 * a million commas is a million empty fields: weighed by their text alone it weighed nothing, and twenty of them made
 * a 63 MB page and a worker's buffer of such rows outgrew the heap.
 */
const FIELD_OVERHEAD = 8;

/** What a row's fields weigh in characters, for the buffers of row errors (ROW_ERRORS_WRITE_CHARS). */
export function fieldsWeight(fields: readonly string[] | null): number {
  let chars = 0;
  for (const field of fields ?? []) chars += field.length + FIELD_OVERHEAD;
  return chars;
}

/** What a row error weighs in a page (ROW_ERRORS_PAGE_BYTES): its fields (their UTF-8 bytes) and its issues' JSON. */
function rowErrorBytes(error: RowError): number {
  let bytes = Buffer.byteLength(JSON.stringify(error.issues));
  for (const field of error.fields ?? []) bytes += Buffer.byteLength(field) + FIELD_OVERHEAD;
  return bytes;
}

export async function insertRowErrors(tx: Queryable, jobId: number, phase: 'validate' | 'finalize', errors: RowError[]): Promise<void> {
  if (errors.length === 0) return;
  errors = errors.map(storableError);
  await tx.query(
    `INSERT INTO csv_import_row_errors (job_id, row_number, phase, fields, errors, size_bytes)
     SELECT $1, (entry ->> 0)::int, $2,
            CASE WHEN jsonb_typeof(entry -> 1) = 'array' THEN ARRAY(SELECT jsonb_array_elements_text(entry -> 1)) END,
            entry -> 2, (entry ->> 3)::int
     FROM jsonb_array_elements($3::jsonb) AS entry`,
    [jobId, phase, JSON.stringify(errors.map((error) => [error.row, error.fields, error.issues, rowErrorBytes(error)]))],
  );
}

/** Up to `limit` row errors in row order, for the summary of a validation. */
export async function firstRowErrors(db: Queryable, jobId: number, limit: number): Promise<Array<{ row: number; errors: RowIssue[] }>> {
  const { rows } = await db.query<{ row_number: number; errors: RowIssue[] }>(
    `SELECT row_number, errors FROM csv_import_row_errors WHERE job_id = $1 ORDER BY row_number LIMIT $2`,
    [jobId, limit],
  );
  return rows.map((row) => ({ row: row.row_number, errors: row.errors }));
}

/** Rows validation refused only for repeating a key of an earlier row (duplicates.ts records them so). */
export async function countDuplicateRows(db: Queryable, jobId: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM csv_import_row_errors
     WHERE job_id = $1 AND phase = 'validate' AND errors @> '[{"rule": "duplicate"}]'`,
    [jobId],
  );
  return rows[0]!.n;
}

/**
 * What one page of row errors may hold, in bytes of the rows' fields and issues (at least one row whatever its size).
 * A row may be up to a million characters (record-stream.ts) and a failed one is kept whole, so a page bounded by rows
 * alone could make the API server hold a thousand of them — hundreds of MB — for one request. A row's weight is
 * stored with it (size_bytes, rowErrorBytes); rows stored before that column are weighed from their fields.
 */
export const ROW_ERRORS_PAGE_BYTES = 4 * 1024 * 1024;

/**
 * A page of a run's row errors ($1 job, $2 the row before the page, $3 limit, $4 offset, $5 the page's byte budget),
 * prepared: the API's error pages ask for it on every request. Its values are behind sub-selects, which the planner
 * costs without looking into: a plan for the values then costs what the generic plan does, and after the first five
 * executions Postgres keeps the generic plan (the same index range, the values as run-time keys). Given the values,
 * it costed a page of a job holding most of the table's errors (the million-error import) below the generic plan's
 * guess, and planned every request again: 0.27 ms, a third of the page's database time.
 * The rows are weighed by their stored size before any is turned into JSON: rows past the budget are cut (their
 * fields, TOAST pointers, are never read), and `in_page` says how many the limit took, so the caller knows the page
 * was cut.
 */
export const ROW_ERRORS_PAGE_STATEMENT = `WITH page AS (
  SELECT row_number, fields, errors,
    coalesce(size_bytes, coalesce(octet_length(array_to_string(fields, '')), 0) + octet_length(errors::text)) AS size
  FROM csv_import_row_errors
  WHERE job_id = (SELECT $1::bigint) AND row_number > (SELECT $2::int) ORDER BY row_number
  LIMIT (SELECT $3::bigint) OFFSET (SELECT $4::bigint)
), sized AS (
  SELECT row_number, fields, errors, sum(size) OVER (ORDER BY row_number ROWS UNBOUNDED PRECEDING) - size AS before, count(*) OVER () AS in_page
  FROM page
)
SELECT row_number, array_to_json(fields) AS fields, errors, in_page FROM sized WHERE before < (SELECT $5::bigint) ORDER BY row_number`;

export interface RowErrorPage {
  errors: RowError[];
  /** More rows may follow the page: it holds `limit` rows, or the byte budget cut it short. */
  more: boolean;
}

export async function pageOfRowErrors(
  db: Queryable,
  jobId: number,
  afterRow: number,
  limit: number,
  offset = 0,
  budgetBytes = ROW_ERRORS_PAGE_BYTES,
): Promise<RowErrorPage> {
  // fields as JSON: JSON.parse reads a row's ten cells several times faster than pg's text[] parser does.
  const { rows } = await db.query<{ row_number: number; fields: string[] | null; errors: RowIssue[]; in_page: number }>({
    name: 'bulk-import-row-errors-page',
    text: ROW_ERRORS_PAGE_STATEMENT,
    values: [jobId, afterRow, limit, offset, budgetBytes],
  });
  const inPage = rows[0]?.in_page ?? 0;
  return {
    errors: rows.map((row) => ({ row: row.row_number, fields: row.fields, issues: row.errors })),
    more: rows.length < inPage || inPage === limit,
  };
}

/**
 * The lines of a run that hold a row error — of `phase`, or of either — as a set: rows the import did not write
 * (invalid and duplicate rows at validation; excluded rows and rows the profile refused at finalize).
 */
export async function rowErrorLines(db: Queryable, jobId: number, phase: 'validate' | null = null): Promise<RowSet> {
  const set = new RowSet();
  let after = 0;
  for (;;) {
    const { rows } = await db.query<{ row_number: number }>(
      `SELECT row_number FROM csv_import_row_errors WHERE job_id = $1 ${phase === null ? '' : 'AND phase = $3'} AND row_number > $2
       ORDER BY row_number LIMIT 50000`,
      phase === null ? [jobId, after] : [jobId, after, phase],
    );
    for (const row of rows) set.add(row.row_number);
    if (rows.length < 50_000) return set;
    after = rows[rows.length - 1]!.row_number;
  }
}

/** Rows the reviewer excluded at finalize (row errors of rule `excluded`). */
export async function countExcludedRows(db: Queryable, jobId: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM csv_import_row_errors WHERE job_id = $1 AND phase = 'finalize' AND errors @> '[{"rule": "excluded"}]'`,
    [jobId],
  );
  return rows[0]?.n ?? 0;
}

export function describeIssues(issues: RowIssue[]): string {
  return issues.map((issue) => issue.message).join('; ');
}

/**
 * A page of the run's failed rows in row order (the rows of a file have no age, so "newest first" of the contract
 * becomes file order here: the order a user fixes them in).
 */
export async function listRowErrors(db: Queryable, jobId: number, page: { limit: number; offset: number }): Promise<RunErrors> {
  const [run, count] = await Promise.all([
    getCsvImportRun(db, jobId),
    db.query<{ total: number }>(`SELECT count(*)::int AS total FROM csv_import_row_errors WHERE job_id = $1`, [jobId]),
  ]);
  const header = run?.header ?? [];
  const { errors } = await pageOfRowErrors(db, jobId, 0, page.limit, page.offset);
  const unfinished = run !== null && !validationEnded(run);
  return {
    total: count.rows[0]?.total ?? 0,
    ...(unfinished ? { incomplete: 'validation has not read the whole file (still running, or stopped part-way): more rows may have failed' } : {}),
    columns: ['row', 'errors', 'values'],
    rows: errors.map((error) => ({
      row: error.row,
      errors: describeIssues(error.issues),
      values: error.fields === null ? null : error.fields.map((field, index) => `${header[index] ?? `#${index + 1}`}=${field}`).join(', '),
      issues: error.issues,
      fields: error.fields,
    })),
  };
}

const PAGE = 1_000;
/** Columns the export adds in front of the file's own; the importer ignores them (see profile.ts). */
export const EXPORT_COLUMNS = ['_row', '_errors'];

export function csvFieldFor(delimiter: string): (value: string) => string {
  const needsQuotes = new RegExp(`["\\r\\n${delimiter === '\t' ? '\\t' : delimiter.replace(/[|\\]/g, '\\$&')}]|^\\s|\\s$`);
  return (value) => (needsQuotes.test(value) ? `"${value.replace(/"/g, '""')}"` : value);
}

async function write(out: NodeJS.WritableStream, text: string): Promise<void> {
  if (!out.write(text)) await once(out as NodeJS.EventEmitter, 'drain');
}

/**
 * A CSV run whose failed rows are not a list to export. With no validation record it has not been validated yet, or it
 * failed before its rows were read (a header it could not use, an object it could not read); with one whose
 * validation never read the file to its end (still running, or canceled, failed or dead part-way) the rows found so
 * far are not all of them. Either way an export would tell its reviewer that what it holds is all there is to fix.
 * Callers that answer before the export starts (the API) ask `rowErrorsExportRefusal` first.
 */
export class NoRowErrorsExport extends Error {
  constructor(
    readonly jobId: number,
    readonly reason: 'not-validated' | 'validation-unfinished' = 'not-validated',
  ) {
    super(
      reason === 'not-validated'
        ? `job ${jobId} has no failed rows to export: it has not been validated yet, or it failed before its rows were ` +
            'read (its last error says why)'
        : `job ${jobId}'s validation has not read the whole file (it is still running, or it stopped part-way: its last ` +
            'error says why): the failed rows found so far are not all of them, so they are not exported. Requeue the ' +
            'run to validate the file again',
    );
    this.name = 'NoRowErrorsExport';
  }
}

/** Why the run's failed rows cannot be exported (NoRowErrorsExport), or null when they can. */
export async function rowErrorsExportRefusal(db: Queryable, jobId: number): Promise<NoRowErrorsExport | null> {
  return refusalFor(jobId, await getCsvImportRun(db, jobId));
}

function refusalFor(jobId: number, run: CsvImportRun | null): NoRowErrorsExport | null {
  if (!run) return new NoRowErrorsExport(jobId);
  return validationEnded(run) ? null : new NoRowErrorsExport(jobId, 'validation-unfinished');
}

/**
 * Every failed row as CSV in the run's delimiter: `_row`, `_errors`, then the row's original fields under the file's
 * own header; cells a spreadsheet would run as a formula get a leading `'` (formula-escape.ts). Fix the values, keep
 * the two extra columns (they tell the importer to remove that `'` again), and import the file again. A row that could not be
 * split into fields (an unclosed quote, an over-long line) has only `_row` and `_errors`: fix that line in the
 * original file. The export of a run that imported an export replaces that file's `_row` and `_errors` with its own
 * (they described the earlier run), so the loop export → fix → import → export goes on for any number of rounds.
 * Paged by row number and bytes, so memory stays flat however many rows failed and however long. Returns the rows
 * written.
 */
export async function writeRowErrorsCsv(db: Queryable, jobId: number, out: NodeJS.WritableStream): Promise<number> {
  const run = await getCsvImportRun(db, jobId);
  if (!run) throw new NoRowErrorsExport(jobId);
  const refusal = refusalFor(jobId, run);
  if (refusal) throw refusal;
  const field = csvFieldFor(run.delimiter);
  // Every cell goes through escapeFormula: the file's values are the uploader's, the export is opened in spreadsheets.
  const line = (values: string[]) => `${values.map((value) => field(escapeFormula(value))).join(run.delimiter)}\r\n`;
  // The file's own columns, without the annotation columns of an earlier export.
  const kept = run.header.flatMap((name, index) => (isAnnotationColumn(name) ? [] : [index]));
  const own = kept.length === run.header.length ? (fields: string[]) => fields : (fields: string[]) => kept.map((index) => fields[index] ?? '');
  await write(out, line([...EXPORT_COLUMNS, ...own(run.header)]));
  let written = 0;
  let afterRow = 0;
  let limit = PAGE;
  for (;;) {
    const { errors, more } = await pageOfRowErrors(db, jobId, afterRow, limit);
    // Long rows fill a page's byte budget with a few of them: ask for about as many next time, not a thousand.
    limit = Math.min(PAGE, Math.max(16, errors.length * 2));
    for (const error of errors) {
      // A row with the wrong number of fields keeps all of them: which were annotations cannot be told.
      const fields = error.fields === null ? [] : error.fields.length === run.header.length ? own(error.fields) : error.fields;
      await write(out, line([String(error.row), describeIssues(error.issues), ...fields]));
    }
    written += errors.length;
    if (!more || errors.length === 0) return written;
    afterRow = errors[errors.length - 1]!.row;
  }
}
