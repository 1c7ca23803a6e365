// `csv-import`: the validation phase of a CSV import. Streams the uploaded object from S3, checks every row against
// the import profile, records the invalid ones and the batches finalize will write, then parks the run in `review_ready` with a
// summary. `bulk-import finalize <id>` (or finalizeImport() in worker/api.ts) resumes the same run as `csv-finalize`;
// with `autoFinalize: true` the run goes on to finalize at once.
// Payload: { bucket, key, profile, tenant?, delimiter?, encoding?, autoFinalize? }; bucket must be S3_BUCKET and key
// under `imports/<tenant>/` (payload.ts).
import { finalizeValidatedRun } from '../imports/csv/finalize-run.js';
import {
  assertCsvObjectAllowed,
  parseCsvImportPayload,
  resolveCsvTenant,
  type CsvImportPayload,
} from '../imports/csv/payload.js';
import { findProfile } from '../imports/csv/profiles/index.js';
import { listRowErrors, writeRowErrorsCsv } from '../imports/csv/row-errors.js';
import { getCsvImportRun } from '../imports/csv/run-record.js';
import { summaryOfRun, validateImport, type ValidationSummary } from '../imports/csv/validate-import.js';
import { PermanentJobError } from '../queue/errors.js';
import { CSV_IMPORT_KIND } from './kinds.js';
import { countMetric } from './metrics.js';
import { jobProgress } from './progress.js';
import type { JobContext, JobHandler, JobOutcome } from './types.js';

/** Importing the same object with the same profile for the same tenant while a run of it is active reuses that run. */
function csvImportDedupeKey(payload: CsvImportPayload, jobTenant: string | null): string {
  return `${CSV_IMPORT_KIND}:${payload.tenant ?? jobTenant ?? '-'}:${payload.profile}:${payload.bucket}/${payload.key}`;
}

async function run(context: JobContext<CsvImportPayload>): Promise<JobOutcome> {
  const { job, payload, services, log } = context;
  const tenant = resolveCsvTenant(CSV_IMPORT_KIND, payload, job.tenantId);
  const profile = findProfile(payload.profile)!;
  if (!services.s3 || !services.bucket) {
    throw new PermanentJobError('csv-import needs S3: set S3_BUCKET (and S3_ENDPOINT for an S3-compatible server)', 'S3_NOT_CONFIGURED');
  }
  assertCsvObjectAllowed(CSV_IMPORT_KIND, payload, tenant, services.bucket);
  const earlier = await getCsvImportRun(services.pool, job.id);
  let summary: ValidationSummary;
  if (earlier?.validatedAt) {
    // An earlier attempt validated the file but died before its outcome was recorded: nothing to do again.
    log.info('validation was completed by an earlier attempt');
    summary = await summaryOfRun(services.pool, earlier);
  } else {
    summary = await validateImport({
      pool: services.pool,
      s3: services.s3,
      jobId: job.id,
      profile,
      payload,
      tenant,
      batchSize: services.config.csv.finalizeChunkSize,
      stallTimeoutMs: services.config.s3StallTimeoutMs,
      signal: context.signal,
      progress: context.progress,
      log,
      assertLeaseHeld: context.assertLeaseHeld,
    });
  }
  const metrics = { Rows: countMetric(summary.rows), ValidRows: countMetric(summary.valid), InvalidRows: countMetric(summary.invalid) };
  if (!payload.autoFinalize) {
    context.progress.update(jobProgress('review', summary.rows, summary.rows, { valid: summary.valid, invalid: summary.invalid }));
    return {
      state: 'review_ready',
      result: { ...summary, next: `bulk-import finalize ${job.id} | bulk-import reject ${job.id} | bulk-import errors ${job.id}` },
      metrics,
    };
  }
  return finalizeValidatedRun(context, CSV_IMPORT_KIND);
}

export const csvValidateHandler: JobHandler<CsvImportPayload> = {
  kind: CSV_IMPORT_KIND,
  description: 'validates a CSV upload against an import profile, records its invalid rows, parks the run for review',
  parsePayload: (raw) => parseCsvImportPayload(CSV_IMPORT_KIND, raw),
  run,
  requiresTenant: true,
  defaultDedupeKey: csvImportDedupeKey,
  listErrors: listRowErrors,
  exportErrorsCsv: writeRowErrorsCsv,
};
