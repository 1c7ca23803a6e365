// The SQL of the consistency audit (`audit` job kind): keyset batches over products that find reference ids pointing
// at no row of the product's tenant and count rows per importing run, the finished CSV runs, and the findings table
// (migration 20261205000600). Every batch is one short read-only statement plus one insert of its findings: no long
// transaction, no lock a writer would wait for, memory bounded by the batch.
import type { Queryable } from '../db/pool.js';

export const CHECKS = ['missing-reference', 'csv-run-count', 'document-without-object', 'object-without-document'] as const;
export type CheckName = (typeof CHECKS)[number];

/** The reference columns of products and the tables they name (the products profile's `reference` columns). */
export const PRODUCT_REFERENCES = [
  { column: 'category_id', table: 'categories', nameColumn: 'category' },
  { column: 'supplier_id', table: 'suppliers', nameColumn: 'supplier' },
  { column: 'location_id', table: 'locations', nameColumn: 'location' },
] as const;
export type ProductReference = (typeof PRODUCT_REFERENCES)[number];

/**
 * SQL: the reference of the products row `alias` names a row of the product's own tenant. A `missing-reference`
 * finding is a reference id for which this is false.
 */
function namesRowOfTenant(alias: string, { column, table }: ProductReference): string {
  return `EXISTS (SELECT FROM ${table} r WHERE r.id = ${alias}.${column} AND r.tenant_id = ${alias}.tenant_id)`;
}

export interface ReferenceBatch {
  /** Products read (imported ones: last_import_job_id set). */
  scanned: number;
  /** Highest id read; null when the batch was empty. */
  lastId: number | null;
  /** Findings inserted for this batch. */
  findings: number;
  /** Products per importing run in this batch. */
  rowsPerJob: Map<number, number>;
}

/**
 * One keyset batch of imported products after `afterId`: inserts a `missing-reference` finding per (product, column)
 * whose id names no row of the product's tenant, and counts the batch's rows per last_import_job_id.
 */
export async function auditProductBatch(
  db: Queryable,
  auditJobId: number,
  afterId: number,
  limit: number,
  tenantId: string | null,
): Promise<ReferenceBatch> {
  const missing = PRODUCT_REFERENCES.map(
    (reference) => `SELECT b.id, b.tenant_id, b.sku, b.last_import_job_id, '${reference.column}' AS ref_column, '${reference.table}' AS ref_table,
              b.${reference.column} AS ref_id
       FROM batch b
       WHERE b.${reference.column} IS NOT NULL AND NOT ${namesRowOfTenant('b', reference)}`,
  ).join('\n       UNION ALL\n       ');
  const { rows } = await db.query<{ scanned: number; last_id: string | null; findings: number; per_job: Array<[string, number]> | null }>(
    `WITH batch AS MATERIALIZED (
       SELECT id, tenant_id, sku, category_id, supplier_id, location_id, last_import_job_id FROM products
       WHERE id > $2 AND last_import_job_id IS NOT NULL ${tenantId === null ? '' : 'AND tenant_id = $4'}
       ORDER BY id LIMIT $3
     ), missing AS (
       ${missing}
     ), inserted AS (
       INSERT INTO audit_findings (job_id, check_name, tenant_id, subject, subject_id, details)
       SELECT $1, 'missing-reference', m.tenant_id, 'products ' || m.id || ' ' || m.ref_column || ' = ' || m.ref_id, m.id,
              jsonb_build_object('table', 'products', 'sku', m.sku, 'column', m.ref_column, 'referencedTable', m.ref_table,
                                 'referencedId', m.ref_id, 'importJobId', m.last_import_job_id)
       FROM missing m
       RETURNING 1
     )
     SELECT (SELECT count(*) FROM batch)::int AS scanned,
            (SELECT max(id) FROM batch) AS last_id,
            (SELECT count(*) FROM inserted)::int AS findings,
            (SELECT json_agg(json_build_array(j.job, j.n)) FROM (
               SELECT last_import_job_id::text AS job, count(*)::int AS n FROM batch GROUP BY 1) j) AS per_job`,
    tenantId === null ? [auditJobId, afterId, limit] : [auditJobId, afterId, limit, tenantId],
  );
  const row = rows[0]!;
  return {
    scanned: row.scanned,
    lastId: row.last_id === null ? null : Number(row.last_id),
    findings: row.findings,
    rowsPerJob: new Map((row.per_job ?? []).map(([job, n]) => [Number(job), n])),
  };
}

