// `csv-finalize`: the second phase of a CSV import run. Never enqueued on its own: finalizeImport() (`bulk-import
// finalize <id>`) moves a reviewed `csv-import` run to this kind, so the run keeps its id from upload to end and
// finalizes run in their own concurrency pool (WORKER_KIND_CONCURRENCY), apart from validations. Writes the staged
// batches in chunked, fenced, resumable transactions and ends `succeeded`, or `partial` when rows were invalid or
// refused at write time.
import { finalizeStagedRows, requireValidatedRun } from '../imports/csv/finalize-import.js';
import { finalizeOutcome } from '../imports/csv/finalize-outcome.js';
import { parseCsvImportPayload, type CsvImportPayload } from '../imports/csv/payload.js';
import { findProfile } from '../imports/csv/profiles/index.js';
import { listRowErrors, writeRowErrorsCsv } from '../imports/csv/row-errors.js';
import { getCsvImportRun } from '../imports/csv/run-record.js';
import { PermanentJobError } from '../queue/errors.js';
import type { JobContext, JobHandler, JobOutcome } from './types.js';

export const CSV_FINALIZE_KIND = 'csv-finalize';

async function run(context: JobContext<CsvImportPayload>): Promise<JobOutcome> {
  const { job, services, log } = context;
  const validated = await requireValidatedRun(services.pool, job.id, CSV_FINALIZE_KIND);
  if (validated.finalizedAt) {
    log.info('finalize was completed by an earlier attempt');
    return finalizeOutcome(validated, undefined);
  }
  const profile = findProfile(validated.profile);
  if (!profile) {
    throw new PermanentJobError(`job ${job.id} was validated with profile "${validated.profile}", which this worker does not know`, 'CSV_UNKNOWN_PROFILE');
  }
  const totals = await finalizeStagedRows(
    {
      pool: services.pool,
      jobId: job.id,
      profile,
      signal: context.signal,
      progress: context.progress,
      log,
      assertLeaseHeld: context.assertLeaseHeld,
    },
    validated,
  );
  const outcome = finalizeOutcome((await getCsvImportRun(services.pool, job.id))!, totals);
  log.info({ result: outcome.result }, 'csv import finalized');
  return outcome;
}

export const csvFinalizeHandler: JobHandler<CsvImportPayload> = {
  kind: CSV_FINALIZE_KIND,
  description: 'writes the staged rows of a reviewed csv-import run (started by `bulk-import finalize <id>`)',
  parsePayload: (raw) => parseCsvImportPayload(CSV_FINALIZE_KIND, raw),
  run,
  listErrors: listRowErrors,
  exportErrorsCsv: writeRowErrorsCsv,
};
