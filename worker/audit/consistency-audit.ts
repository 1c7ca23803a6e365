// The data-consistency audit of what imports wrote (the `audit` job kind; scheduled nightly by the stack, enqueued by
// `bulk-import audit start`). Three checks, each finding stored with the audit run (audit_findings):
//
// - references: every category/supplier/location id of an imported product names a row of the product's tenant
//   (products has no foreign keys: a reference row deleted by the backend leaves products pointing at nothing);
// - CSV runs: per finished CSV run, the rows it says it wrote (inserted + updated) equal the rows that carry its job id,
//   or the difference is explained by later imports: rows of its tenant that existed when it finished and now carry
//   the id of a run of the tenant finalized after it began finalizing (by finalize time: runs are approved in any
//   order of their ids; an upper bound — the file's keys are not kept). More rows than it wrote, or a deficit beyond
//   the bound (rows deleted since), is a finding;
// - documents: the documents audit (rows = objects per mass import), folded in: every row without its object and every
//   orphan object (up to `listLimit` of each stored; the totals are in the result). A tenant's audit lists the whole
//   documents prefix and compares the tenant's rows and the objects whose key names the tenant (also below a
//   multi-segment import prefix, `imports/_2024-q4/<tenant>/…`).
//
// The products walk is keyset-ordered (id > cursor, one short statement per batch), so an audit of 10M rows holds
// memory flat and never blocks writers; findings are inserted by the batch's own statement. The walk is no snapshot,
// so only runs finalized before it started (the database's clock) are compared with its counts: a run finishing
// during the walk has part of its rows counted as they were before it wrote them. Every write of findings commits
// only while the run's lease holds (`assertLeaseHeld` first in its transaction): a worker that froze past its lease
// cannot add its findings to, or delete them from, the attempt that took the run over. The signal (cancel, shutdown)
// is checked per batch, per run and per listing page, and ends a listing request in flight. Nothing is repaired here:
// `bulk-import audit repair <id>` is the separate, explicit step.
import type { S3Client } from '@aws-sdk/client-s3';
import { withTransaction, type Pool, type Queryable } from '../db/pool.js';
import { jobProgress, type JobProgress } from '../handlers/progress.js';
import { databaseNow } from './audit-store.js';
import { auditDocuments } from './documents-audit.js';
import {
  auditProductBatch,
  countFindings,
  finishedCsvRuns,
  insertFindings,
  rowsTakenOverLater,
  type NewFinding,
} from './consistency-store.js';

export const AUDIT_CHECK_GROUPS = ['references', 'csv-runs', 'documents'] as const;
export type AuditCheckGroup = (typeof AUDIT_CHECK_GROUPS)[number];

export interface ConsistencyAuditOptions {
  pool: Pool;
  auditJobId: number;
  /** The run's lease check (JobContext.assertLeaseHeld): throws LeaseLostError unless this attempt holds the run. */
  assertLeaseHeld: (db: Queryable) => Promise<void>;
  checks: AuditCheckGroup[];
  /** Only this tenant's rows, runs and documents (the documents check still lists the whole documentsPrefix). */
  tenantId: string | null;
  batchSize: number;
  /** For the documents check; without S3 it is skipped and the result says so. */
  s3?: S3Client | undefined;
  bucket?: string | undefined;
  /** The key prefix the documents check lists (ends with `/`: worker/audit/documents-prefix.ts). */
  documentsPrefix: string;
  /** How many document findings of each kind are stored (all are counted). */
  listLimit: number;
  signal: AbortSignal;
  onProgress?: (progress: JobProgress) => void;
}

export interface ConsistencyAuditResult {
  checks: AuditCheckGroup[];
  tenant: string | null;
  /** Findings stored with the run. */
  findings: number;
  /** Document findings counted beyond listLimit (not stored one by one). */
  findingsNotStored: number;
  byCheck: Record<string, number>;
  productsScanned?: number;
  batches?: number;
  csvRunsChecked?: number;
  csvRunsExplained?: number;
  documents?: { objectsListed: number; documentRows: number; rowsWithoutObject: number; orphanObjects: number; jobInputs: number } | { skipped: string };
  durationMs: number;
}