export interface FinishedCsvRun {
  jobId: number;
  tenantId: string;
  objectKey: string;
  /** Rows it says it wrote with its job id: inserted + updated (unchanged rows keep the id of their last writer). */
  written: number;
  /** When its first batch was finalized (its finalizedAt when it wrote none): from here on it wrote rows. */
  finalizeStartedAt: Date;
  finalizedAt: Date;
}

/**
 * CSV runs finalized before `before` (the database's clock) and still on record, oldest first; runs deleted by
 * retention are not audited, nor runs it has begun deleting (their job marked, retention_started_at, or gone): it
 * deletes their batches, row errors and runs one statement at a time, so for seconds — for an hour after a round that
 * died half-way — such a run is still listed with no batches, written 0, while products keep its id. One statement:
 * an unmarked job in its snapshot means no row of the run was deleted yet (the mark commits first).
 */
export async function finishedCsvRuns(db: Queryable, tenantId: string | null, before: Date): Promise<FinishedCsvRun[]> {
  const { rows } = await db.query<{
    job_id: string;
    tenant_id: string;
    object_key: string;
    written: number;
    finalize_started_at: Date;
    finalized_at: Date;
  }>(
    `SELECT r.job_id, r.tenant_id, r.object_key, r.finalized_at, b.written, coalesce(b.first_finalized_at, r.finalized_at) AS finalize_started_at
     FROM csv_import_runs r
     CROSS JOIN LATERAL (
       SELECT coalesce(sum(rows_inserted + rows_updated), 0)::int AS written, min(finalized_at) AS first_finalized_at
       FROM csv_import_batches WHERE job_id = r.job_id
     ) b
     WHERE r.finalized_at < $1 ${tenantId === null ? '' : 'AND r.tenant_id = $2'}
       AND EXISTS (SELECT FROM jobs j WHERE j.id = r.job_id AND j.retention_started_at IS NULL)
     ORDER BY r.job_id`,
    tenantId === null ? [before] : [before, tenantId],
  );
  return rows.map((row) => ({
    jobId: Number(row.job_id),
    tenantId: row.tenant_id,
    objectKey: row.object_key,
    written: row.written,
    finalizeStartedAt: row.finalize_started_at,
    finalizedAt: row.finalized_at,
  }));
}

/**
 * Rows of the run's tenant that existed when the run finished and now carry the id of another run of the tenant that
 * may have written them after it: one whose finalize had not ended when this run's began (finalized later, finalizing
 * alongside it, or finalizing now). Finalize overwrites last_import_job_id in the order runs are approved, whatever
 * the order of their ids, so "later" is the finalize time, never a larger id. An upper bound of the run's rows that
 * later imports of the same keys took over (the file's keys themselves are not kept). Rows carrying a run no longer on
 * record (deleted by retention, which goes in finish order) are not counted.
 */
