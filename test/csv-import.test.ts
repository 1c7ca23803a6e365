// CSV import end to end against the real Postgres and S3 server: validation of 100,000 rows with bad rows of many
// kinds, review (finalize / reject), the failed-rows export imported again after fixing, and idempotent re-imports.
import { DeleteObjectCommand } from '@aws-sdk/client-s3';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finalizeImport, rejectImport, submitJob } from '../worker/api.js';
import { csvFinalizeHandler } from '../worker/handlers/csv-finalize.js';
import { csvValidateHandler } from '../worker/handlers/csv-validate.js';
import { getCsvImportRun } from '../worker/imports/csv/run-record.js';
import { cancelJob, requeueJob, requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { csvLine, HEADER, plantedFile, rowFields, upload, validRow, type PlantedFile } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { settledJob, testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
let worker: Worker;
const TENANT = 'acme';

beforeAll(async () => {
  worker = testWorker(env, [csvValidateHandler, csvFinalizeHandler], { leaseMs: 30_000, heartbeatMs: 1_000 });
  await worker.start();
});
afterAll(async () => {
  await worker?.stop();
});

async function importObject(key: string, extra: Record<string, unknown> = {}): Promise<number> {
  const { job } = await submitJob(env.pool, {
    kind: 'csv-import',
    tenantId: TENANT,
    payload: { bucket: env.bucket, key, profile: 'products', ...extra },
  });
  return job.id;
}

const settled = (jobId: number, timeoutMs = 60_000): Promise<JobRow> => settledJob(env.pool, jobId, timeoutMs);

/** Uploads the rows (header first) as `key`, imports them and waits for the review; returns the run's id. */
async function reviewedImport(key: string, rows: string[][]): Promise<number> {
  await upload(env.s3, env.bucket, key, rows.map((fields) => csvLine(fields)).join(''));
  const jobId = await importObject(key);
  expect((await settled(jobId)).state).toBe('review_ready');
  return jobId;
}

async function count(sql: string, values: unknown[] = []): Promise<number> {
  const { rows } = await env.pool.query<{ n: number }>(sql, values);
  return rows[0]!.n;
}

describe('csv-import of 100,000 rows with 1% bad rows', () => {
  let file: PlantedFile;
  let jobId: number;

  it('validates: the summary counts are right and every bad row is reported with its reasons', async () => {
    file = plantedFile(100_000, 100);
    await upload(env.s3, env.bucket, 'imports/acme/products-100k.csv', file.body);
    jobId = await importObject('imports/acme/products-100k.csv');
    const job = await settled(jobId);
    expect(job.state).toBe('review_ready');
    expect(job.kind).toBe('csv-import');
    expect(job.result).toMatchObject({ rows: 100_000, valid: file.valid.length, invalid: file.bad.size, duplicates: expect.any(Number) });
    expect((job.result as { firstErrors: unknown[] }).firstErrors).toHaveLength(10);

    const { rows } = await env.pool.query<{ row_number: number; rules: string[]; fields: string[] | null }>(
      `SELECT row_number, fields, ARRAY(SELECT e ->> 'rule' FROM jsonb_array_elements(errors) e ORDER BY 1) AS rules
       FROM csv_import_row_errors WHERE job_id = $1 ORDER BY row_number`,
      [jobId],
    );
    const reported = new Map(rows.map((row) => [row.row_number, row.rules]));
    expect(reported.size).toBe(file.bad.size);
    for (const [line, rules] of file.bad) expect([line, reported.get(line)]).toEqual([line, [...rules].sort()]);
    // The original values are kept, as written.
    for (const row of rows) {
      const planted = file.badFields.get(row.row_number);
      if (planted) expect(row.fields).toEqual(planted);
    }
    // Nothing is written before review.
    expect(await count('SELECT count(*)::int AS n FROM products')).toBe(0);
    expect(await count('SELECT count(*)::int AS n FROM categories')).toBe(0);
  });

  it('finalize writes exactly the valid rows and creates each reference once', async () => {
    const resumed = await finalizeImport(env.pool, jobId);
    expect(resumed).toMatchObject({ id: jobId, kind: 'csv-finalize', state: 'queued' });
    const job = await settled(jobId);
    expect(job.state).toBe('partial');
    expect(job.result).toMatchObject({ valid: file.valid.length, inserted: file.valid.length, updated: 0, failedAtWrite: 0 });

    const skus = (await env.pool.query<{ sku: string }>('SELECT sku FROM products WHERE tenant_id = $1 ORDER BY sku', [TENANT])).rows.map((row) => row.sku);
    expect(skus).toEqual(file.valid.map((row) => row.sku).sort());
    const sums = await env.pool.query<{ quantity: string; price: string; barcodes: number }>(
      'SELECT sum(quantity)::text AS quantity, sum(price)::text AS price, count(barcode)::int AS barcodes FROM products',
    );
    const expectedPrice = file.valid.reduce((sum, row) => sum + Math.round(Number(row.price) * 100), 0);
    expect(sums.rows[0]).toEqual({
      quantity: String(file.valid.reduce((sum, row) => sum + Number(row.quantity), 0)),
      price: (expectedPrice / 100).toFixed(2),
      barcodes: file.valid.filter((row) => row.barcode !== '').length,
    });
    for (const [table, column] of [['categories', 'category'], ['suppliers', 'supplier'], ['locations', 'location']] as const) {
      const expected = new Set(file.valid.map((row) => row[column]).filter((name) => name !== ''));
      const names = (await env.pool.query<{ name: string }>(`SELECT name FROM ${table} WHERE tenant_id = $1`, [TENANT])).rows.map((r) => r.name);
      expect(names.sort()).toEqual([...expected].sort());
    }
    // Every product points at the reference its row named (no dangling or wrong ids).
    const sample = file.valid[4321]!;
    const { rows } = await env.pool.query(
      `SELECT p.name, p.description, p.status, c.name AS category, s.name AS supplier, l.name AS location
       FROM products p JOIN categories c ON c.id = p.category_id JOIN suppliers s ON s.id = p.supplier_id
       LEFT JOIN locations l ON l.id = p.location_id WHERE p.sku = $1`,
      [sample.sku],
    );
    expect(rows[0]).toEqual({
      name: sample.name, description: sample.description, status: sample.status,
      category: sample.category, supplier: sample.supplier, location: sample.location || null,
    });
    expect(await count('SELECT count(*)::int AS n FROM products WHERE category_id NOT IN (SELECT id FROM categories)')).toBe(0);
    expect(await count("SELECT count(*)::int AS n FROM categories WHERE name = 'Ghost category'")).toBe(0);
    // Every batch of the ledger is written; the row errors stay for the export.
    expect(await count('SELECT count(*)::int AS n FROM csv_import_batches WHERE job_id = $1 AND finalized_at IS NULL', [jobId])).toBe(0);
    expect(await count('SELECT count(*)::int AS n FROM csv_import_row_errors WHERE job_id = $1', [jobId])).toBe(file.bad.size);
  });

  it('the exported failed rows, corrected, import cleanly', async () => {
    const chunks: Buffer[] = [];
    const out = new (await import('node:stream')).PassThrough();
    out.on('data', (chunk: Buffer) => chunks.push(chunk));
    const written = await csvFinalizeHandler.exportErrorsCsv!(env.pool, jobId, out, { operator: false });
    out.end();
    expect(written).toBe(file.bad.size);
    const records = parse(Buffer.concat(chunks), { relax_column_count: true }) as string[][];
    expect(records[0]).toEqual(['_row', '_errors', ...HEADER]);
    // Fix each row the way a user would, from what the export shows: fill the right values back in.
    const fixed = records.slice(1).map((record) => {
      const row = Number(record[0]);
      expect(record[1]).not.toBe('');
      const fields = record.slice(2);
      const sku = fields[0]!;
      const i = /^SKU-\d+$/.test(sku) ? Number(sku.slice(4)) : 5_000_000 + row;
      const correct = rowFields(validRow(i, 'FIX'));
      return [String(row), '', ...correct];
    });
    await upload(env.s3, env.bucket, 'imports/acme/fixed.csv', ['_row,_errors,' + HEADER.join(',') + '\n', ...fixed.map((fields) => csvLine(fields))].join(''));
    const fixJob = await importObject('imports/acme/fixed.csv', { autoFinalize: true });
    const job = await settled(fixJob);
    expect(job.state).toBe('succeeded');
    expect(job.result).toMatchObject({ rows: file.bad.size, valid: file.bad.size, invalid: 0, inserted: file.bad.size });
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'FIX-%'")).toBe(file.bad.size);
  });

  it('importing the same file again changes nothing (idempotent upsert on the natural key)', async () => {
    const before = await env.pool.query('SELECT max(updated_at) AS at, count(*)::int AS n FROM products');
    const again = await importObject('imports/acme/products-100k.csv', { autoFinalize: true });
    const job = await settled(again);
    expect(job.state).toBe('partial');
    expect(job.result).toMatchObject({ inserted: 0, updated: 0, unchanged: file.valid.length, referencesCreated: {} });
    const after = await env.pool.query('SELECT max(updated_at) AS at, count(*)::int AS n FROM products');
    expect(after.rows[0]).toEqual(before.rows[0]);
  });
});

describe('references', () => {
  it('a category another transaction is creating right now is waited for and used, not duplicated or left empty', async () => {
    const rows = [HEADER, ...Array.from({ length: 30 }, (_, i) => rowFields({ ...validRow(i + 1, 'RACE'), category: i % 2 ? 'Contested' : 'Calm' }))];
    const jobId = await reviewedImport('imports/acme/race.csv', rows);

    // Another import (here: a plain transaction) inserts the same category and has not committed yet.
    const other = await env.pool.connect();
    try {
      await other.query('BEGIN');
      const { rows: inserted } = await other.query<{ id: number }>(
        "INSERT INTO categories (tenant_id, name) VALUES ($1, 'Contested') RETURNING id",
        [TENANT],
      );
      const otherPid = (await other.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await finalizeImport(env.pool, jobId);
      // Finalize waits on the uncommitted row (the unique index), it neither fails nor inserts a second one: once a
      // session of the worker is seen blocked by this transaction, nothing of the batch may be written.
      await waitFor(async () => (await count('SELECT count(*)::int AS n FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [otherPid])) > 0, 60_000);
      expect((await requireJob(env.pool, jobId)).state).toBe('running');
      expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'RACE-%'")).toBe(0);
      await other.query('COMMIT');

      // Its statement's snapshot predates that commit: the batch is run again and then sees the committed row.
      const job = await settled(jobId);
      expect(job.state).toBe('succeeded');
      expect(job.result).toMatchObject({ inserted: 30, referencesCreated: { categories: 1 } });
      const { rows: products } = await env.pool.query<{ name: string; category_id: number | null }>(
        `SELECT c.name, p.category_id FROM products p LEFT JOIN categories c ON c.id = p.category_id
         WHERE p.sku LIKE 'RACE-%' AND c.name IS DISTINCT FROM 'Calm'`,
      );
      expect(products).toHaveLength(15);
      for (const product of products) expect(product).toEqual({ name: 'Contested', category_id: inserted[0]!.id });
      expect(await count("SELECT count(*)::int AS n FROM categories WHERE tenant_id = $1 AND name = 'Contested'", [TENANT])).toBe(1);
    } finally {
      await other.query('ROLLBACK').catch(() => {});
      other.release();
    }
  });
});

describe('finalize', () => {
  it('rows the database refuses at write time are recorded as row errors; the rest of their batch is written (partial)', async () => {
    // A rule the profile does not know about, as a backend might add one.
    await env.pool.query("ALTER TABLE products ADD CONSTRAINT test_no_forbidden CHECK (name <> 'Forbidden')");
    try {
      const rows = [HEADER, ...Array.from({ length: 60 }, (_, i) => rowFields({ ...validRow(i + 1, 'DBR'), description: 'x', name: i % 20 === 5 ? 'Forbidden' : `Product ${i + 1}` }))];
      await upload(env.s3, env.bucket, 'imports/acme/db-refused.csv', rows.map((fields) => csvLine(fields)).join(''));
      const jobId = await importObject('imports/acme/db-refused.csv', { autoFinalize: true });
      const job = await settled(jobId);
      expect(job.state).toBe('partial');
      expect(job.result).toMatchObject({ valid: 60, invalid: 0, inserted: 57, failedAtWrite: 3 });
      const { rows: errors } = await env.pool.query(
        `SELECT row_number, phase, fields[2] AS name, errors -> 0 ->> 'rule' AS rule, errors -> 0 ->> 'message' AS message
         FROM csv_import_row_errors WHERE job_id = $1 ORDER BY row_number`,
        [jobId],
      );
      expect(errors.map((error) => [error.row_number, error.phase, error.name, error.rule])).toEqual([
        [7, 'finalize', 'Forbidden', 'database'],
        [27, 'finalize', 'Forbidden', 'database'],
        [47, 'finalize', 'Forbidden', 'database'],
      ]);
      expect(errors[0].message).toContain('test_no_forbidden');
      expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'DBR-%'")).toBe(57);
    } finally {
      await env.pool.query('ALTER TABLE products DROP CONSTRAINT test_no_forbidden');
    }
  });

  it('cancel stops finalize at a chunk boundary, keeps what was written, and requeue writes the rest once', async () => {
    const rows = [HEADER, ...Array.from({ length: 40_000 }, (_, i) => rowFields({ ...validRow(i + 1, 'CAN'), description: 'x' }))];
    const jobId = await reviewedImport('imports/acme/cancel.csv', rows);
    await finalizeImport(env.pool, jobId);
    await waitFor(async () => ((await getCsvImportRun(env.pool, jobId))?.finalizedBatches ?? 0) >= 5, 30_000, 5);
    await cancelJob(env.pool, jobId);
    const canceled = await settled(jobId);
    expect(canceled.state).toBe('canceled');
    const run = (await getCsvImportRun(env.pool, jobId))!;
    expect(run.finalizedBatches).toBeLessThan(80);
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'CAN-%'")).toBe(run.finalizedBatches * 500);

    await requeueJob(env.pool, jobId);
    const done = await settled(jobId);
    expect(done.state).toBe('succeeded');
    expect(done.result).toMatchObject({ inserted: 40_000, unchanged: 0, updated: 0 });
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'CAN-%'")).toBe(40_000);
  });
});

describe('a batch commit lost after the worker saw it succeed', () => {
  it('does not end the run succeeded: the next attempt writes the batch again, once', async () => {
    const rows = [HEADER, ...Array.from({ length: 1_500 }, (_, i) => rowFields({ ...validRow(i + 1, 'LOST'), description: 'x' }))];
    const jobId = await reviewedImport('imports/acme/lost-commit.csv', rows);
    // The run row held (KEY SHARE: the finalize may still update it), so the attempt stops right before it marks the
    // run finalized, where it locks the row FOR UPDATE.
    const holder = await env.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT 1 FROM csv_import_runs WHERE job_id = $1 FOR KEY SHARE', [jobId]);
      await finalizeImport(env.pool, jobId);
      await waitFor(async () => {
        const { rows: waiting } = await env.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%FROM csv_import_runs WHERE job_id = $1 FOR UPDATE'`,
        );
        return waiting[0]!.n === 1 || undefined;
      }, 60_000);
      expect(await count('SELECT count(*)::int AS n FROM csv_import_batches WHERE job_id = $1 AND finalized_at IS NULL', [jobId])).toBe(0);
      // What a failover does to the last commits made without waiting for the disk: the second batch is gone.
      await env.pool.query(
        `UPDATE csv_import_batches SET finalized_at = NULL, rows_inserted = 0, rows_updated = 0, rows_unchanged = 0, rows_failed = 0
         WHERE job_id = $1 AND batch_number = 2`,
        [jobId],
      );
      await env.pool.query("DELETE FROM products WHERE sku BETWEEN 'LOST-0000501' AND 'LOST-0001000'");
    } finally {
      await holder.query('COMMIT');
      holder.release();
    }
    const done = await settled(jobId);
    expect(done.state).toBe('succeeded');
    expect(done.attempts).toBe(2);
    expect(done.result).toMatchObject({ inserted: 1_500, updated: 0, unchanged: 0 });
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'LOST-%'")).toBe(1_500);
  });
});

describe('failed-rows export and spreadsheet formulas', () => {
  it('cells a spreadsheet would run are escaped with a leading quote, and the corrected export imports the values as written', async () => {
    const names = ['=HYPERLINK("http://evil.example","click")', '+1+1', '-2', '@SUM(A1:A9)', "'=quoted already", "''+two quotes", 'plain'];
    const rows = names.map((name, i) => rowFields({ ...validRow(i + 1, 'FORM'), name, description: '\t=cmd|/c calc', category: '=Category', price: 'bad' }));
    await upload(env.s3, env.bucket, 'imports/acme/formulas.csv', [HEADER, ...rows].map((fields) => csvLine(fields)).join(''));
    const jobId = await importObject('imports/acme/formulas.csv');
    expect((await settled(jobId)).result).toMatchObject({ rows: names.length, invalid: names.length });

    const chunks: Buffer[] = [];
    const out = new (await import('node:stream')).PassThrough();
    out.on('data', (chunk: Buffer) => chunks.push(chunk));
    expect(await csvValidateHandler.exportErrorsCsv!(env.pool, jobId, out, { operator: false })).toBe(names.length);
    out.end();
    const records = parse(Buffer.concat(chunks)) as string[][];
    const nameAt = HEADER.indexOf('name') + 2;
    // No cell of the export starts with a character that makes a spreadsheet evaluate it.
    for (const record of records) for (const cell of record) expect(cell).not.toMatch(/^[=+\-@\t\r]/);
    expect(records.slice(1).map((record) => record[nameAt])).toEqual([
      `'=HYPERLINK("http://evil.example","click")`, "'+1+1", "'-2", "'@SUM(A1:A9)", "''=quoted already", "'''+two quotes", 'plain',
    ]);
    // The tab is a separator of some spreadsheet too: the formula after it gets its own quote.
    expect(records[1]![HEADER.indexOf('description') + 2]).toBe("'\t'=cmd|/c calc");

    // Correct the price only and keep everything else as exported: the escaped cells and the _row/_errors columns.
    const priceAt = HEADER.indexOf('price') + 2;
    const skuAt = HEADER.indexOf('sku') + 2;
    const corrected = records.map((record, index) =>
      index === 0 ? record : record.map((cell, at) => (at === priceAt ? '1.00' : at === skuAt ? cell.replace('FORM', 'FORMFIX') : cell)),
    );
    await upload(env.s3, env.bucket, 'imports/acme/formulas-fixed.csv', corrected.map((fields) => csvLine(fields)).join(''));
    const fixed = await settled(await importObject('imports/acme/formulas-fixed.csv', { autoFinalize: true }));
    expect(fixed).toMatchObject({ state: 'succeeded', result: expect.objectContaining({ valid: names.length, inserted: names.length }) });
    const { rows: products } = await env.pool.query<{ name: string; description: string; category: string }>(
      `SELECT p.name, p.description, c.name AS category FROM products p JOIN categories c ON c.id = p.category_id
       WHERE p.sku LIKE 'FORMFIX-%' ORDER BY p.sku`,
    );
    expect(products.map((product) => product.name)).toEqual(names);
    expect(new Set(products.map((product) => `${product.description}|${product.category}`))).toEqual(new Set(['=cmd|/c calc|=Category']));
  });

  it('a file without the export columns is imported as written: a leading quote stays part of the value', async () => {
    const rows = [HEADER, rowFields({ ...validRow(1, 'QUOTE'), name: "'=kept" })];
    await upload(env.s3, env.bucket, 'imports/acme/own-quotes.csv', rows.map((fields) => csvLine(fields)).join(''));
    const job = await settled(await importObject('imports/acme/own-quotes.csv', { autoFinalize: true }));
    expect(job.state).toBe('succeeded');
    expect((await env.pool.query("SELECT name FROM products WHERE sku LIKE 'QUOTE-%'")).rows).toEqual([{ name: "'=kept" }]);
  });
});

describe('what validation keeps', () => {
  it('values with backslashes, tabs, line breaks and quotes survive validation and finalize byte for byte', async () => {
    const awkward = ['C:\\path\\to\\file', 'tab\there', 'two\nlines\r\nand CR', 'say "hi" \\N', '\\', '{"a","b"}'];
    const rows = awkward.map((description, i) => ({ ...validRow(i + 1, 'ESC'), description }));
    // A row whose values differ from its fields (padded sku): a duplicate of it shows its fields exactly as written in
    // the row errors.
    const padded = { ...validRow(1, 'ESC'), sku: `  ${validRow(1, 'ESC').sku}  `, name: 'dup \\ "of" \t one' };
    const body = [HEADER, ...rows.map(rowFields), rowFields(padded)].map((fields) => csvLine(fields)).join('');
    await upload(env.s3, env.bucket, 'imports/acme/escapes.csv', body);
    const jobId = await importObject('imports/acme/escapes.csv');
    expect(await settled(jobId)).toMatchObject({ state: 'review_ready', result: expect.objectContaining({ valid: awkward.length, duplicates: 1 }) });
    const { rows: errors } = await env.pool.query('SELECT fields FROM csv_import_row_errors WHERE job_id = $1', [jobId]);
    expect(errors).toEqual([{ fields: rowFields(padded) }]);

    await finalizeImport(env.pool, jobId);
    expect((await settled(jobId)).state).toBe('partial');
    const { rows: written } = await env.pool.query("SELECT description FROM products WHERE sku LIKE 'ESC-%' ORDER BY sku");
    expect(written.map((row) => row.description)).toEqual(awkward);
  });

  it('validation keeps the object\'s ETag and a ledger of line ranges, not the rows; both go with their job', async () => {
    const rows = [HEADER, ...Array.from({ length: 25 }, (_, i) => rowFields(validRow(i + 1, 'DEL')))];
    rows.splice(10, 0, rowFields({ ...validRow(99, 'DEL'), price: 'free' }));
    const jobId = await reviewedImport('imports/acme/deleted.csv', rows);
    const run = (await getCsvImportRun(env.pool, jobId))!;
    expect(run.objectEtag).toMatch(/^"[0-9a-f]{32}"$/);
    expect(run.objectSize).toBeGreaterThan(0);
    // 25 valid rows on lines 2…28 (line 12 is invalid; the row of i = 3 takes two lines): one batch
    // (CSV_FINALIZE_CHUNK_SIZE 500) over those lines.
    const { rows: ledger } = await env.pool.query(
      'SELECT first_row, last_row, row_count FROM csv_import_batches WHERE job_id = $1 ORDER BY batch_number',
      [jobId],
    );
    expect(ledger).toEqual([{ first_row: 2, last_row: 28, row_count: 25 }]);
    await env.pool.query("UPDATE jobs SET state = 'canceled', finished_at = now() WHERE id = $1", [jobId]);
    await env.pool.query('DELETE FROM jobs WHERE id = $1', [jobId]);
    expect(await count('SELECT count(*)::int AS n FROM csv_import_batches WHERE job_id = $1', [jobId])).toBe(0);
    expect(await count('SELECT count(*)::int AS n FROM csv_import_row_errors WHERE job_id = $1', [jobId])).toBe(0);
  });

  it('a file replaced or deleted after validation is not finalized: nothing of it is written', async () => {
    const rows = (prefix: string) => [HEADER, ...Array.from({ length: 20 }, (_, i) => rowFields(validRow(i + 1, prefix)))];
    await upload(env.s3, env.bucket, 'imports/acme/replaced.csv', rows('ORIG').map((fields) => csvLine(fields)).join(''));
    const replaced = await importObject('imports/acme/replaced.csv');
    expect((await settled(replaced)).state).toBe('review_ready');
    await upload(env.s3, env.bucket, 'imports/acme/replaced.csv', rows('SWAP').map((fields) => csvLine(fields)).join(''));
    await finalizeImport(env.pool, replaced);
    const ended = await settled(replaced);
    expect(ended).toMatchObject({ state: 'failed', lastError: expect.objectContaining({ code: 'CSV_OBJECT_CHANGED', class: 'permanent' }) });
    expect((ended.lastError as { message: string }).message).toMatch(/changed after it was validated/);
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'ORIG-%' OR sku LIKE 'SWAP-%'")).toBe(0);

    // Without an ETag (a server that gives none), the object's size still gives a replaced file away.
    await upload(env.s3, env.bucket, 'imports/acme/resized.csv', rows('SIZE').map((fields) => csvLine(fields)).join(''));
    const resized = await importObject('imports/acme/resized.csv');
    expect((await settled(resized)).state).toBe('review_ready');
    await env.pool.query('UPDATE csv_import_runs SET object_etag = NULL WHERE job_id = $1', [resized]);
    await upload(env.s3, env.bucket, 'imports/acme/resized.csv', [...rows('SIZE'), rowFields(validRow(99, 'SIZE'))].map((fields) => csvLine(fields)).join(''));
    await finalizeImport(env.pool, resized);
    const sized = await settled(resized);
    expect(sized).toMatchObject({ state: 'failed', lastError: expect.objectContaining({ code: 'CSV_OBJECT_CHANGED' }) });
    expect((sized.lastError as { message: string }).message).toMatch(/holds \d+ bytes, validation read \d+/);
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'SIZE-%'")).toBe(0);

    await upload(env.s3, env.bucket, 'imports/acme/deleted-later.csv', rows('GONE').map((fields) => csvLine(fields)).join(''));
    const deleted = await importObject('imports/acme/deleted-later.csv');
    expect((await settled(deleted)).state).toBe('review_ready');
    await env.s3.send(new DeleteObjectCommand({ Bucket: env.bucket, Key: 'imports/acme/deleted-later.csv' }));
    await finalizeImport(env.pool, deleted);
    const gone = await settled(deleted);
    expect(gone).toMatchObject({ state: 'failed', lastError: expect.objectContaining({ code: 'CSV_OBJECT_NOT_FOUND' }) });
    expect((gone.lastError as { message: string }).message).toMatch(/deleted after validation/);
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'GONE-%'")).toBe(0);
  });
});

describe('review', () => {
  it('reject ends the run without writing and discards its batch ledger; it cannot be finalized afterwards', async () => {
    const rows = [HEADER, ...Array.from({ length: 40 }, (_, i) => rowFields(validRow(i + 1, 'REJ')))];
    const jobId = await reviewedImport('imports/acme/reject.csv', rows);
    expect(await count('SELECT sum(row_count)::int AS n FROM csv_import_batches WHERE job_id = $1', [jobId])).toBe(40);

    const rejected = await rejectImport(env.pool, jobId);
    expect(rejected).toMatchObject({ state: 'canceled', result: expect.objectContaining({ rejected: true, discardedRows: 40, valid: 40 }) });
    expect(await count('SELECT count(*)::int AS n FROM csv_import_batches WHERE job_id = $1', [jobId])).toBe(0);
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'REJ-%'")).toBe(0);
    await expect(finalizeImport(env.pool, jobId)).rejects.toThrow(/canceled: cannot finalize/);
    await expect(rejectImport(env.pool, jobId)).rejects.toThrow(/canceled: cannot reject/);
  });

  it('a rejected run, requeued, validates the file again (and can then be finalized)', async () => {
    const rows = [HEADER, ...Array.from({ length: 30 }, (_, i) => rowFields(validRow(i + 1, 'RRQ')))];
    const jobId = await reviewedImport('imports/acme/reject-requeue.csv', rows);
    await rejectImport(env.pool, jobId);
    expect((await getCsvImportRun(env.pool, jobId))!.validatedAt).toBeNull();

    await requeueJob(env.pool, jobId);
    const again = await settled(jobId);
    expect(again).toMatchObject({ state: 'review_ready', kind: 'csv-import', result: expect.objectContaining({ rows: 30, valid: 30 }) });
    expect(await count('SELECT sum(row_count)::int AS n FROM csv_import_batches WHERE job_id = $1', [jobId])).toBe(30);
    await finalizeImport(env.pool, jobId);
    expect((await settled(jobId)).state).toBe('succeeded');
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'RRQ-%'")).toBe(30);
  });

  it('finalize refuses to start when the batch records do not add up to what validation counted', async () => {
    const rows = [HEADER, ...Array.from({ length: 20 }, (_, i) => rowFields(validRow(i + 1, 'HALF')))];
    const jobId = await reviewedImport('imports/acme/half.csv', rows);
    await env.pool.query('DELETE FROM csv_import_batches WHERE job_id = $1', [jobId]);
    await finalizeImport(env.pool, jobId);
    const ended = await settled(jobId);
    expect(ended).toMatchObject({ state: 'failed', lastError: expect.objectContaining({ code: 'CSV_STAGING_MISSING' }) });
    expect((ended.lastError as { message: string }).message).toMatch(/validation counted 20 rows in 1 batches, but the batch records hold 0 rows in 0/);
    expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'HALF-%'")).toBe(0);
  });

  it('a reference name its table refuses costs only the rows that name it: they become row errors, the rest is written', async () => {
    await env.pool.query('ALTER TABLE categories ADD CONSTRAINT test_short_names CHECK (length(name) < 20)');
    try {
      const rows = [
        HEADER,
        ...Array.from({ length: 10 }, (_, i) => rowFields({ ...validRow(i + 1, 'LONGREF'), ...(i % 3 === 0 ? { category: 'A category name far too long' } : {}) })),
      ];
      const jobId = await reviewedImport('imports/acme/long-ref.csv', rows);
      await finalizeImport(env.pool, jobId);
      const ended = await settled(jobId);
      expect(ended).toMatchObject({ state: 'partial', result: expect.objectContaining({ valid: 10, inserted: 6, failedAtWrite: 4 }) });
      const { rows: errors } = await env.pool.query(
        "SELECT row_number, errors FROM csv_import_row_errors WHERE job_id = $1 AND phase = 'finalize' ORDER BY row_number",
        [jobId],
      );
      // Lines 2, 6, 9, 12: the row of i = 3 holds a line break, so the lines after it shift by one.
      expect(errors.map((error) => error.row_number)).toEqual([2, 6, 9, 12]);
      expect(errors[0].errors[0]).toMatchObject({ column: 'category', rule: 'database' });
      expect(errors[0].errors[0].message).toMatch(/refused category "A category name far too long" \(table categories\): .*test_short_names/);
      expect(await count("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'LONGREF-%'")).toBe(6);
    } finally {
      await env.pool.query('ALTER TABLE categories DROP CONSTRAINT test_short_names');
    }
  });

  it("a row the products table refuses is a row error naming the constraint, without Postgres's copy of the stored row", async () => {
    // Scoped to this test's rows: others in the table (a formula-like name of an earlier test) are longer.
    await env.pool.query("ALTER TABLE products ADD CONSTRAINT test_short_product_names CHECK (sku NOT LIKE 'LONGNAME-%' OR length(name) < 30)");
    try {
      const rows = [HEADER, ...Array.from({ length: 6 }, (_, i) => rowFields({ ...validRow(i + 1, 'LONGNAME'), ...(i === 2 ? { name: 'A product name far too long for the table' } : {}) }))];
      const jobId = await reviewedImport('imports/acme/long-name.csv', rows);
      await finalizeImport(env.pool, jobId);
      const ended = await settled(jobId);
      expect(ended).toMatchObject({ state: 'partial', result: expect.objectContaining({ inserted: 5, failedAtWrite: 1 }) });
      const { rows: errors } = await env.pool.query<{ errors: Array<{ rule: string; message: string }> }>(
        "SELECT errors FROM csv_import_row_errors WHERE job_id = $1 AND phase = 'finalize'",
        [jobId],
      );
      expect(errors).toHaveLength(1);
      expect(errors[0]!.errors[0]).toMatchObject({ rule: 'database' });
      expect(errors[0]!.errors[0]!.message).toMatch(/the database refused the row: .*test_short_product_names/);
      expect(errors[0]!.errors[0]!.message).not.toContain('Failing row contains');
    } finally {
      await env.pool.query('ALTER TABLE products DROP CONSTRAINT test_short_product_names');
    }
  });

  it('a run reads only the configured bucket, and only its own tenant\'s uploads (imports/<tenant>/…)', async () => {
    const body = [HEADER, rowFields(validRow(1, 'FOREIGN'))].map((fields) => csvLine(fields)).join('');
    await upload(env.s3, env.bucket, 'imports/globex/private.csv', body);
    await upload(env.s3, env.bucket, 'imports/acme-other/private.csv', body);
    await upload(env.s3, env.bucket, 'elsewhere/private.csv', body);

    const otherBucket = await settled(await importObject('imports/acme/x.csv', { bucket: 'someone-elses-bucket' }));
    expect(otherBucket).toMatchObject({ state: 'failed', attempts: 1, lastError: expect.objectContaining({ code: 'CSV_BUCKET_NOT_ALLOWED', class: 'permanent' }) });
    expect(otherBucket.lastError!.message).toContain(`"${env.bucket}"`);
    expect(otherBucket.lastError!.message).toContain('"someone-elses-bucket"');

    for (const key of ['imports/globex/private.csv', 'imports/acme-other/private.csv', 'elsewhere/private.csv', 'imports/acme/../globex/private.csv', 'imports/acme/']) {
      const refused = await settled(await importObject(key));
      expect(refused, key).toMatchObject({ state: 'failed', attempts: 1, lastError: expect.objectContaining({ code: 'CSV_KEY_NOT_ALLOWED' }) });
      expect(refused.lastError!.message).toContain('may read only objects under "imports/acme/"');
    }
    expect(await count("SELECT count(*)::int AS n FROM csv_import_runs r JOIN jobs j ON j.id = r.job_id WHERE r.object_key NOT LIKE 'imports/acme/%'")).toBe(0);
  });

  it('finalize refuses runs that are not CSV imports in review', async () => {
    const { job } = await submitJob(env.pool, { kind: 'noop', payload: {} });
    await expect(finalizeImport(env.pool, job.id)).rejects.toThrow(/noop run, not a CSV import/);
    await expect(finalizeImport(env.pool, 999_999)).rejects.toThrow(/does not exist/);
  });

  it('while a run is active, importing the same object again returns it', async () => {
    const rows = [HEADER, rowFields(validRow(1, 'DUP'))];
    await upload(env.s3, env.bucket, 'imports/acme/same.csv', rows.map((fields) => csvLine(fields)).join(''));
    const first = await importObject('imports/acme/same.csv');
    expect((await settled(first)).state).toBe('review_ready');
    const second = await submitJob(env.pool, { kind: 'csv-import', tenantId: TENANT, payload: { bucket: env.bucket, key: 'imports/acme/same.csv', profile: 'products' } });
    expect(second).toMatchObject({ reused: true, job: { id: first } });
  });
});
