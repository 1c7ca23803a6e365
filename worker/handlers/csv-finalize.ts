// `csv-finalize`: the second phase of a CSV import run. Never enqueued on its own: finalizeImport() (`bulk-import
// finalize <id>`) moves a reviewed `csv-import` run to this kind, so the run keeps its id from upload to end and
// finalizes run in their own concurrency pool (WORKER_KIND_CONCURRENCY), apart from validations. Reads the validated
// file again and writes its valid rows in chunked, fenced, resumable transactions and ends `succeeded`, or `partial` when rows were invalid or
// refused at write time.
import { finalizeValidatedRun } from '../imports/csv/finalize-run.js';
import { parseCsvImportPayload, type CsvImportPayload } from '../imports/csv/payload.js';
import { listRowErrors, writeRowErrorsCsv } from '../imports/csv/row-errors.js';
import { CSV_FINALIZE_KIND } from './kinds.js';
import type { JobContext, JobHandler, JobOutcome } from './types.js';

async function run(context: JobContext<CsvImportPayload>): Promise<JobOutcome> {
  return finalizeValidatedRun(context, CSV_FINALIZE_KIND);
}

export const csvFinalizeHandler: JobHandler<CsvImportPayload> = {
  kind: CSV_FINALIZE_KIND,
  description: 'writes the valid rows of a reviewed csv-import run (started by `bulk-import finalize <id>`)',
  parsePayload: (raw) => parseCsvImportPayload(CSV_FINALIZE_KIND, raw),
  run,
  requiresTenant: true,
  listErrors: listRowErrors,
  exportErrorsCsv: writeRowErrorsCsv,
};
