// Duplicate natural keys inside one file: the first valid row with a key is kept, every later row with the same key
// becomes a row error that names the first. Validation's filter of the keys it has seen (seen-keys.ts) says when a
// key may repeat; only then does this exact search run: it reads the file again, COPYs every valid row's key (and
// the fields of the rows the filter flagged) into a temporary table and lets the database group them, so the
// worker's memory does not grow with the file. A flagged row may be up to a million characters (an exported file's
// `_errors`, say) and every row of a file may repeat one key: what is sent or read at once is bounded by characters as
// well as by rows (windowChars), never a string near the longest V8 builds.
import { copyText, runScriptWithCopyData, textArrayLiteral } from '../../db/copy-from.js';
import { inTransaction, type PoolClient, type Queryable } from '../../db/pool.js';
import type { HeaderLayout } from './header.js';
import type { ImportProfile } from './profile.js';
import { csvRecords, unescapeFields, type RecordStreamOptions } from './record-stream.js';
import { insertRowErrors, ROW_ERRORS_WRITE_CHARS, type RowError } from './row-errors.js';
import type { RowSet } from './row-set.js';
import { RowValidator, show } from './row-validator.js';
import type { OpenedObject } from './s3-object.js';

const COPY_WINDOW_ROWS = 10_000;
const COPY_KEYS = 'COPY csv_import_keys (row_number, key, fields) FROM STDIN';
const PAGE = 1_000;

export interface DuplicateSearch {
  client: PoolClient;
  jobId: number;
  profile: ImportProfile;
  layout: HeaderLayout;
  exported: boolean;
  /** Rows whose key the filter may have seen before: every later duplicate is among them. */
  flagged: RowSet;
  open(): Promise<OpenedObject>;
  stream: RecordStreamOptions;
  assertLeaseHeld(db: Queryable): Promise<void>;
  /** Hears the fields of each duplicate as it is recorded (validation takes back the names it counted for it). */
  onDuplicate?: (fields: string[]) => void;
  /**
   * Characters of keys and fields sent in one COPY, and of fields read and recorded at once (one row more at most);
   * default ROW_ERRORS_WRITE_CHARS.
   */
  windowChars?: number;
}

/** Records every duplicate as a row error; returns their line numbers. */
export async function reportDuplicateKeys(search: DuplicateSearch): Promise<number[]> {
  const { client, jobId, profile, layout, flagged } = search;
  const columns = layout.columns.map((column) => column.name);
  const positions = profile.target.naturalKey.map((key) => columns.indexOf(key));
  const validator = new RowValidator(layout);
  const windowChars = search.windowChars ?? ROW_ERRORS_WRITE_CHARS;
  await client.query('DROP TABLE IF EXISTS csv_import_keys');
  await client.query('CREATE TEMPORARY TABLE csv_import_keys (row_number integer NOT NULL, key text NOT NULL, fields text[])');
  try {
    const object = await search.open();
    try {
      let lines: string[] = [];
      let chars = 0;
      let header = true;
      for await (const records of csvRecords(object.body, search.stream)) {
        for (const record of records) {
          if (header) {
            header = false;
            continue;
          }
          if (record.fields === null || record.problem !== undefined) continue;
          if (search.exported) unescapeFields(record.fields);
          const check = validator.check(record.fields);
          if (!check.ok) continue;
          // One column: the value; several: a JSON array (the database cannot hold the NUL a join would use).
          const key = positions.length === 1 ? check.values[positions[0]!]! : JSON.stringify(positions.map((p) => check.values[p]));
          const fields = flagged.has(record.line) ? copyText(textArrayLiteral(record.fields)) : '\\N';
          const line = `${record.line}\t${copyText(key)}\t${fields}\n`;
          lines.push(line);
          chars += line.length;
          // Within the piece too: one piece may hold many long rows.
          if (chars >= windowChars) {
            await runScriptWithCopyData(client, COPY_KEYS, lines);
            lines = [];
            chars = 0;
          }
        }
        if (lines.length >= COPY_WINDOW_ROWS) {
          await runScriptWithCopyData(client, COPY_KEYS, lines);
          lines = [];
          chars = 0;
        }
      }
      await runScriptWithCopyData(client, COPY_KEYS, lines);
    } finally {
      object.body.destroy();
    }
    return await inTransaction(client, async () => {
      await search.assertLeaseHeld(client);
      return recordDuplicates(client, jobId, positions.length, profile.target.naturalKey.join('+'), windowChars, search.onDuplicate);
    });
  } finally {
    await client.query('DROP TABLE IF EXISTS csv_import_keys').catch(() => {});
  }
}

/**
 * Inside the caller's transaction: reads the duplicates through a cursor (flat memory) and records them. FETCH counts
 * rows, not bytes: the duplicates are set apart first (most files have few) with each one's size, a cursor reads the
 * sizes a page at a time, and a second cursor over the same rows in the same order reads as many rows with their
 * fields as fit in `windowChars` (one at least).
 */
async function recordDuplicates(
  tx: PoolClient,
  jobId: number,
  keyColumns: number,
  keyName: string,
  windowChars: number,
  onDuplicate?: (fields: string[]) => void,
): Promise<number[]> {
  await tx.query(
    `CREATE TEMPORARY TABLE csv_duplicates ON COMMIT DROP AS
     WITH repeated AS (
       SELECT key, min(row_number) AS first_row FROM csv_import_keys GROUP BY key HAVING count(*) > 1
     )
     SELECT k.row_number, r.first_row, k.key, k.fields,
            char_length(k.key) + coalesce(char_length(array_to_string(k.fields, '')) + 4 * cardinality(k.fields), 0) AS size
     FROM csv_import_keys k JOIN repeated r ON r.key = k.key AND k.row_number > r.first_row`,
  );
  await tx.query('DECLARE csv_duplicate_sizes NO SCROLL CURSOR FOR SELECT size FROM csv_duplicates ORDER BY row_number');
  await tx.query('DECLARE csv_duplicate_rows NO SCROLL CURSOR FOR SELECT row_number, first_row, key, fields FROM csv_duplicates ORDER BY row_number');
  const removed: number[] = [];
  for (;;) {
    const { rows: sizes } = await tx.query<{ size: number }>(`FETCH ${PAGE} FROM csv_duplicate_sizes`);
    if (sizes.length === 0) break;
    for (let start = 0; start < sizes.length; ) {
      let end = start + 1;
      let chars = sizes[start]!.size;
      while (end < sizes.length && chars + sizes[end]!.size <= windowChars) chars += sizes[end++]!.size;
      const { rows } = await tx.query<{ row_number: number; first_row: number; key: string; fields: string[] | null }>(
        `FETCH ${end - start} FROM csv_duplicate_rows`,
      );
      const errors: RowError[] = rows.map((found) => {
        const value = keyColumns === 1 ? found.key : (JSON.parse(found.key) as string[]).join('+');
        removed.push(found.row_number);
        if (found.fields) onDuplicate?.(found.fields);
        return {
          row: found.row_number,
          fields: found.fields,
          issues: [{ column: keyName, rule: 'duplicate', message: `${keyName} ${show(value)} is already on row ${found.first_row} of this file` }],
        };
      });
      await insertRowErrors(tx, jobId, 'validate', errors);
      start = end;
    }
  }
  await tx.query('CLOSE csv_duplicate_sizes');
  await tx.query('CLOSE csv_duplicate_rows');
  return removed;
}
