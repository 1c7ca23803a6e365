// The finalize step of a CSV import run as a handler runs it, shared by `csv-finalize` (after review) and `csv-import`
// with `autoFinalize` (right after validation): load the validated run, write its valid rows batch by batch, and turn the run
// record into the job's outcome.
import type { JobContext, JobOutcome } from '../../handlers/types.js';
import { PermanentJobError } from '../../queue/errors.js';
import { finalizeValidatedRows, requireValidatedRun } from './finalize-import.js';
import { finalizeOutcome } from './finalize-outcome.js';
import { findProfile } from './profiles/index.js';
import { countExcludedRows } from './row-errors.js';
import { getCsvImportRun } from './run-record.js';

export async function finalizeValidatedRun<P>(context: JobContext<P>, kind: string): Promise<JobOutcome> {
  const { job, services, log } = context;
  const validated = await requireValidatedRun(services.pool, job.id, kind);
  if (validated.finalizedAt) {
    log.info('finalize was completed by an earlier attempt');
    return finalizeOutcome(validated, undefined, await countExcludedRows(services.pool, job.id));
  }
  // The profile the file was validated with (recorded in the run), not whatever the payload says now.
  const profile = findProfile(validated.profile);
  if (!profile) {
    throw new PermanentJobError(`job ${job.id} was validated with profile "${validated.profile}", which this worker does not know`, 'CSV_UNKNOWN_PROFILE');
  }
  if (!services.s3) {
    throw new PermanentJobError(`${kind} needs S3 to read the validated file again: set S3_BUCKET (and S3_ENDPOINT for an S3-compatible server)`, 'S3_NOT_CONFIGURED');
  }
  const totals = await finalizeValidatedRows(
    {
      pool: services.pool,
      s3: services.s3,
      jobId: job.id,
      profile,
      connections: services.config.csv.finalizeConnections,
      stallTimeoutMs: services.config.s3StallTimeoutMs,
      signal: context.signal,
      progress: context.progress,
      log,
      assertLeaseHeld: context.assertLeaseHeld,
      leaseHeldCondition: context.leaseHeldCondition,
    },
    validated,
  );
  const outcome = finalizeOutcome((await getCsvImportRun(services.pool, job.id))!, totals, await countExcludedRows(services.pool, job.id));
  log.info({ result: outcome.result }, 'csv import finalized');
  return outcome;
}
