// `audit`: objects in the bucket without a documents row, and documents rows without an object; `--fix` deletes
// old orphan objects only (see worker/audit/documents-audit.ts for why that is the only safe direction).
import { Option, type Command } from 'commander';
import { auditDocuments, type AuditProgress, type AuditReport } from '../../audit/documents-audit.js';
import { requireBucket } from '../../config.js';
import { listJobs } from '../../queue/operator.js';
import { createS3Client } from '../../storage/s3-client.js';
import { withDatabase } from '../context.js';
import { formatBytes, formatDuration, formatTable, printJson, printLine } from '../output.js';
import { MAX_LIST_LIMIT, parseDurationMs, parseLimit } from '../parse.js';

/** Exit code when the audit found something (0: bucket and table agree). */
export const AUDIT_FINDINGS_EXIT_CODE = 2;

interface AuditCommandOptions {
  bucket?: string;
  prefix?: string;
  limit: number;
  fix?: boolean;
  minAge: number;
  json?: boolean;
}

export function registerAuditCommand(program: Command): void {
  program
    .command('audit')
    .description(
      `compare the bucket with the documents table: objects without a row, rows without an object. Exit 0 when ` +
        `they agree, ${AUDIT_FINDINGS_EXIT_CODE} when something is left to look at`,
    )
    .option('--bucket <name>', 'bucket to audit (default S3_BUCKET)')
    .option('--prefix <prefix>', 'only keys under this prefix, e.g. imports/ (required with --fix; default the whole bucket)')
    .option('--limit <n>', `list at most this many findings of each kind (up to ${MAX_LIST_LIMIT}; all are counted)`, parseLimit, 50)
    .option('--fix', 'delete orphan objects (no row) older than --min-age under --prefix; rows are never changed')
    .addOption(
      new Option('--min-age <duration>', 'with --fix: only objects last written longer ago than this')
        .argParser(parseDurationMs)
        .default(86_400_000, '24h'),
    )
    .option('--json', 'print JSON only')
    .action(async (options: AuditCommandOptions) => {
      const prefix = options.prefix ?? '';
      if (options.fix && prefix === '') {
        throw new Error(
          'audit --fix needs --prefix: the bucket may hold objects that are not documents (CSV uploads, backend files), ' +
            'so deletions are limited to the documents key prefix, e.g. --prefix imports/',
        );
      }
      const report = await withDatabase(async (pool, config) => {
        const bucket = options.bucket ?? requireBucket(config);
        if (options.fix) {
          const running = await listJobs(pool, { states: ['running'], limit: 10 });
          if (running.length > 0) {
            throw new Error(
              `audit --fix refuses to run while jobs are running (${running.map((job) => `${job.id} ${job.kind}`).join(', ')}): ` +
                'an import may be between its upload and its commit. Run it again once `bulk-import jobs --state running` is empty',
            );
          }
        }
        const s3 = createS3Client({ region: config.awsRegion, endpoint: config.s3Endpoint, forcePathStyle: config.s3ForcePathStyle });
        try {
          return await auditDocuments({
            pool,
            s3,
            bucket,
            prefix,
            limit: options.limit,
            fix: options.fix ? { minAgeMs: options.minAge } : undefined,
            onProgress: process.stderr.isTTY && !options.json ? showProgress : undefined,
          });
        } finally {
          if (process.stderr.isTTY && !options.json) process.stderr.write('\n');
          s3.destroy();
        }
      });
      const remaining = report.rowsWithoutObject.total + report.orphanObjects.total - (report.fix?.deleted ?? 0);
      process.exitCode = remaining > 0 ? AUDIT_FINDINGS_EXIT_CODE : 0;
      if (options.json) return printJson(report);
      printReport(report);
    });
}

function showProgress(progress: AuditProgress): void {
  process.stderr.write(
    `\r${progress.phase}: ${progress.objectsListed} objects listed, ${progress.orphansFound} orphans, ${progress.jobInputsFound} job inputs` +
      `${progress.deleted ? `, ${progress.deleted} deleted` : ''}   `,
  );
}

function objectTable(objects: AuditReport['orphanObjects']): void {
  if (objects.listed.length === 0) return;
  printLine(
    formatTable(
      ['key', 'size', 'last modified', 'age'],
      objects.listed.map((o) => [
        o.key, formatBytes(o.sizeBytes), o.lastModified, o.lastModified ? formatDuration(Date.now() - o.lastModified.getTime()) : undefined,
      ]),
    ),
  );
  if (objects.total > objects.listed.length) printLine(`… and ${objects.total - objects.listed.length} more`);
}

function printReport(report: AuditReport): void {
  const where = `s3://${report.bucket}/${report.prefix}`;
  printLine(`Audit of ${where}: ${report.objectsListed} objects, ${report.documentRows} documents rows.`);
  printLine('');
  printLine(`Objects without a documents row (orphans): ${report.orphanObjects.total}`);
  objectTable(report.orphanObjects);
  printLine('');
  printLine(
    `Objects a job's payload names (CSV uploads; not orphans, kept by --fix): ${report.jobInputs.total}` +
      (report.jobInputs.total > 0 ? ' — listed apart, not counted as findings' : ''),
  );
  objectTable(report.jobInputs);
  printLine('');
  printLine(`Documents rows whose object is missing: ${report.rowsWithoutObject.total}`);
  if (report.rowsWithoutObject.listed.length > 0) {
    printLine(
      formatTable(
        ['document', 'tenant', 'key', 'import job', 'created'],
        report.rowsWithoutObject.listed.map((r) => [r.documentId, r.tenantId, r.key, r.importJobId, r.createdAt]),
      ),
    );
    if (report.rowsWithoutObject.total > report.rowsWithoutObject.listed.length) {
      printLine(`… and ${report.rowsWithoutObject.total - report.rowsWithoutObject.listed.length} more`);
    }
    printLine('These are never changed automatically: restore the objects or re-import the files (docs/RUNBOOK.md).');
  }
  if (report.fix) {
    const fix = report.fix;
    printLine('');
    printLine(
      `Fix: deleted ${fix.deleted} orphan object(s) older than ${formatDuration(fix.minAgeMs)}; kept ${fix.skippedTooYoung} younger ` +
        `one(s), ${fix.skippedNamedByJob} named by a job's payload meanwhile and ${fix.skippedNowReferenced} that gained a row ` +
        `meanwhile; the ${report.jobInputs.total} object(s) named by jobs are never deleted.`,
    );
    for (const failure of fix.failed) printLine(`  could not delete ${failure.key}: ${failure.error}`);
  } else if (report.orphanObjects.total > 0) {
    printLine(`\nTo delete orphan objects older than a day: bulk-import audit --prefix <documents prefix> --fix`);
  }
}
