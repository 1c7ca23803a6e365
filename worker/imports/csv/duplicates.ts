// Duplicate natural keys inside one file: the first valid row with a key is kept, every later row with the same key
// becomes a row error that names the first. Validation's filter of the keys it has seen (seen-keys.ts) says when a
// key may repeat; only then does this exact search run: it reads the file again, COPYs every valid row's key (and
// the fields of the rows the filter flagged) into a temporary table and lets the database group them, so the
// worker's memory does not grow with the file.
import { copyText, runScriptWithCopyData, textArrayLiteral } from '../../db/copy-from.js';
import { inTransaction, type PoolClient, type Queryable } from '../../db/pool.js';
import type { HeaderLayout } from './header.js';
import type { ImportProfile } from './profile.js';
import { csvRecords, unescapeFields, type RecordStreamOptions } from './record-stream.js';
import { insertRowErrors, type RowError } from './row-errors.js';
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
}

/** Records every duplicate as a row error; returns their line numbers. */
export async function reportDuplicateKeys(search: DuplicateSearch): Promise<number[]> {
  const { client, jobId, profile, layout, flagged } = search;
  const columns = layout.columns.map((column) => column.name);
  const positions = profile.target.naturalKey.map((key) => columns.indexOf(key));
  const validator = new RowValidator(layout);
  await client.query('DROP TABLE IF EXISTS csv_import_keys');
  await client.query('CREATE TEMPORARY TABLE csv_import_keys (row_number integer NOT NULL, key text NOT NULL, fields text[])');
  try {
    const object = await search.open();
    try {
      let lines: string[] = [];
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
          lines.push(`${record.line}\t${copyText(key)}\t${fields}\n`);
        }
        if (lines.length >= COPY_WINDOW_ROWS) {
          await runScriptWithCopyData(client, COPY_KEYS, lines);
          lines = [];
        }
      }
      await runScriptWithCopyData(client, COPY_KEYS, lines);
    } finally {
      object.body.destroy();
    }
    return await inTransaction(client, async () => {
      await search.assertLeaseHeld(client);
      return recordDuplicates(client, jobId, positions.length, profile.target.naturalKey.join('+'), search.onDuplicate);
    });
  } finally {
    await client.query('DROP TABLE IF EXISTS csv_import_keys').catch(() => {});
  }
}

/** Inside the caller's transaction: reads the duplicates through a cursor (flat memory) and records them. */
async function recordDuplicates(
  tx: PoolClient,
  jobId: number,
  keyColumns: number,
  keyName: string,
  onDuplicate?: (fields: string[]) => void,
): Promise<number[]> {
  await tx.query(
    `DECLARE csv_duplicates NO SCROLL CURSOR FOR
     WITH repeated AS (
       SELECT key, min(row_number) AS first_row FROM csv_import_keys GROUP BY key HAVING count(*) > 1
     )
     SELECT k.row_number, r.first_row, k.key, k.fields
     FROM csv_import_keys k JOIN repeated r ON r.key = k.key AND k.row_number > r.first_row
     ORDER BY k.row_number`,
  );
  const removed: number[] = [];
  for (;;) {
    const { rows } = await tx.query<{ row_number: number; first_row: number; key: string; fields: string[] | null }>(`FETCH ${PAGE} FROM csv_duplicates`);
    if (rows.length === 0) break;
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
  }
  await tx.query('CLOSE csv_duplicates');
  return removed;
}
