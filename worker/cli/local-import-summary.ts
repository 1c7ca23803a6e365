// What `bulk-import local` prints when its import ends: files, bytes, speed, failed items, and the check an operator
// cares about — rows in `documents` against objects in the bucket under the run's key prefix.
import type { S3Client } from '@aws-sdk/client-s3';
import { listObjectPages } from '../audit/bucket-listing.js';
import type { Queryable } from '../db/pool.js';
import { countDocuments } from '../imports/mass-import/documents.js';
import { listItems } from '../imports/mass-import/items-table.js';
import type { JobRow } from '../queue/types.js';
import { formatMegabytesPerSecond } from './import-progress-view.js';
import { formatBytes, formatDuration } from './output.js';

const FAILED_SHOWN = 10;

export interface LocalImportSummary {
  jobId: number;
  state: string;
  source: string;
  bucket: string;
  keyPrefix: string;
  files: number;
  imported: number;
  skipped: number;
  failed: number;
  bytes: number;
  bytesImported: number;
  /** This attempt of the run (a resumed run's earlier attempts are counted in the totals above). */
  attempt: number;
  seconds: number;
  megabytesPerSecond: number;
  filesPerSecond: number;
  failedItems: Array<{ path: string; code: string | null; error: string | null }>;
  documentRows: number;
  bucketObjects: number;
  lastError: JobRow['lastError'];
}

function numberFrom(result: Record<string, unknown> | null, key: string): number {
  const value = result?.[key];
  return typeof value === 'number' ? value : 0;
}

async function countObjects(s3: S3Client, bucket: string, prefix: string): Promise<number> {
  let count = 0;
  for await (const page of listObjectPages(s3, bucket, prefix)) count += page.length;
  return count;
}

export async function summarizeLocalImport(
  db: Queryable,
  s3: S3Client,
  job: JobRow,
  source: { directory: string; bucket: string; keyPrefix: string },
): Promise<LocalImportSummary> {
  const result = job.result;
  const attempt = (result?.thisAttempt ?? {}) as Record<string, unknown>;
  const seconds = numberFrom(attempt, 'seconds');
  const failed = await listItems(db, job.id, { states: ['failed'], limit: FAILED_SHOWN, offset: 0 });
  const [documents, objects] = await Promise.all([
    countDocuments(db, source.bucket, source.keyPrefix),
    countObjects(s3, source.bucket, source.keyPrefix),
  ]);
  const bytesImported = numberFrom(result, 'bytesImported');
  return {
    jobId: job.id,
    state: job.state,
    source: source.directory,
    bucket: source.bucket,
    keyPrefix: source.keyPrefix,
    files: numberFrom(result, 'files'),
    imported: numberFrom(result, 'imported'),
    skipped: numberFrom(result, 'skipped'),
    failed: failed.total,
    bytes: numberFrom(result, 'bytes'),
    bytesImported,
    attempt: numberFrom(attempt, 'attempt'),
    seconds,
    megabytesPerSecond: seconds > 0 ? numberFrom(attempt, 'bytesImported') / 1e6 / seconds : 0,
    filesPerSecond: seconds > 0 ? numberFrom(attempt, 'filesProcessed') / seconds : 0,
    failedItems: failed.items.map((item) => ({ path: item.relativePath, code: item.errorCode, error: item.errorMessage })),
    documentRows: documents.rows,
    bucketObjects: objects,
    lastError: job.lastError,
  };
}

export function formatLocalImportSummary(summary: LocalImportSummary): string[] {
  const where = `s3://${summary.bucket}/${summary.keyPrefix}`;
  const lines = [
    '',
    `Job ${summary.jobId} ${summary.state}` +
      (summary.attempt > 1 ? ` (resumed: attempt ${summary.attempt}, ${formatDuration(summary.seconds * 1000)} in this run)` : ` in ${formatDuration(summary.seconds * 1000)}`) +
      `: ${summary.source} → ${where}`,
  ];
  if (summary.state === 'failed' || summary.state === 'dead') {
    lines.push(`  error      ${summary.lastError?.code}: ${summary.lastError?.message}`);
  }
  lines.push(
    `  files      ${summary.files} found: ${summary.imported} imported, ${summary.skipped} already imported (same content), ${summary.failed} failed`,
    `  bytes      ${formatBytes(summary.bytesImported)} uploaded of ${formatBytes(summary.bytes)} in the tree`,
    `  speed      ${formatMegabytesPerSecond(summary.megabytesPerSecond * 1e6)} uploaded, ${summary.filesPerSecond.toFixed(0)} files/s (this run)`,
    `  documents  ${summary.documentRows} rows under ${summary.keyPrefix}`,
    `  bucket     ${summary.bucketObjects} objects under ${summary.keyPrefix}` +
      (summary.documentRows === summary.bucketObjects ? '  (rows = objects)' : '  (rows ≠ objects: see `bulk-import audit`)'),
  );
  if (summary.failedItems.length > 0) {
    lines.push(`  failed items (${summary.failed}${summary.failed > summary.failedItems.length ? `, first ${summary.failedItems.length}` : ''}):`);
    for (const item of summary.failedItems) lines.push(`    ${JSON.stringify(item.path)}  ${item.code}: ${item.error}`);
    lines.push(`    all of them: bulk-import items ${summary.jobId} --state failed`);
  }
  if (summary.state === 'succeeded' && summary.imported === 0 && summary.failed === 0 && summary.files > 0) {
    lines.push(
      '',
      `Nothing new to import: all ${summary.skipped} files were already imported with the same content. This run compared ` +
        'each file with its document by SHA-256 and wrote no object and no row.',
    );
  }
  return lines;
}
