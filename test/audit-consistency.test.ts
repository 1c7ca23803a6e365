// The `audit` job kind against real Postgres and S3: after CSV imports and a (simulated) mass import, the backend
// deletes a category, points a product at another tenant's supplier, deletes a product, loses an object and leaves an
// orphan; the audit — enqueued with the CLI, run by a worker in keyset batches — stores exactly those findings, lists
// them (--json, --csv), explains row-count differences caused by later imports, and `audit repair` recreates the
// missing references by name from the import's source rows only when asked (--apply).
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { AUDIT_CHECK_GROUPS, runConsistencyAudit } from '../worker/audit/consistency-audit.js';
import { auditHandler } from '../worker/handlers/audit.js';
import { csvFinalizeHandler } from '../worker/handlers/csv-finalize.js';
import { csvValidateHandler } from '../worker/handlers/csv-validate.js';
import { assertLeaseHeld, LeaseLostError } from '../worker/queue/lease.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { runCli, runCliJson } from './support/cli-runner.js';
import { settledJob, testWorker } from './support/in-process-worker.js';

const env = useTestEnvironment();
let worker: Worker;
const ROWS = 600;

beforeAll(async () => {
  worker = testWorker(env, [csvValidateHandler, csvFinalizeHandler, auditHandler], { leaseMs: 30_000, heartbeatMs: 1_000 });
  await worker.start();
});
afterAll(async () => worker?.stop());

const settled = (jobId: number): Promise<JobRow> => settledJob(env.pool, jobId, 60_000);

async function importFile(tenant: string, name: string, rows: number, price = ''): Promise<number> {
  const key = `imports/${tenant}/${name}.csv`;
  const lines = Array.from({ length: rows }, (_, i) => csvLine(rowFields({ ...validRow(i + 1), ...(price ? { price } : {}) })));
  await upload(env.s3, env.bucket, key, csvLine(HEADER) + lines.join(''));
  const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: tenant, payload: { bucket: env.bucket, key, profile: 'products', autoFinalize: true } });
  const done = await settled(job.id);
  expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
  return job.id;
}

async function id(sql: string, params: unknown[]): Promise<number> {
  return Number((await env.pool.query(sql, params)).rows[0].id);
}

interface Findings {
  total: number;
  byCheck: Record<string, number>;
  findings: Array<{
    id: number;
    check: string;
    tenantId: string | null;
    subject: string;
    subjectId: number | null;
    details: Record<string, unknown>;
    repairedAt: string | null;
  }>;
}