export async function runConsistencyAudit(options: ConsistencyAuditOptions): Promise<ConsistencyAuditResult> {
  const started = Date.now();
  const { pool, auditJobId, tenantId } = options;
  const result: ConsistencyAuditResult = { checks: options.checks, tenant: tenantId, findings: 0, findingsNotStored: 0, byCheck: {}, durationMs: 0 };
  const fenced = <T>(write: (db: Queryable) => Promise<T>): Promise<T> =>
    withTransaction(pool, async (tx) => {
      await options.assertLeaseHeld(tx);
      return write(tx);
    });
  // A retried attempt starts over: what an earlier attempt stored goes first.
  await fenced((db) => db.query(`DELETE FROM audit_findings WHERE job_id = $1`, [auditJobId]));
  const rowsPerJob = new Map<number, number>();
  const wantRuns = options.checks.includes('csv-runs');
  // Every run finalized before this wrote all its rows before it: the walk, starting after, sees them all.
  const walkStartedAt = await databaseNow(pool);

  if (options.checks.includes('references') || wantRuns) {
    let afterId = 0;
    let scanned = 0;
    let batches = 0;
    for (;;) {
      options.signal.throwIfAborted();
      const batch = await fenced((db) => auditProductBatch(db, auditJobId, afterId, options.batchSize, tenantId));
      if (batch.scanned === 0) break;
      batches += 1;
      scanned += batch.scanned;
      for (const [job, n] of batch.rowsPerJob) rowsPerJob.set(job, (rowsPerJob.get(job) ?? 0) + n);
      options.onProgress?.(jobProgress('products', scanned, null, { batches }));
      afterId = batch.lastId!;
      if (batch.scanned < options.batchSize) break;
    }
    result.productsScanned = scanned;
    result.batches = batches;
    // The reference findings were inserted by the walk itself; a run that only asked for csv-runs drops them.
    if (!options.checks.includes('references')) {
      await fenced((db) => db.query(`DELETE FROM audit_findings WHERE job_id = $1 AND check_name = 'missing-reference'`, [auditJobId]));
    }
  }

  if (wantRuns) {
    const runs = await finishedCsvRuns(pool, tenantId, walkStartedAt);
    const findings: NewFinding[] = [];
    let explained = 0;
    for (const run of runs) {
      options.signal.throwIfAborted();
      const carrying = rowsPerJob.get(run.jobId) ?? 0;
      if (carrying === run.written) continue;
      const details: Record<string, unknown> = { objectKey: run.objectKey, written: run.written, carrying, finalizedAt: run.finalizedAt };
      if (carrying > run.written) {
        findings.push({
          check: 'csv-run-count', tenantId: run.tenantId, subject: `csv run ${run.jobId}`, subjectId: run.jobId,
          details: { ...details, problem: `${carrying - run.written} more row(s) carry the run's job id than it says it wrote` },
        });
        continue;
      }
      const takenOver = await rowsTakenOverLater(pool, run);
      const deficit = run.written - carrying;
      if (deficit <= takenOver) {
        explained += 1;
        continue;
      }
      findings.push({
        check: 'csv-run-count', tenantId: run.tenantId, subject: `csv run ${run.jobId}`, subjectId: run.jobId,
        details: {
          ...details,
          takenOverByLaterImports: takenOver,
          problem: `${deficit} row(s) written by the run no longer carry its job id; later imports explain at most ${takenOver} (rows deleted since?)`,
        },
      });
    }
    await fenced((db) => insertFindings(db, auditJobId, findings));
    result.csvRunsChecked = runs.length;
    result.csvRunsExplained = explained;
  }

  if (options.checks.includes('documents')) {
    if (!options.s3 || !options.bucket) {
      result.documents = { skipped: 'S3 is not configured (S3_BUCKET): the documents check needs the bucket listing' };
    } else {
      options.signal.throwIfAborted();
      options.onProgress?.(jobProgress('documents', result.productsScanned ?? 0, null));
      const report = await auditDocuments({
        pool, s3: options.s3, bucket: options.bucket, prefix: options.documentsPrefix, tenantId, limit: options.listLimit, signal: options.signal,
      });
      await fenced((db) => insertFindings(db, auditJobId, [
        ...report.rowsWithoutObject.listed.map((row): NewFinding => ({
          check: 'document-without-object', tenantId: row.tenantId, subject: `documents ${row.documentId} ${row.key}`, subjectId: row.documentId,
          details: { bucket: report.bucket, key: row.key, importJobId: row.importJobId, createdAt: row.createdAt },
        })),
        ...report.orphanObjects.listed.map((object): NewFinding => ({
          check: 'object-without-document', tenantId, subject: `s3://${report.bucket}/${object.key}`, subjectId: null,
          details: { bucket: report.bucket, key: object.key, sizeBytes: object.sizeBytes, lastModified: object.lastModified },
        })),
      ]));
      result.findingsNotStored =
        report.rowsWithoutObject.total - report.rowsWithoutObject.listed.length + report.orphanObjects.total - report.orphanObjects.listed.length;
      result.documents = {
        objectsListed: report.objectsListed,
        documentRows: report.documentRows,
        rowsWithoutObject: report.rowsWithoutObject.total,
        orphanObjects: report.orphanObjects.total,
        jobInputs: report.jobInputs.total,
      };
    }
  }

  result.byCheck = await countFindings(pool, auditJobId);
  result.findings = Object.values(result.byCheck).reduce((sum, n) => sum + n, 0);
  result.durationMs = Date.now() - started;
  return result;
}
