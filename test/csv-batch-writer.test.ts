// One finalize batch against the real Postgres (batch-writer.ts): the one-round-trip COPY, the upsert it falls back
// to, the checks that open every batch transaction (lease, reference ids, the batch mark), and a reference deleted
// while the worker had its id cached.
import { Writable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runScriptWithCopyData } from '../worker/db/copy-from.js';
import type { PoolClient } from '../worker/db/pool.js';
import { BatchWriter, type Batch } from '../worker/imports/csv/batch-writer.js';
import { readHeader } from '../worker/imports/csv/header.js';
import { findProfile } from '../worker/imports/csv/profiles/index.js';
import { ReferenceIds } from '../worker/imports/csv/reference-ids.js';
import { RowValidator } from '../worker/imports/csv/row-validator.js';
import { buildTargetStatements } from '../worker/imports/csv/target-sql.js';
import { createLogger } from '../worker/logger.js';
import { leaseHeldCondition, LeaseLostError } from '../worker/queue/lease.js';
import { HEADER, rowFields, validRow, type ProductRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();
const profile = findProfile('products')!;
const layout = readHeader(profile, { line: 1, fields: HEADER }, { bucket: 'b', key: 'k', encoding: 'utf-8' });
const validator = new RowValidator(layout);
let client: PoolClient;
let jobId: number;
let logLines: Array<{ msg: string }> = [];
const log = createLogger({
  level: 'debug',
  format: 'json',
  destination: new Writable({
    write(chunk, _encoding, done) {
      logLines.push(JSON.parse(String(chunk)) as { msg: string });
      done();
    },
  }),
});

function batchOf(batchNumber: number, rows: ProductRow[], firstLine = 2): Batch {
  return {
    batchNumber,
    invalid: [],
    chars: 0,
    rows: rows.map((row, index) => {
      const check = validator.check(rowFields(row));
      if (!check.ok) throw new Error(`fixture row ${row.sku} is invalid`);
      return { row: firstLine + index, values: check.values, fields: null };
    }),
  };
}

function writer(tenant: string, lease = leaseHeldCondition({ jobId, owner: 'test-worker', attempt: 1 })): BatchWriter {
  return new BatchWriter({
    jobId,
    tenant,
    statements: buildTargetStatements(profile, layout.columns, tenant, jobId),
    layout,
    references: new ReferenceIds(layout.columns, tenant, jobId),
    log,
    leaseHeldCondition: lease,
  });
}

async function products(tenant: string): Promise<Array<{ sku: string; category: string | null; name: string }>> {
  const { rows } = await env.pool.query(
    `SELECT p.sku, c.name AS category, p.name FROM products p LEFT JOIN categories c ON c.id = p.category_id
     WHERE p.tenant_id = $1 ORDER BY p.sku`,
    [tenant],
  );
  return rows;
}

beforeAll(async () => {
  client = await env.pool.connect();
  const { rows } = await env.pool.query<{ id: number }>(
    `INSERT INTO jobs (kind, state, lease_owner, attempts, lease_expires_at)
     VALUES ('csv-finalize', 'running', 'test-worker', 1, now() + interval '1 hour') RETURNING id`,
  );
  jobId = rows[0]!.id;
  await env.pool.query(
    `INSERT INTO csv_import_runs (job_id, profile, tenant_id, bucket, object_key, delimiter, header, columns)
     VALUES ($1, 'products', 'bw', 'b', 'k', ',', $2, $3)`,
    [jobId, HEADER, layout.columns.map((column) => column.name)],
  );
});
afterAll(() => client?.release());
beforeEach(async () => {
  logLines = [];
  await env.pool.query('DELETE FROM csv_import_batches WHERE job_id = $1', [jobId]);
  await env.pool.query(
    `INSERT INTO csv_import_batches (job_id, batch_number, first_row, last_row, row_count) SELECT $1, n, 2, 2, 0 FROM generate_series(1, 20) n`,
    [jobId],
  );
});

const marked = async (batch: number) =>
  (await env.pool.query('SELECT finalized_at IS NOT NULL AS marked, rows_inserted, rows_updated, rows_unchanged FROM csv_import_batches WHERE job_id = $1 AND batch_number = $2', [jobId, batch])).rows[0];

describe('a finalize batch', () => {
  it('new keys go in with COPY and the batch is marked; keys that exist take the upsert, unchanged rows are left alone', async () => {
    const batches = writer('bw-new');
    const rows = Array.from({ length: 30 }, (_, i) => validRow(i + 1, 'NEW'));
    expect(await batches.write(client, batchOf(1, rows))).toEqual({ inserted: 30, updated: 0, unchanged: 0, failed: 0 });
    expect(await marked(1)).toEqual({ marked: true, rows_inserted: 30, rows_updated: 0, rows_unchanged: 0 });
    // The same keys again, two of them changed: upserted.
    const again = rows.map((row, i) => (i < 2 ? { ...row, name: `Renamed ${i}` } : row));
    expect(await batches.write(client, batchOf(2, again))).toEqual({ inserted: 0, updated: 2, unchanged: 28, failed: 0 });
    expect(await marked(2)).toEqual({ marked: true, rows_inserted: 0, rows_updated: 2, rows_unchanged: 28 });
    expect((await products('bw-new')).map((row) => row.name).slice(0, 3)).toEqual(['Renamed 0', 'Renamed 1', 'Product 3']);
  });

  it('after batches of new keys the check is skipped; a key that exists then fails the COPY and the batch is upserted', async () => {
    const batches = writer('bw-streak');
    for (let batch = 1; batch <= 5; batch++) {
      await batches.write(client, batchOf(batch, Array.from({ length: 10 }, (_, i) => validRow(batch * 100 + i, 'STK'))));
    }
    // Keys of batch 1 again, plus new ones: the COPY meets a unique violation, the upsert writes the batch.
    const mixed = [...Array.from({ length: 5 }, (_, i) => validRow(100 + i, 'STK')), ...Array.from({ length: 5 }, (_, i) => validRow(900 + i, 'STK'))];
    expect(await batches.write(client, batchOf(6, mixed))).toEqual({ inserted: 5, updated: 0, unchanged: 5, failed: 0 });
    expect(logLines.some((line) => line.msg === 'a key of the batch exists; upserting the batch')).toBe(true);
    expect((await products('bw-streak')).length).toBe(55);
  });

  it('writes nothing when the lease is lost, or when the batch was marked already', async () => {
    const lost = writer('bw-lease', leaseHeldCondition({ jobId, owner: 'another-worker', attempt: 1 }));
    await expect(lost.write(client, batchOf(1, [validRow(1, 'LEASE')]))).rejects.toBeInstanceOf(LeaseLostError);
    expect(await marked(1)).toMatchObject({ marked: false });

    const batches = writer('bw-lease');
    await batches.write(client, batchOf(2, [validRow(1, 'LEASE')]));
    await expect(batches.write(client, batchOf(2, [validRow(2, 'LEASE')]))).rejects.toMatchObject({ code: 'CSV_FINALIZE_CURSOR' });
    expect((await products('bw-lease')).map((row) => row.sku)).toEqual(['LEASE-0000001']);
    // The connection is usable after each refusal.
    expect((await client.query('SELECT 1 AS one')).rows).toEqual([{ one: 1 }]);
  });

  it('a reference deleted while its id was cached is noticed by the next batch, created again and used', async () => {
    const batches = writer('bw-doomed');
    await batches.write(client, batchOf(1, Array.from({ length: 5 }, (_, i) => ({ ...validRow(i + 1, 'DOOM'), category: 'Doomed' }))));
    // A backend removes the category (and the products that named it) between two batches.
    await env.pool.query(`DELETE FROM products WHERE tenant_id = 'bw-doomed'`);
    await env.pool.query(`DELETE FROM categories WHERE tenant_id = 'bw-doomed' AND name = 'Doomed'`);
    await batches.write(client, batchOf(2, Array.from({ length: 5 }, (_, i) => ({ ...validRow(i + 10, 'DOOM'), category: 'Doomed' }))));
    expect(logLines.some((line) => line.msg === 'a reference table the batch uses had rows deleted meanwhile; looking its names up again')).toBe(true);
    const written = await products('bw-doomed');
    expect(written.length).toBe(5);
    // Every product points at the category row that exists now.
    expect(written.every((row) => row.category === 'Doomed')).toBe(true);
  });

  it('a deletion from a reference table seen while a batch looks up new names: the names it had cached are looked up again too', async () => {
    const batches = writer('bw-mixed');
    await batches.write(client, batchOf(1, [{ ...validRow(1, 'MIX'), category: 'Kept' }, { ...validRow(2, 'MIX'), category: 'Unrelated' }]));
    // Someone deletes an unrelated category (after reassigning its product): the table's deletion count moves on.
    await env.pool.query(`UPDATE products SET category_id = NULL WHERE tenant_id = 'bw-mixed' AND sku = 'MIX-0000002'`);
    await env.pool.query(`DELETE FROM categories WHERE tenant_id = 'bw-mixed' AND name = 'Unrelated'`);
    // The next batch names a cached category and a new one: nothing refused, both resolved.
    const counts = await batches.write(client, batchOf(2, [{ ...validRow(3, 'MIX'), category: 'Kept' }, { ...validRow(4, 'MIX'), category: 'New' }]));
    expect(counts).toEqual({ inserted: 2, updated: 0, unchanged: 0, failed: 0 });
    expect((await products('bw-mixed')).map((row) => row.category)).toEqual(['Kept', null, 'Kept', 'New']);
  });

  it('every reference table of every profile counts its deletions (the trigger finalize relies on)', async () => {
    const { profileNames } = await import('../worker/imports/csv/profiles/index.js');
    const tables = [
      ...new Set(profileNames().flatMap((name) => findProfile(name)!.columns.flatMap((column) => (column.reference ? [column.reference.table] : [])))),
    ];
    expect(tables.length).toBeGreaterThan(0);
    const { rows } = await env.pool.query<{ table: string }>(
      `SELECT c.relname AS table FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid
       WHERE p.proname = 'count_reference_deletions' AND NOT t.tgisinternal`,
    );
    expect(rows.map((row) => row.table).sort()).toEqual(expect.arrayContaining(tables.sort()));
    await env.pool.query(`INSERT INTO categories (tenant_id, name) VALUES ('bw-count', 'a'), ('bw-count', 'b')`);
    const before = await env.pool.query(`SELECT coalesce((SELECT deletions FROM reference_deletions WHERE table_name = 'categories'), 0)::int AS n`);
    await env.pool.query(`DELETE FROM categories WHERE tenant_id = 'bw-count'`);
    const after = await env.pool.query(`SELECT deletions::int AS n FROM reference_deletions WHERE table_name = 'categories'`);
    expect(after.rows[0].n).toBe(before.rows[0].n + 1);
  });
});

describe('runScriptWithCopyData', () => {
  it('sends statements and COPY data in one go; a failed statement before the COPY drops the data', async () => {
    await client.query('CREATE TEMPORARY TABLE script_copy (n integer)');
    const ok = await runScriptWithCopyData(client, 'BEGIN; SELECT 1; COPY script_copy (n) FROM STDIN; COMMIT', ['1\n', '2\n', '3\n']);
    expect(ok.commandTags).toEqual(['BEGIN', 'SELECT 1', 'COPY 3', 'COMMIT']);
    await expect(
      runScriptWithCopyData(client, `BEGIN; SELECT bulk_import_check(false, 'nope'); COPY script_copy (n) FROM STDIN; COMMIT`, ['4\n']),
    ).rejects.toMatchObject({ message: 'nope', hint: 'bulk-import-check' });
    await client.query('ROLLBACK');
    await expect(runScriptWithCopyData(client, 'COPY script_copy (n) FROM STDIN', ['5\n', 'x\n'])).rejects.toMatchObject({ code: '22P02' });
    // Only the first script's rows are there, and the connection still works.
    expect((await client.query('SELECT array_agg(n ORDER BY n) AS n FROM script_copy')).rows[0].n).toEqual([1, 2, 3]);
  });
});
