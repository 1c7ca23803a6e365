// The exact duplicate search (duplicates.ts) against the real Postgres and S3, on rows far longer than usual: an
// exported file whose ignored `_errors` column is long, every row with the same sku. What it sends (the COPY of keys
// and fields, the row errors) and what it reads (the duplicates with their fields) goes in windows bounded by
// characters as well as rows — with the production bound of 8 MiB, 600 rows of a million characters would otherwise
// be one string past the longest V8 builds. Here the bound is small, so a few MB of data cross it many times.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolClient } from '../worker/db/pool.js';
import { reportDuplicateKeys } from '../worker/imports/csv/duplicates.js';
import { readHeader } from '../worker/imports/csv/header.js';
import { findProfile } from '../worker/imports/csv/profiles/index.js';
import { isErrorExport } from '../worker/imports/csv/record-stream.js';
import { RowSet } from '../worker/imports/csv/row-set.js';
import { openObject } from '../worker/imports/csv/s3-object.js';
import { csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();
const profile = findProfile('products')!;
let jobId: number;
let client: PoolClient;

beforeAll(async () => {
  const { rows } = await env.pool.query<{ id: number }>(`INSERT INTO jobs (kind) VALUES ('csv-import') RETURNING id`);
  jobId = rows[0]!.id;
  client = await env.pool.connect();
});
afterAll(() => client?.release());

/** The client, with what each statement sent (its longest parameter, a COPY's statement) and read (fields' characters). */
function measured(target: PoolClient) {
  const seen = { copies: 0, longestParameter: 0, longestFieldsRead: 0 };
  const fieldChars = (rows: unknown[]) =>
    rows.reduce<number>((sum, row) => {
      const fields = (row as { fields?: unknown }).fields;
      return sum + (Array.isArray(fields) ? fields.reduce<number>((chars, field: string) => chars + field.length, 0) : 0);
    }, 0);
  const db = new Proxy(target, {
    get(object, property, receiver) {
      if (property !== 'query') return Reflect.get(object, property, receiver) as unknown;
      return async (config: unknown, values?: unknown[]) => {
        const text = typeof config === 'string' ? config : (config as { text?: string }).text ?? '';
        if (text.startsWith('COPY csv_import_keys')) seen.copies += 1;
        for (const value of values ?? []) if (typeof value === 'string') seen.longestParameter = Math.max(seen.longestParameter, value.length);
        const result = (await (object.query as (...args: unknown[]) => Promise<unknown>).call(object, config, ...(values ? [values] : []))) as
          | { rows?: unknown[] }
          | undefined;
        if (Array.isArray(result?.rows)) seen.longestFieldsRead = Math.max(seen.longestFieldsRead, fieldChars(result.rows));
        return result;
      };
    },
  });
  return { db, seen };
}

describe('the exact duplicate search on long rows', () => {
  it('sends and reads long duplicates in windows bounded by characters, and records every one', async () => {
    const window = 200_000;
    const long = 50_000; // characters of each row's `_errors`
    const count = 60; // rows, all with one sku: 59 duplicates, 3 MB of fields
    const header = ['_row', '_errors', ...HEADER];
    const row = (line: number) => ['1', `${'x'.repeat(long - 4)}${String(line).padStart(4, '0')}`, ...rowFields(validRow(1, 'LONG'))];
    const body = csvLine(header) + Array.from({ length: count }, (_, index) => csvLine(row(index + 2))).join('');
    const key = 'imports/duplicates/long.csv';
    await upload(env.s3, env.bucket, key, body);

    const layout = readHeader(profile, { line: 1, fields: header }, { bucket: env.bucket, key, encoding: 'utf-8' });
    const flagged = new RowSet();
    for (let line = 2; line <= count + 1; line++) flagged.add(line);
    const heard: string[][] = [];
    const { db, seen } = measured(client);
    const signal = new AbortController().signal;
    const removed = await reportDuplicateKeys({
      client: db,
      jobId,
      profile,
      layout,
      exported: isErrorExport(header),
      flagged,
      open: () => openObject(env.s3, env.bucket, key, signal, { stallTimeoutMs: 30_000 }),
      stream: { delimiter: ',', encoding: 'utf-8', signal },
      assertLeaseHeld: async () => {},
      onDuplicate: (fields) => heard.push(fields),
      windowChars: window,
    });

    // Every duplicate recorded, with its fields whole.
    const lines = Array.from({ length: count - 1 }, (_, index) => index + 3);
    expect(removed).toEqual(lines);
    expect(heard.map((fields) => fields[1]!.slice(-4))).toEqual(lines.map((line) => String(line).padStart(4, '0')));
    const { rows: recorded } = await env.pool.query<{ row_number: number; rule: string; first: string; last: string; long: number }>(
      `SELECT row_number, errors -> 0 ->> 'rule' AS rule, errors -> 0 ->> 'message' AS first, right(fields[2], 4) AS last,
              char_length(fields[2]) AS long
       FROM csv_import_row_errors WHERE job_id = $1 ORDER BY row_number`,
      [jobId],
    );
    expect(recorded.map((error) => error.row_number)).toEqual(lines);
    expect(recorded.every((error) => error.rule === 'duplicate' && error.long === long)).toBe(true);
    expect(recorded.map((error) => error.last)).toEqual(lines.map((line) => String(line).padStart(4, '0')));
    expect(recorded[0]!.first).toBe('sku "LONG-0000001" is already on row 2 of this file');

    // The COPY went out in windows of at most the bound (one row more): at least total / (bound + row) of them.
    expect(seen.copies).toBeGreaterThanOrEqual(Math.floor((count * long) / (window + long)));
    // No statement read or sent more than the bound and one row (plus the JSON of a window's issues).
    expect(seen.longestFieldsRead).toBeLessThanOrEqual(window + long);
    expect(seen.longestParameter).toBeLessThanOrEqual(window + 2 * long);
  });
});