export async function rowsTakenOverLater(db: Queryable, run: FinishedCsvRun): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM products
     WHERE tenant_id = $1 AND created_at <= $3
       AND last_import_job_id = ANY (ARRAY(
         SELECT r.job_id FROM csv_import_runs r
         WHERE r.tenant_id = $1 AND r.job_id <> $2 AND (r.finalized_at IS NULL OR r.finalized_at >= $4)
       ))`,
    [run.tenantId, run.jobId, run.finalizedAt, run.finalizeStartedAt],
  );
  return rows[0]!.n;
}

export interface NewFinding {
  check: CheckName;
  tenantId: string | null;
  subject: string;
  subjectId: number | null;
  details: Record<string, unknown>;
}

export async function insertFindings(db: Queryable, auditJobId: number, findings: NewFinding[]): Promise<void> {
  if (findings.length === 0) return;
  await db.query(
    `INSERT INTO audit_findings (job_id, check_name, tenant_id, subject, subject_id, details)
     SELECT $1, f.check_name, f.tenant_id, f.subject, f.subject_id, f.details
     FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[]) AS f(check_name, tenant_id, subject, subject_id, details)`,
    [
      auditJobId,
      findings.map((finding) => finding.check),
      findings.map((finding) => finding.tenantId),
      findings.map((finding) => finding.subject),
      findings.map((finding) => finding.subjectId),
      findings.map((finding) => JSON.stringify(finding.details)),
    ],
  );
}

export interface Finding extends NewFinding {
  id: number;
  jobId: number;
  repairedAt: Date | null;
  repair: Record<string, unknown> | null;
  createdAt: Date;
}

/** A page of an audit run's findings in id order (keyset: after `afterId`). */
export async function pageOfFindings(
  db: Queryable,
  auditJobId: number,
  afterId: number,
  limit: number,
  check: CheckName | null = null,
): Promise<Finding[]> {
  const { rows } = await db.query(
    `SELECT id, job_id, check_name, tenant_id, subject, subject_id, details, repaired_at, repair, created_at FROM audit_findings
     WHERE job_id = $1 AND id > $2 ${check === null ? '' : 'AND check_name = $4'} ORDER BY id LIMIT $3`,
    check === null ? [auditJobId, afterId, limit] : [auditJobId, afterId, limit, check],
  );
  return rows.map((row) => ({
    id: Number(row.id),
    jobId: Number(row.job_id),
    check: row.check_name as CheckName,
    tenantId: row.tenant_id as string | null,
    subject: row.subject as string,
    subjectId: row.subject_id === null ? null : Number(row.subject_id),
    details: row.details as Record<string, unknown>,
    repairedAt: row.repaired_at as Date | null,
    repair: row.repair as Record<string, unknown> | null,
    createdAt: row.created_at as Date,
  }));
}

export async function countFindings(db: Queryable, auditJobId: number): Promise<Record<string, number>> {
  const { rows } = await db.query<{ check_name: string; n: number }>(
    `SELECT check_name, count(*)::int AS n FROM audit_findings WHERE job_id = $1 GROUP BY 1 ORDER BY 1`,
    [auditJobId],
  );
  return Object.fromEntries(rows.map((row) => [row.check_name, row.n]));
}

/**
 * Whether the product's reference names a row of its tenant now (one the backend restored under that id since the
 * audit): then a `missing-reference` finding on it no longer holds.
 */
export async function referenceResolves(db: Queryable, reference: ProductReference, productId: number): Promise<boolean> {
  const { rows } = await db.query<{ resolves: boolean }>(`SELECT ${namesRowOfTenant('p', reference)} AS resolves FROM products p WHERE p.id = $1`, [
    productId,
  ]);
  return rows[0]?.resolves ?? false;
}

/**
 * Records how a finding was repaired, once: a finding already recorded keeps its record (a second repair that waited
 * for the first one's product lock finds the product fixed, and its `already-fixed` must not replace what the first
 * one created).
 */
/**
 * In a repair's transaction, before it changes anything: locks the finding and says whether it is still open. A
 * concurrent repair that recorded it first wins, and this one changes nothing (its change would have no record).
 */
export async function lockOpenFinding(tx: Queryable, findingId: number): Promise<boolean> {
  const { rows } = await tx.query<{ open: boolean }>(`SELECT repaired_at IS NULL AS open FROM audit_findings WHERE id = $1 FOR UPDATE`, [findingId]);
  return rows[0]?.open ?? false;
}

/** Records what a repair did; false when another repair had recorded the finding first (this record is dropped). */
export async function markRepaired(db: Queryable, findingId: number, repair: Record<string, unknown>): Promise<boolean> {
  const { rowCount } = await db.query(`UPDATE audit_findings SET repaired_at = now(), repair = $2::jsonb WHERE id = $1 AND repaired_at IS NULL`, [
    findingId,
    JSON.stringify(repair),
  ]);
  return (rowCount ?? 0) > 0;
}
