// A dry run rehearses a campaign: it plans the tree and compares it with what is already imported, and reports what
// a real run would do. It writes no object, no document and no item; its report is the run's result.
import type { Queryable } from '../../db/pool.js';
import type { CeilingViolation } from './ceiling.js';
import { findDocumentsByKeys } from './documents.js';
import { sha256OfFile } from './file-sha256.js';
import { openImportFile } from './import-file-access.js';
import type { TreePlan } from './import-plan.js';
import { ItemFailure } from './item-failure.js';

const SAMPLE = 20;
const LOOKUP_CHUNK = 1_000;

export interface DryRunReport {
  dryRun: true;
  files: number;
  bytes: number;
  /** Would be uploaded and recorded. */
  toImport: { files: number; bytes: number };
  /** Already imported with the same content: a real run skips them. */
  alreadyImported: { files: number; bytes: number };
  /** Already imported with different content: a real run fails these items (changed-content policy). */
  changed: { files: number; sample: Array<{ path: string; documentId: number }> };
  /** Their key holds another tenant's document: a real run fails these items (KEY_OF_OTHER_TENANT). */
  /** A tenant reads its run's result: the sample names this run's keys, never the other tenant's document. */
  otherTenant: { files: number; sample: Array<{ path: string; key: string }> };
  /** Entries a real run records as failed items. */
  unsafe: { count: number; sample: Array<{ path: string; code: string; reason: string }> };
  ceiling: { ok: boolean; violations: Array<Pick<CeilingViolation, 'limit' | 'allowed' | 'measured' | 'message'>> };
  /** The walk stopped at a hard cap (files or bytes): its figures are lower bounds; only the entries before were compared. */
  truncated: boolean;
}

export async function inspectPlan(
  db: Queryable,
  plan: TreePlan,
  options: {
    bucket: string;
    tenant: string;
    realRoot: string;
    /** Real path of the run's source directory: files are read only below it. */
    sourceDir: string;
    signal: AbortSignal;
    violations: CeilingViolation[];
    onProgress?: (checked: number) => void;
  },
): Promise<DryRunReport> {
  const report: DryRunReport = {
    dryRun: true,
    files: plan.measure.files,
    bytes: plan.measure.totalBytes,
    toImport: { files: 0, bytes: 0 },
    alreadyImported: { files: 0, bytes: 0 },
    changed: { files: 0, sample: [] },
    otherTenant: { files: 0, sample: [] },
    unsafe: { count: plan.unsafe, sample: [] },
    ceiling: { ok: options.violations.length === 0, violations: options.violations },
    truncated: plan.truncated,
  };
  // Each reason as the walk wrote it (a link's target included, for operators): a tenant reads it through
  // resultView (http/views.ts), which gives the tenant's sentence.
  for (const item of plan.items) {
    if (item.failure && report.unsafe.sample.length < SAMPLE) {
      report.unsafe.sample.push({ path: item.relativePath, code: item.failure.code, reason: item.failure.message });
    }
  }
  const files = plan.items.filter((item) => !item.failure && item.objectKey !== null);
  for (let start = 0; start < files.length; start += LOOKUP_CHUNK) {
    if (options.signal.aborted) throw options.signal.reason;
    const chunk = files.slice(start, start + LOOKUP_CHUNK);
    const existing = await findDocumentsByKeys(db, options.bucket, options.tenant, chunk.map((item) => item.objectKey!));
    for (const item of chunk) {
      const foreign = existing.otherTenants.get(item.objectKey!);
      if (foreign) {
        report.otherTenant.files += 1;
        if (report.otherTenant.sample.length < SAMPLE) report.otherTenant.sample.push({ path: item.relativePath, key: item.objectKey! });
        continue;
      }
      const document = existing.own.get(item.objectKey!);
      if (!document) {
        report.toImport.files += 1;
        report.toImport.bytes += item.size;
        continue;
      }
      let same = false;
      if (document.size === item.size) {
        try {
          const opened = await openImportFile(options, item.relativePath);
          try {
            same = (await sha256OfFile(opened.handle, options.signal)).sha256 === document.sha256;
          } finally {
            await opened.handle.close().catch(() => {});
          }
        } catch (error) {
          if (options.signal.aborted) throw options.signal.reason;
          if (!(error instanceof ItemFailure)) throw error;
          report.unsafe.count += 1;
          if (report.unsafe.sample.length < SAMPLE) report.unsafe.sample.push({ path: item.relativePath, code: error.code, reason: error.message });
          continue;
        }
      }
      if (same) {
        report.alreadyImported.files += 1;
        report.alreadyImported.bytes += item.size;
      } else {
        report.changed.files += 1;
        if (report.changed.sample.length < SAMPLE) report.changed.sample.push({ path: item.relativePath, documentId: document.id });
      }
    }
    options.onProgress?.(Math.min(start + LOOKUP_CHUNK, files.length));
  }
  return report;
}
