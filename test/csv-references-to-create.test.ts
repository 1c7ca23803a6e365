// CSV review: validation counts the references finalize will create (distinct names of valid rows their tables lack,
// less the names only duplicate rows carry), and finalize then creates exactly those.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { finalizeImport, submitJob } from '../worker/api.js';
import { csvFinalizeHandler } from '../worker/handlers/csv-finalize.js';
import { csvValidateHandler } from '../worker/handlers/csv-validate.js';
import { productsProfile } from '../worker/imports/csv/profiles/products.js';
import { MAX_NAMES_TO_CREATE, ReferencesToCreate } from '../worker/imports/csv/references-to-create.js';
import type { Worker } from '../worker/runner/worker.js';
import { csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { settledJob, testWorker } from './support/in-process-worker.js';

const env = useTestEnvironment();
const TENANT = 'refs-tenant';
let worker: Worker;

beforeAll(async () => {
  worker = testWorker(env, [csvValidateHandler, csvFinalizeHandler], { leaseMs: 30_000, heartbeatMs: 1_000 });
  await worker.start();
});
afterAll(async () => {
  await worker?.stop();
});

it('validation counts 3 categories to create (2 exist, one new name on several rows); finalize creates those 3', async () => {
  await env.pool.query(`INSERT INTO categories (tenant_id, name) VALUES ($1, 'Old A'), ($1, 'Old B'), ('another-tenant', 'New 1')`, [TENANT]);
  await env.pool.query(`INSERT INTO suppliers (tenant_id, name) VALUES ($1, 'Known supplier')`, [TENANT]);
  const categories = ['Old A', 'Old B', 'New 1', 'New 1', 'New 1', 'New 2', 'New 3', 'Old A'];
  const rows = categories.map((category, i) => rowFields({ ...validRow(i + 1, 'REF'), category, supplier: 'Known supplier', location: '' }));
  // An invalid row (no price) naming a category of its own: not counted, not created.
  rows.push(rowFields({ ...validRow(99, 'REF'), price: '', category: 'Only on a bad row', supplier: 'Known supplier', location: '' }));
  await upload(env.s3, env.bucket, 'imports/refs-tenant/products.csv', [HEADER, ...rows].map((fields) => csvLine(fields)).join(''));
  const { job } = await submitJob(env.pool, {
    kind: 'csv-import',
    tenantId: TENANT,
    payload: { bucket: env.bucket, key: 'imports/refs-tenant/products.csv', profile: 'products' },
  });

  const reviewed = await settledJob(env.pool, job.id, 60_000);
  expect(reviewed.lastError?.message ?? reviewed.state).toBe('review_ready');
  expect(reviewed.result).toMatchObject({ valid: 8, invalid: 1, referencesToCreate: { categories: 3, suppliers: 0, locations: 0 } });
  const categoriesBefore = await env.pool.query(`SELECT count(*)::int AS n FROM categories WHERE tenant_id = $1`, [TENANT]);
  expect(categoriesBefore.rows[0].n).toBe(2);

  await finalizeImport(env.pool, job.id);
  const finalized = await settledJob(env.pool, job.id, 60_000);
  expect(finalized.state).toBe('partial'); // the invalid row is not written
  expect(finalized.result).toMatchObject({ inserted: 8, referencesCreated: { categories: 3 } });
  const { rows: created } = await env.pool.query<{ name: string }>(
    `SELECT name FROM categories WHERE tenant_id = $1 AND name NOT IN ('Old A', 'Old B') ORDER BY name`,
    [TENANT],
  );
  expect(created.map((row) => row.name)).toEqual(['New 1', 'New 2', 'New 3']);
});

it('a duplicate row takes back the names only it named: they are not counted, and finalize does not create them', async () => {
  const tenant = 'refs-duplicates';
  // Row 2 names the new category "Tools"; row 3 repeats its SKU with "Garden" (a duplicate: not written); row 4,
  // another SKU, names "Tools" too. A duplicate of row 4 that also names "Tools" leaves "Tools" counted once.
  const rows = [
    rowFields({ ...validRow(1, 'DUP'), category: 'Tools', supplier: '', location: '' }),
    rowFields({ ...validRow(1, 'DUP'), category: 'Garden', supplier: '', location: '' }),
    rowFields({ ...validRow(2, 'DUP'), category: 'Tools', supplier: '', location: '' }),
    rowFields({ ...validRow(2, 'DUP'), category: 'Tools', supplier: '', location: '' }),
  ];
  await upload(env.s3, env.bucket, `imports/${tenant}/products.csv`, [HEADER, ...rows].map((fields) => csvLine(fields)).join(''));
  const { job } = await submitJob(env.pool, {
    kind: 'csv-import',
    tenantId: tenant,
    payload: { bucket: env.bucket, key: `imports/${tenant}/products.csv`, profile: 'products' },
  });
  const reviewed = await settledJob(env.pool, job.id, 60_000);
  expect(reviewed.lastError?.message ?? reviewed.state).toBe('review_ready');
  expect(reviewed.result).toMatchObject({ valid: 2, invalid: 2, duplicates: 2, referencesToCreate: { categories: 1 } });

  await finalizeImport(env.pool, job.id);
  const finalized = await settledJob(env.pool, job.id, 60_000);
  expect(finalized.result).toMatchObject({ inserted: 2, referencesCreated: { categories: 1 } });
  const { rows: created } = await env.pool.query<{ name: string }>(`SELECT name FROM categories WHERE tenant_id = $1`, [tenant]);
  expect(created.map((row) => row.name)).toEqual(['Tools']);
});

it('counts at most MAX_NAMES_TO_CREATE new names per table and says the figure is a floor past it', async () => {
  // Millions of new names (one per row) must not be held: past the limit only a floor is kept.
  const columns = productsProfile.columns;
  const category = columns.findIndex((column) => column.reference?.table === 'categories');
  const supplier = columns.findIndex((column) => column.reference?.table === 'suppliers');
  await env.pool.query(`INSERT INTO categories (tenant_id, name) VALUES ('floor-tenant', 'Known')`);
  const references = new ReferencesToCreate(columns, 'floor-tenant', 5);
  const row = (categoryName: string, supplierName: string) => {
    const values: Array<string | null> = columns.map(() => null);
    values[category] = categoryName;
    values[supplier] = supplierName;
    return values;
  };
  for (let i = 0; i < 12; i += 1) references.add(row(i % 4 === 0 ? 'Known' : `New ${i}`, `Supplier ${i % 2}`));
  await references.flush(env.pool);
  for (let i = 12; i < 20; i += 1) references.add(row(`New ${i}`, 'Supplier 0'));
  await references.flush(env.pool);
  expect(references.counts()).toMatchObject({ categories: 5, suppliers: 2 });
  expect(references.countedInPart()).toEqual(['categories']);
  expect(MAX_NAMES_TO_CREATE).toBe(100_000);
});
