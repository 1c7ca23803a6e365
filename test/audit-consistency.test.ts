// The `audit` job kind against real Postgres and S3: after CSV imports and a (simulated) mass import, the backend
// deletes a category, points a product at another tenant's supplier, deletes a product, loses an object and leaves an
// orphan; the audit — enqueued with the CLI, run by a worker in keyset batches — stores exactly those findings, lists
// them (--json, --csv), explains row-count differences caused by later imports, and `audit repair` recreates the
// missing references by name from the import's source rows only when asked (--apply). Then the edges: the name comes
// from the row the run wrote, an unreadable S3 leaves findings open, a repair keeps its record with its change (cut
// off between them, or racing another repair), a reference the backend restored since the audit is left alone and a
// name that exists is relinked, not recreated, a run finishing during the walk is not counted, a payload naming
// another tenant is refused, and document findings beyond listLimit are counted everywhere.
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
import { importProductRows, validRow, type ProductRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { runCli, runCliJson } from './support/cli-runner.js';
import { startFaultyS3Proxy } from './support/faulty-s3-proxy.js';
import { settledJob, testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
let worker: Worker;
const ROWS = 600;

beforeAll(async () => {
  worker = testWorker(env, [csvValidateHandler, csvFinalizeHandler, auditHandler], { leaseMs: 30_000, heartbeatMs: 1_000 });
  await worker.start();
});
afterAll(async () => worker?.stop());

const settled = (jobId: number): Promise<JobRow> => settledJob(env.pool, jobId, 60_000);

const importRows = (tenant: string, name: string, rows: ProductRow[], state?: 'succeeded' | 'partial'): Promise<number> =>
  importProductRows(env, tenant, name, rows, state);

async function importFile(tenant: string, name: string, rows: number, price = ''): Promise<number> {
  return importRows(tenant, name, Array.from({ length: rows }, (_, i) => ({ ...validRow(i + 1), ...(price ? { price } : {}) })));
}

async function id(sql: string, params: unknown[]): Promise<number> {
  return Number((await env.pool.query(sql, params)).rows[0].id);
}

interface Findings {
  total: number;
  notStored: number;
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
    // Paged on with --after, a third at a time, the pages are the whole list in order, each finding once.
    const paged: Findings['findings'] = [];
    const pageSize = String(Math.ceil(listed.total / 3));
    for (let after: number | null = 0; after !== null; ) {
      const page: Findings & { nextAfter: number | null } = await runCliJson(env, ['audit', 'findings', String(auditId), '--limit', pageSize, '--after', String(after)]);
      paged.push(...page.findings);
      after = page.nextAfter;
    }
    expect(paged.map((finding) => finding.id)).toEqual(listed.findings.map((finding) => finding.id));
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
    const recreated = await id(`SELECT id FROM categories WHERE tenant_id = 'acme' AND name = $1`, [categoryOfRow1]);
    const categories = applied.entries.filter((entry) => entry.column === 'category_id');
    expect(new Set(categories.map((entry) => entry.newId))).toEqual(new Set([recreated]));
    // The first product's repair created the category; the others found it.
    expect(categories.map((entry) => entry.action)).toEqual(['recreated', ...Array(categories.length - 1).fill('relinked')]);
    // The cross-tenant supplier id now names acme's own supplier of that name (it existed: found, not created).
    expect(applied.entries.filter((entry) => entry.column === 'supplier_id').map((entry) => entry.action)).toEqual(['relinked']);
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

interface Repair {
  applied: boolean;
  entries: Array<{ finding: number; action: string; name?: string; newId?: number; reason?: string }>;
}

/** Deletes the tenant's category `name` (products keep its id) and audits the tenant's references: one run's id. */
async function auditAfterDeleting(tenant: string, category: string, findings: number): Promise<number> {
  await env.pool.query(`DELETE FROM categories WHERE tenant_id = $1 AND name = $2`, [tenant, category]);
  const audit = await runCliJson<{ id: number }>(env, ['audit', 'start', '--tenant', tenant, '--checks', 'references']);
  expect((await settled(audit.id)).result).toMatchObject({ findings });
  return audit.id;
}

describe('audit edges', () => {
  it('repair names the reference from the row the run wrote, not from a later duplicate or invalid row of the sku', async () => {
    await importRows('umbrella', 'first-wins', [
      { ...validRow(1, 'DUP'), category: 'Tools' }, // line 2: written
      { ...validRow(2, 'BAD'), category: 'Tools' }, // line 3: written
      { ...validRow(2, 'BAD'), category: 'Shed', price: '-1.00' }, // line 4: invalid, not written
      { ...validRow(1, 'DUP'), category: 'Garden' }, // line 5: a duplicate of line 2, not written
      { ...validRow(3, 'PRE'), category: 'Shed', quantity: 'many' }, // line 6: invalid, not written
      { ...validRow(3, 'PRE'), category: 'Tools' }, // line 7: written (the first valid row of its sku)
    ], 'partial');
    const auditId = await auditAfterDeleting('umbrella', 'Tools', 3);

    const dry = await runCliJson<Repair>(env, ['audit', 'repair', String(auditId)]);
    expect(dry.entries.map((entry) => [entry.action, entry.name])).toEqual(Array(3).fill(['would-recreate', 'Tools']));
    await runCliJson<Repair>(env, ['audit', 'repair', String(auditId), '--apply']);
    const { rows } = await env.pool.query(
      `SELECT p.sku, c.name FROM products p JOIN categories c ON c.id = p.category_id WHERE p.tenant_id = 'umbrella' ORDER BY p.sku`,
    );
    expect(rows).toEqual(['BAD-0000002', 'DUP-0000001', 'PRE-0000003'].map((sku) => ({ sku, name: 'Tools' })));
  });

  it('repair leaves the findings open, and exits 69, while S3 cannot read the source file; a later repair does it', async () => {
    await importRows('wayne', 'outage', [{ ...validRow(1, 'OUT'), category: 'Lamps' }]);
    const auditId = await auditAfterDeleting('wayne', 'Lamps', 1);
    const open = async () => (await env.pool.query(`SELECT repaired_at FROM audit_findings WHERE job_id = $1`, [auditId])).rows;

    const proxy = await startFaultyS3Proxy(env.s3Endpoint);
    try {
      proxy.decide = ({ method }) => (method === 'GET' ? 'slowdown' : 'pass');
      const down = await runCli(env, ['audit', 'repair', String(auditId), '--apply', '--json'], { S3_ENDPOINT: proxy.endpoint });
      expect(down.code, down.stderr).toBe(69);
      expect(proxy.stats.faults.slowdown).toBeGreaterThan(0);
      expect((JSON.parse(down.stdout) as Repair).entries).toEqual([
        expect.objectContaining({ action: 'left-open', reason: expect.stringContaining('the finding stays open: run the repair again') }),
      ]);
    } finally {
      await proxy.close();
    }
    expect(await open()).toEqual([{ repaired_at: null }]);

    const up = await runCliJson<Repair>(env, ['audit', 'repair', String(auditId), '--apply']);
    expect(up.entries).toEqual([expect.objectContaining({ action: 'recreated', name: 'Lamps' })]);
    expect((await open())[0].repaired_at).not.toBeNull();
  });

  it('repair changes nothing when the backend restored the missing row since the audit, even renamed', async () => {
    await importRows('cyberdyne', 'restored', [{ ...validRow(1, 'RES'), category: 'Good1' }]);
    const missing = await id(`SELECT id FROM categories WHERE tenant_id = 'cyberdyne' AND name = 'Good1'`, []);
    const auditId = await auditAfterDeleting('cyberdyne', 'Good1', 1);
    await env.pool.query(
      `INSERT INTO categories (id, tenant_id, name) OVERRIDING SYSTEM VALUE VALUES ($1, 'cyberdyne', 'Good One (restored)')`,
      [missing],
    );
    const applied = await runCliJson<Repair>(env, ['audit', 'repair', String(auditId), '--apply']);
    const reason = `categories ${missing} exists again for the product's tenant`;
    expect(applied.entries).toEqual([expect.objectContaining({ action: 'already-fixed', reason })]);
    // No duplicate by name, and the product stays on the restored row; the finding's record says why.
    const { rows: categories } = await env.pool.query(`SELECT id::int, name FROM categories WHERE tenant_id = 'cyberdyne'`);
    expect(categories).toEqual([{ id: missing, name: 'Good One (restored)' }]);
    expect(await id(`SELECT category_id AS id FROM products WHERE tenant_id = 'cyberdyne' AND sku = 'RES-0000001'`, [])).toBe(missing);
    const { rows } = await env.pool.query(`SELECT repair FROM audit_findings WHERE job_id = $1`, [auditId]);
    expect(rows).toEqual([{ repair: { action: 'already-fixed', reason } }]);
  });

  it('repair records relinked, not recreated, when a row of that name exists already', async () => {
    await importRows('oscorp', 'relinked', [{ ...validRow(1, 'REL'), category: 'Gliders' }]);
    const auditId = await auditAfterDeleting('oscorp', 'Gliders', 1);
    // The backend creates the name again, under a new id; the product still holds the old one.
    const existing = await id(`INSERT INTO categories (tenant_id, name) VALUES ('oscorp', 'Gliders') RETURNING id`, []);
    const applied = await runCliJson<Repair>(env, ['audit', 'repair', String(auditId), '--apply']);
    expect(applied.entries).toEqual([expect.objectContaining({ action: 'relinked', name: 'Gliders', newId: existing })]);
    expect(await id(`SELECT category_id AS id FROM products WHERE tenant_id = 'oscorp' AND sku = 'REL-0000001'`, [])).toBe(existing);
    const { rows } = await env.pool.query(`SELECT repair FROM audit_findings WHERE job_id = $1`, [auditId]);
    expect(rows).toEqual([{ repair: { action: 'relinked', name: 'Gliders', newId: existing } }]);
  });

  it('a repair cut off before its record commits leaves nothing behind; the rerun recreates the reference and records it', async () => {
    await importRows('soylent', 'cut-off', [{ ...validRow(1, 'CUT'), category: 'Crates' }]);
    const auditId = await auditAfterDeleting('soylent', 'Crates', 1);
    const crates = async () => (await env.pool.query(`SELECT count(*)::int AS n FROM categories WHERE tenant_id = 'soylent' AND name = 'Crates'`)).rows[0].n;
    // The finding's record fails once, after the repair's writes: a kill or a database restart at that point.
    await env.pool.query(`
      CREATE SEQUENCE record_fails_once;
      CREATE FUNCTION record_fails_once() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN IF nextval('record_fails_once') = 1 THEN RAISE EXCEPTION 'cut off before the record'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER record_fails_once BEFORE UPDATE ON audit_findings FOR EACH ROW EXECUTE FUNCTION record_fails_once();`);
    try {
      const cut = await runCli(env, ['audit', 'repair', String(auditId), '--apply', '--json']);
      expect(cut.code).not.toBe(0);
      expect(cut.stderr).toContain('cut off before the record');
      // Neither the reference nor the product's new id committed without the record.
      expect(await crates()).toBe(0);
      const { rows } = await env.pool.query(`SELECT repaired_at FROM audit_findings WHERE job_id = $1`, [auditId]);
      expect(rows).toEqual([{ repaired_at: null }]);
    } finally {
      await env.pool.query('DROP TRIGGER record_fails_once ON audit_findings; DROP FUNCTION record_fails_once(); DROP SEQUENCE record_fails_once');
    }
    const rerun = await runCliJson<Repair>(env, ['audit', 'repair', String(auditId), '--apply']);
    expect(rerun.entries).toEqual([expect.objectContaining({ action: 'recreated', name: 'Crates' })]);
    const newId = await id(`SELECT id FROM categories WHERE tenant_id = 'soylent' AND name = 'Crates'`, []);
    expect(rerun.entries[0]).toMatchObject({ newId });
    const { rows } = await env.pool.query(`SELECT repair FROM audit_findings WHERE job_id = $1`, [auditId]);
    expect(rows).toEqual([{ repair: { action: 'recreated', name: 'Crates', newId } }]);
    expect(await id(`SELECT category_id AS id FROM products WHERE tenant_id = 'soylent' AND sku = 'CUT-0000001'`, [])).toBe(newId);
  });

  it('of two repairs at once, the one that finds the product fixed keeps the record of the one that fixed it', async () => {
    await importRows('tyrell', 'twice', [{ ...validRow(1, 'TWO'), category: 'Owls' }]);
    const auditId = await auditAfterDeleting('tyrell', 'Owls', 1);
    const product = await id(`SELECT id FROM products WHERE tenant_id = 'tyrell' AND sku = 'TWO-0000001'`, []);
    // Both repairs read the open finding and its name; one locks the finding and waits for the product's lock, which
    // the test holds, the other waits for the finding's.
    const gate = await env.pool.connect();
    try {
      await gate.query('BEGIN');
      await gate.query('SELECT 1 FROM products WHERE id = $1 FOR UPDATE', [product]);
      const repairs = [1, 2].map(() => runCliJson<Repair>(env, ['audit', 'repair', String(auditId), '--apply']));
      await waitFor(async () => {
        const { rows } = await env.pool.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock'
             AND (query LIKE 'SELECT id FROM products WHERE id = $1 AND category_id%' OR query LIKE 'SELECT repaired_at IS NULL AS open FROM audit_findings%')`,
        );
        return rows[0].n === 2 || undefined;
      }, 30_000);
      await gate.query('COMMIT');
      const done = await Promise.all(repairs);
      expect(done.map((repair) => repair.entries[0]!.action).sort()).toEqual(['already-fixed', 'recreated']);
    } finally {
      await gate.query('ROLLBACK').catch(() => {});
      gate.release();
    }
    const newId = await id(`SELECT id FROM categories WHERE tenant_id = 'tyrell' AND name = 'Owls'`, []);
    const { rows } = await env.pool.query(`SELECT repair FROM audit_findings WHERE job_id = $1`, [auditId]);
    expect(rows).toEqual([{ repair: { action: 'recreated', name: 'Owls', newId } }]);
  });

  it('a repair that finds its finding recorded by another meanwhile changes nothing: no change without its record', async () => {
    // B reads the names and waits for the product's lock (held here); retention then marks the run, so A finds the
    // source gone and records the finding `reported`. B must not go on and repoint the product under A's record.
    const run = await importRows('soong', 'raced', [{ ...validRow(1, 'RACE'), category: 'Androids' }]);
    const auditId = await auditAfterDeleting('soong', 'Androids', 1);
    const product = await id(`SELECT id FROM products WHERE tenant_id = 'soong' AND sku = 'RACE-0000001'`, []);
    const missing = await id(`SELECT category_id AS id FROM products WHERE id = $1`, [product]);
    const gate = await env.pool.connect();
    let outputs: Repair[] = [];
    try {
      await gate.query('BEGIN');
      await gate.query('SELECT 1 FROM products WHERE id = $1 FOR UPDATE', [product]);
      const b = runCliJson<Repair>(env, ['audit', 'repair', String(auditId), '--apply']);
      await waitFor(async () => {
        const { rows } = await env.pool.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'SELECT id FROM products WHERE id = $1 AND category_id%'`,
        );
        return rows[0].n === 1 || undefined;
      }, 30_000);
      await env.pool.query('UPDATE jobs SET retention_started_at = now() WHERE id = $1', [run]);
      let aDone = false;
      const a = runCliJson<Repair>(env, ['audit', 'repair', String(auditId), '--apply']).finally(() => (aDone = true));
      // A has recorded its finding, or waits to (for the lock B took on the finding).
      await waitFor(async () => {
        if (aDone) return true;
        const { rows } = await env.pool.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'UPDATE audit_findings SET repaired_at%'`,
        );
        return rows[0].n === 1 || undefined;
      }, 30_000);
      await gate.query('COMMIT');
      outputs = await Promise.all([a, b]);
    } finally {
      await gate.query('ROLLBACK').catch(() => {});
      gate.release();
      await env.pool.query('UPDATE jobs SET retention_started_at = NULL WHERE id = $1', [run]);
    }
    // Whichever record stands, the product is as it says: repointed with `recreated`, untouched with `reported`.
    const { rows } = await env.pool.query(`SELECT repair FROM audit_findings WHERE job_id = $1`, [auditId]);
    const stored = rows[0].repair as { action: string; newId?: number };
    const now = await id(`SELECT category_id AS id FROM products WHERE id = $1`, [product]);
    if (stored.action === 'recreated') expect(now).toBe(stored.newId);
    else expect([stored.action, now]).toEqual(['reported', missing]);
    // And what each repair printed agrees with it: one did the recorded thing, the other says it found it done.
    expect(outputs.map((output) => output.entries[0]!.action).sort()).toEqual(['already-fixed', stored.action].sort());
  });

  it('findings and repair of a missing id, another kind or an unfinished audit say so, not "0 findings"', async () => {
    const later = new Date(Date.now() + 86_400_000);
    const missing = await runCli(env, ['audit', 'findings', '999999']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('job 999999 does not exist');
    const { job: noop } = await submitJob(env.pool, { kind: 'noop', dedupeKey: null, runAt: later });
    const other = await runCli(env, ['audit', 'findings', String(noop.id)]);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain(`job ${noop.id} is a noop run, not an audit`);
    const { job: queued } = await submitJob(env.pool, { kind: 'audit', tenantId: 'umbrella', payload: {}, dedupeKey: null, runAt: later });
    const early = await runCliJson<{ state: string; total: number }>(env, ['audit', 'findings', String(queued.id)]);
    expect(early).toMatchObject({ state: 'queued', total: 0 });
    expect((await runCli(env, ['audit', 'findings', String(queued.id)])).stderr).toContain(`audit ${queued.id} is queued: its findings are not all there yet`);
    await env.pool.query(`UPDATE jobs SET state = 'canceled', finished_at = now() WHERE id = $1`, [queued.id]);
    const stopped = await runCli(env, ['audit', 'findings', String(queued.id)]);
    expect(stopped.code).toBe(1);
    expect(stopped.stderr).toContain(`audit ${queued.id} ended canceled: the findings it stored before it stopped are not the whole answer`);
    const repair = await runCli(env, ['audit', 'repair', String(queued.id)]);
    expect(repair.code).toBe(1);
    expect(repair.stderr).toContain('repair works on the findings of a finished audit');
    expect((await runCli(env, ['audit', 'repair', '999999'])).stderr).toContain('job 999999 does not exist');
    await env.pool.query('DELETE FROM jobs WHERE id = ANY($1::bigint[])', [[noop.id, queued.id]]);
  });

  it('compares the products walk only with the CSV runs finalized before it started', async () => {
    const first = await importFile('initech', 'walked', 300);
    // The run's record only (run_at far ahead: the worker leaves it); the audit runs here, where the test can step in.
    const { job: audit } = await submitJob(env.pool, {
      kind: 'audit', tenantId: 'initech', payload: {}, dedupeKey: null, runAt: new Date(Date.now() + 86_400_000),
    });
    let batches = 0;
    let during: number | undefined;
    const result = await runConsistencyAudit({
      pool: env.pool,
      auditJobId: audit.id,
      // The lease check opens each write's transaction: after the first batch, a re-import of every key runs to its end
      // before the walk goes on. The first batch counted its rows as the first run's.
      assertLeaseHeld: async () => {
        if (batches === 1 && during === undefined) during = await importFile('initech', 'during-walk', 300, '2.00');
      },
      checks: ['csv-runs'],
      tenantId: 'initech',
      batchSize: 100,
      documentsPrefix: 'imports/',
      listLimit: 100,
      signal: new AbortController().signal,
      onProgress: () => (batches += 1),
    });
    expect(during).toBeGreaterThan(first);
    // The run that finished during the walk carries 200 of its 300 rows in the walk's counts: no finding, not checked.
    expect(result).toMatchObject({ productsScanned: 300, csvRunsChecked: 1, csvRunsExplained: 1, findings: 0 });
  });

  it("refuses a run whose payload names another tenant than the job's, and audits nothing", async () => {
    // Enqueue refuses this pair (api.ts runTenant); a run inserted another way (by hand, an older build) reaches the handler.
    const { rows } = await env.pool.query<{ id: string }>(
      `INSERT INTO jobs (kind, tenant_id, payload) VALUES ('audit', 'acme', '{"tenant": "globex", "checks": ["references"]}') RETURNING id`,
    );
    const run = await settled(Number(rows[0]!.id));
    expect(run.state).toBe('failed');
    expect(run.lastError).toMatchObject({ code: 'TENANT_MISMATCH', message: expect.stringContaining('payload tenant "globex" differs') });
    expect(run.result).toBeNull();
    expect((await env.pool.query(`SELECT count(*)::int AS n FROM audit_findings WHERE job_id = $1`, [run.id])).rows[0].n).toBe(0);
  });

  it('audit runs and findings count the document findings beyond listLimit, as the AuditFindings metric does', async () => {
    await env.pool.query(
      `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
       VALUES ('hooli', 'scans/gone.pdf', repeat('a', 64), 3, 'application/pdf', $1, 'imports/hooli/documents/gone.pdf')`,
      [env.bucket],
    );
    await env.s3.send(new PutObjectCommand({ Bucket: env.bucket, Key: 'imports/hooli/documents/stray.pdf', Body: 'pdf' }));
    const { job } = await submitJob(env.pool, { kind: 'audit', tenantId: 'hooli', payload: { checks: ['documents'], listLimit: 0 } });
    expect((await settled(job.id)).result).toMatchObject({ findings: 0, findingsNotStored: 2 });

    const runs = await runCliJson<Array<{ id: number; findings: number; notStored: number }>>(env, ['audit', 'runs']);
    expect(runs.find((run) => run.id === job.id)).toMatchObject({ findings: 2, notStored: 2 });
    const listed = await runCliJson<Findings>(env, ['audit', 'findings', String(job.id)]);
    expect(listed).toMatchObject({ total: 0, notStored: 2, findings: [] });
    const human = await runCli(env, ['audit', 'findings', String(job.id)]);
    expect(human.stdout).toContain(`Audit ${job.id}: 0 finding(s), and 2 document finding(s) counted beyond the run's listLimit, not stored`);
  });
});
