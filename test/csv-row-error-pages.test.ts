// Pages of a CSV run's row errors (worker/imports/csv/row-errors.ts, pageOfRowErrors): the API's error pages and the
// review page read them by keyset on every request, so their statement is prepared and must run on its generic plan.
import { expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import { insertRowErrors, listRowErrors, pageOfRowErrors, ROW_ERRORS_PAGE_BYTES, rowErrorsExportRefusal, writeRowErrorsCsv } from '../worker/imports/csv/row-errors.js';
import type { RowIssue } from '../worker/imports/csv/row-validator.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

it('pages row errors in row order, on the generic plan after the first five pages', async () => {
  // A big import's 20,000 failed rows (every other row of its file) beside a small one's 50: most of the table is one
  // job's, as with the million-error import of bench:api.
  const { job } = await enqueueJob(env.pool, { kind: 'csv-error-pages', payload: {} });
  const { job: small } = await enqueueJob(env.pool, { kind: 'csv-error-pages', payload: { small: true } });
  for (const [id, count] of [[job.id, 20_000], [small.id, 50]]) {
    await env.pool.query(
      `INSERT INTO csv_import_row_errors (job_id, row_number, phase, fields, errors)
       SELECT $1, 2 * g, 'validate', ARRAY['SKU-' || g, 'x'], '[{"column": "price", "rule": "number", "message": "price is not a number"}]'
       FROM generate_series(1, $2::int) g`,
      [id, count],
    );
  }
  await env.pool.query('VACUUM ANALYZE csv_import_row_errors');
  const client = await env.pool.connect();
  try {
    let after = 0;
    for (let page = 0; page < 8; page += 1) {
      const { errors: rows, more } = await pageOfRowErrors(client, job.id, after, 100);
      expect(more).toBe(true);
      expect(rows.map((row) => row.row)).toEqual(Array.from({ length: 100 }, (_, i) => after + 2 * (i + 1)));
      expect(rows[0]!.fields).toEqual([`SKU-${after / 2 + 1}`, 'x']);
      after = rows[rows.length - 1]!.row;
    }
    // Postgres plans a prepared statement's first five executions for their values, then keeps the generic plan
    // only when it costs no more. Given the values, a page of the big job always cost less: every page was planned
    // again.
    const { rows: plans } = await client.query<{ generic_plans: string; custom_plans: string }>(
      `SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = 'bulk-import-row-errors-page'`,
    );
    expect(plans.map((row) => [Number(row.generic_plans), Number(row.custom_plans)])).toEqual([[3, 5]]);
    // The generic plan reads the page's range of the primary key in row order: no sort, no scan of the job's errors.
    const { rows: explained } = await client.query(`EXPLAIN EXECUTE "bulk-import-row-errors-page"(${job.id}, 10000, 100, 0, ${ROW_ERRORS_PAGE_BYTES})`);
    const plan = explained.map((row) => row['QUERY PLAN'] as string).join('\n');
    expect(plan).toMatch(/Index Scan using csv_import_row_errors_pkey/);
    expect(plan).not.toMatch(/Sort|Seq Scan|Bitmap/);

    // The generic plan reads any job's page and any offset (the CLI's pages) right.
    expect(await pageOfRowErrors(client, small.id, 90, 100)).toMatchObject({ errors: [92, 94, 96, 98, 100].map((row) => ({ row })), more: false });
    expect((await pageOfRowErrors(client, job.id, 0, 3, 400)).errors.map((row) => row.row)).toEqual([802, 804, 806]);
  } finally {
    client.release();
  }
});

it('a page holds at most its byte budget of long rows (at least one), says more follow, and the export still writes every row', async () => {
  // Twelve failed rows of a million characters each (a row may be that long, and a failed one is kept whole), stored
  // as the worker stores them: with their weight.
  const { job } = await enqueueJob(env.pool, { kind: 'csv-error-pages', payload: { long: true } });
  const issues = [{ column: 'description', rule: 'max_length', message: 'too long' }] as RowIssue[];
  await insertRowErrors(
    env.pool,
    job.id,
    'validate',
    Array.from({ length: 12 }, (_, i) => ({ row: i + 1, fields: [`SKU-${i + 1}`, 'd'.repeat(1_000_000)], issues })),
  );
  const { rows: weights } = await env.pool.query<{ size_bytes: number }>('SELECT DISTINCT size_bytes FROM csv_import_row_errors WHERE job_id = $1 AND row_number < 10', [job.id]);
  // The fields' bytes, 8 a field more (its slot in memory, its quotes in JSON), and the issues' JSON.
  expect(weights).toEqual([{ size_bytes: 1_000_005 + 2 * 8 + Buffer.byteLength(JSON.stringify(issues)) }]);
  const pages: number[][] = [];
  let after = 0;
  for (;;) {
    const { errors, more } = await pageOfRowErrors(env.pool, job.id, after, 1000);
    pages.push(errors.map((error) => error.row));
    const bytes = errors.reduce((sum, error) => sum + error.fields!.join('').length, 0);
    // Under the budget but for the last row, which began under it.
    expect(bytes - 1_000_006).toBeLessThan(ROW_ERRORS_PAGE_BYTES);
    if (!more) break;
    after = errors.at(-1)!.row;
  }
  expect(pages).toEqual([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]);
  // The CLI's pages (offset paging) are cut the same way; it prints where the next one starts.
  expect((await listRowErrors(env.pool, job.id, { limit: 50, offset: 0 })).rows.map((row) => row.row)).toEqual([1, 2, 3, 4, 5]);
  // One row longer than the budget is a page of its own.
  expect((await pageOfRowErrors(env.pool, job.id, 0, 1000, 0, 10)).errors.map((error) => error.row)).toEqual([1]);

  // A validation that read its file to the end: its row errors are the whole list, exported.
  await env.pool.query(`INSERT INTO csv_import_runs (job_id, tenant_id, bucket, object_key, profile, header, columns, delimiter, validation_ended_at) VALUES ($1, 't', 'b', 'k.csv', 'products', ARRAY['sku', 'description'], ARRAY['sku', 'description'], ',', now())`, [job.id]);
  const out = new PassThrough();
  let lines = 0;
  out.on('data', (chunk: Buffer) => (lines += chunk.toString().split('\r\n').length - 1));
  expect(await writeRowErrorsCsv(env.pool, job.id, out)).toBe(12);
  expect(lines).toBe(13);
});

it('a row of empty fields weighs its fields, not their text: a million commas is a page of its own', async () => {
  // A row of 600,000 commas is 600,001 empty fields (a field_count error, kept whole): 1.8 MB of JSON in a page.
  const { job } = await enqueueJob(env.pool, { kind: 'csv-error-pages', payload: { commas: true } });
  const issues = [{ rule: 'field_count', message: 'expected 5 fields, found 600001' }] as RowIssue[];
  await insertRowErrors(env.pool, job.id, 'validate', Array.from({ length: 3 }, (_, i) => ({ row: i + 2, fields: new Array<string>(600_001).fill(''), issues })));
  const pages: number[][] = [];
  let after = 0;
  for (;;) {
    const { errors, more } = await pageOfRowErrors(env.pool, job.id, after, 1000);
    pages.push(errors.map((error) => error.row));
    expect(errors.every((error) => error.fields!.length === 600_001)).toBe(true);
    if (!more) break;
    after = errors.at(-1)!.row;
  }
  expect(pages).toEqual([[2], [3], [4]]);
});

it('a run validated by a build from before validation_ended_at (a rolling deploy) still exports; one never ended does not', async () => {
  const insertRun = async (validatedAt: 'now()' | 'NULL') => {
    const { job } = await enqueueJob(env.pool, { kind: 'csv-error-pages', payload: { ended: validatedAt } });
    await env.pool.query(
      `INSERT INTO csv_import_runs (job_id, tenant_id, bucket, object_key, profile, header, columns, delimiter, validated_at)
       VALUES ($1, 't', 'b', 'k.csv', 'products', ARRAY['sku'], ARRAY['sku'], ',', ${validatedAt})`,
      [job.id],
    );
    return job.id;
  };
  expect(await rowErrorsExportRefusal(env.pool, await insertRun('now()'))).toBeNull();
  expect(await rowErrorsExportRefusal(env.pool, await insertRun('NULL'))).toMatchObject({ reason: 'validation-unfinished' });
});