describe('audit job kind', () => {
  let auditId: number;
  let categoryOfRow1: string;
  const runs: Record<string, number> = {};

  it('finds dangling references, unexplained row counts and documents/objects that disagree', async () => {
    runs.first = await importFile('acme', 'first', ROWS);
    // A later import of the first 100 keys with a new price takes them over: run `first` carries 100 rows fewer.
    runs.later = await importFile('acme', 'later', 100, '1.00');
    runs.other = await importFile('globex', 'other', 50);

    // The backend deletes "Category 1" of acme (products keep its id), and points one acme product at globex's supplier.
    categoryOfRow1 = validRow(1).category;
    const deleted = await id(`DELETE FROM categories WHERE tenant_id = 'acme' AND name = $1 RETURNING id`, [categoryOfRow1]);
    const affected = (await env.pool.query(`SELECT count(*)::int AS n FROM products WHERE tenant_id = 'acme' AND category_id = $1`, [deleted])).rows[0].n;
    expect(affected).toBeGreaterThan(0);
    const globexSupplier = await id(`SELECT id FROM suppliers WHERE tenant_id = 'globex' ORDER BY id LIMIT 1`, []);
    const crossTenant = await id(`UPDATE products SET supplier_id = $1 WHERE tenant_id = 'acme' AND sku = 'SKU-0000500' RETURNING id`, [globexSupplier]);
    // ... and deletes two globex products: nothing later explains the missing rows of run `other`.
    await env.pool.query(`DELETE FROM products WHERE tenant_id = 'globex' AND sku IN ('SKU-0000010', 'SKU-0000011')`);
    // Mass-import side: a documents row whose object is gone, and an object without a row.
    await env.pool.query(
      `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
       VALUES ('acme', 'scans/lost.pdf', repeat('a', 64), 3, 'application/pdf', $1, 'imports/acme/documents/lost.pdf')`,
      [env.bucket],
    );
    await env.s3.send(new PutObjectCommand({ Bucket: env.bucket, Key: 'imports/acme/documents/orphan.pdf', Body: 'pdf' }));

    // Small batches so the walk takes many keyset steps.
    const started = await runCliJson<{ id: number; reused: boolean }>(env, ['audit', 'start', '--batch-size', '100']);
    expect(started.reused).toBe(false);
    auditId = started.id;
    const audit = await settled(auditId);
    expect(audit.state, JSON.stringify(audit.lastError)).toBe('succeeded');
    const result = audit.result as Record<string, unknown>;
    expect(result).toMatchObject({
      productsScanned: ROWS + 48,
      csvRunsChecked: 3,
      csvRunsExplained: 1,
      documents: { rowsWithoutObject: 1, orphanObjects: 1 },
    });
    expect(result.batches as number).toBeGreaterThanOrEqual(7);

    const listed = await runCliJson<Findings>(env, ['audit', 'findings', String(auditId), '--limit', '1000']);
    expect(listed.byCheck).toEqual({
      'missing-reference': affected + 1,
      'csv-run-count': 1,
      'document-without-object': 1,
      'object-without-document': 1,
    });
    expect(result.findings).toBe(listed.total);
    // The subcommand's own --limit (`audit` has one of its own too).
    const two = await runCliJson<Findings>(env, ['audit', 'findings', String(auditId), '--limit', '2']);
    expect([two.findings.length, two.total]).toEqual([2, listed.total]);
    const references = listed.findings.filter((finding) => finding.check === 'missing-reference');
    expect(references.filter((finding) => finding.details.column === 'category_id').every((finding) => finding.details.referencedId === deleted)).toBe(true);
    expect(references.find((finding) => finding.details.column === 'supplier_id')).toMatchObject({
      subjectId: crossTenant,
      tenantId: 'acme',
      details: { sku: 'SKU-0000500', referencedTable: 'suppliers', referencedId: globexSupplier },
    });
    expect(listed.findings.find((finding) => finding.check === 'csv-run-count')).toMatchObject({
      subjectId: runs.other,
      details: { written: 50, carrying: 48, takenOverByLaterImports: 0 },
    });
    expect(listed.findings.find((finding) => finding.check === 'document-without-object')?.subject).toContain('imports/acme/documents/lost.pdf');
    expect(listed.findings.find((finding) => finding.check === 'object-without-document')?.subject).toBe(
      `s3://${env.bucket}/imports/acme/documents/orphan.pdf`,
    );

    const csv = await runCli(env, ['audit', 'findings', String(auditId), '--csv']);
    expect(csv.code).toBe(0);
    const records = parse(csv.stdout) as string[][];
    expect(records[0]).toEqual(['id', 'check', 'tenant', 'subject', 'subject_id', 'details', 'repaired_at', 'repair']);
    expect(records).toHaveLength(listed.total + 1);
    expect(JSON.parse(records.find((record) => record[1] === 'csv-run-count')![5]!)).toMatchObject({ written: 50, carrying: 48 });

    const auditRuns = await runCliJson<Array<{ id: number; findings: number }>>(env, ['audit', 'runs']);
    expect(auditRuns[0]).toMatchObject({ id: auditId, findings: listed.total });
  });

  it('an attempt that lost its lease neither deletes nor adds findings of the run', async () => {
    const before = (await env.pool.query(`SELECT id FROM audit_findings WHERE job_id = $1 ORDER BY id`, [auditId])).rows;
    expect(before.length).toBeGreaterThan(0);
    // A worker that froze past its lease resumes the walk of a run that another attempt (here: the finished one) owns.
    const stale = runConsistencyAudit({
      pool: env.pool,
      auditJobId: auditId,
      assertLeaseHeld: (db) => assertLeaseHeld(db, { jobId: auditId, owner: 'frozen-worker', attempt: 1 }),
      checks: [...AUDIT_CHECK_GROUPS],
      tenantId: null,
      batchSize: 100,
      s3: env.s3,
      bucket: env.bucket,
      documentsPrefix: 'imports/',
      listLimit: 100,
      signal: new AbortController().signal,
    });
    await expect(stale).rejects.toBeInstanceOf(LeaseLostError);
    expect((await env.pool.query(`SELECT id FROM audit_findings WHERE job_id = $1 ORDER BY id`, [auditId])).rows).toEqual(before);
  });

  it('repair changes nothing without --apply, then recreates the references by name from the source rows', async () => {
    const before = await env.pool.query(`SELECT id, category_id, supplier_id FROM products ORDER BY id`);
    const dry = await runCliJson<{ applied: boolean; entries: Array<{ action: string; column: string; name?: string }> }>(env, [
      'audit', 'repair', String(auditId),
    ]);
    expect(dry.applied).toBe(false);
    expect(dry.entries.every((entry) => entry.action === 'would-recreate')).toBe(true);
    expect(new Set(dry.entries.filter((entry) => entry.column === 'category_id').map((entry) => entry.name))).toEqual(new Set([categoryOfRow1]));
    expect((await env.pool.query(`SELECT id, category_id, supplier_id FROM products ORDER BY id`)).rows).toEqual(before.rows);

    const applied = await runCliJson<{ entries: Array<{ action: string; column: string; newId?: number }> }>(env, ['audit', 'repair', String(auditId), '--apply']);
    expect(applied.entries.every((entry) => entry.action === 'recreated')).toBe(true);
    const recreated = await id(`SELECT id FROM categories WHERE tenant_id = 'acme' AND name = $1`, [categoryOfRow1]);
    expect(new Set(applied.entries.filter((entry) => entry.column === 'category_id').map((entry) => entry.newId))).toEqual(new Set([recreated]));
    // The cross-tenant supplier id now names acme's own supplier of that name (it existed: found, not created).
    const supplier = await env.pool.query(
      `SELECT s.tenant_id, s.name FROM products p JOIN suppliers s ON s.id = p.supplier_id WHERE p.tenant_id = 'acme' AND p.sku = 'SKU-0000500'`,
    );
    expect(supplier.rows[0]).toEqual({ tenant_id: 'acme', name: validRow(500).supplier });

    // A new audit finds no reference left dangling; the repaired findings keep their record.
    const again = await runCliJson<{ id: number }>(env, ['audit', 'start', '--checks', 'references']);
    expect((await settled(again.id)).result).toMatchObject({ findings: 0 });
    const repaired = await runCliJson<Findings>(env, [
      'audit', 'findings', String(auditId), '--check', 'missing-reference', '--limit', '1000',
    ]);
    expect(repaired.findings.every((finding) => finding.repairedAt !== null)).toBe(true);
  });

  it('repair reports, and changes nothing, when the source rows are gone', async () => {
    const deleted = await id(`DELETE FROM categories WHERE tenant_id = 'globex' AND name = $1 RETURNING id`, [validRow(2).category]);
    const affected = (await env.pool.query(`SELECT count(*)::int AS n FROM products WHERE category_id = $1`, [deleted])).rows[0].n;
    expect(affected).toBe(2); // lines of SKU-0000002 and SKU-0000039 (Category 2)
    await env.s3.send(new DeleteObjectCommand({ Bucket: env.bucket, Key: 'imports/globex/other.csv' }));
    const audit = await runCliJson<{ id: number }>(env, ['audit', 'start', '--tenant', 'globex', '--checks', 'references']);
    expect((await settled(audit.id)).result).toMatchObject({ findings: affected, tenant: 'globex' });
    const applied = await runCliJson<{ entries: Array<{ action: string; reason?: string }> }>(env, ['audit', 'repair', String(audit.id), '--apply']);
    expect(applied.entries).toHaveLength(affected);
    for (const entry of applied.entries) expect(entry).toMatchObject({ action: 'reported', reason: expect.stringContaining('cannot be read as validated') });
    const still = await env.pool.query(`SELECT count(*)::int AS n FROM products WHERE tenant_id = 'globex' AND category_id = $1`, [deleted]);
    expect(still.rows[0].n).toBe(affected);
    expect((await env.pool.query(`SELECT count(*)::int AS n FROM categories WHERE tenant_id = 'globex' AND name = $1`, [validRow(2).category])).rows[0].n).toBe(0);
  });
});
