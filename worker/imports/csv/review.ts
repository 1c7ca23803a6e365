// The review decision on a validated CSV import, for the backend (re-exported by worker/api.ts) and the CLI:
// finalize resumes the parked run as `csv-finalize` (same job id), reject ends it without writing and discards what
// validation recorded for finalize (the batch ledger; the row errors stay for `errors <id>`).
import { withTransaction, type Pool, type PoolClient } from '../../db/pool.js';
import { CSV_FINALIZE_KIND, CSV_IMPORT_KIND } from '../../handlers/kinds.js';
import { endParkedJob, InvalidTransitionError, requireJob, resumeParkedJob } from '../../queue/operator.js';
import type { JobRow } from '../../queue/types.js';
import { RowRanges } from './row-ranges.js';
import { discardValidatedRows, getCsvImportRun, setExcludedRows } from './run-record.js';

async function requireReviewableImport(db: Pool, jobId: number, action: string): Promise<JobRow> {
  const job = await requireJob(db, jobId);
  if (job.kind !== CSV_IMPORT_KIND && job.kind !== CSV_FINALIZE_KIND) {
    throw new Error(`job ${jobId} is a ${job.kind} run, not a CSV import: nothing to ${action}`);
  }
  if (job.state !== 'review_ready') {
    throw new InvalidTransitionError(jobId, job.state, action, 'a CSV import waiting in review_ready');
  }
  const run = await getCsvImportRun(db, jobId);
  if (!run?.validatedAt) throw new Error(`job ${jobId} has no validated CSV import (it was discarded)`);
  return job;
}

/**
 * An approval of a validation that is no longer the run's: the run was validated again since the reviewer saw it (a
 * rejected run requeued over a replaced file), so its counts, failed rows and line numbers are not what was approved.
 */
export class StaleReviewError extends Error {
  readonly code = 'REVIEW_STALE';
  constructor(jobId: number, reviewed: string, current: Date | null) {
    // A time alone cannot tell a validation made since from a mistyped or rounded one: both are said.
    super(
      `job ${jobId}: the validation you approve (validatedAt ${reviewed}) is not the run's current one ` +
        `(${current ? `validatedAt ${current.toISOString()}` : 'it has none now'}): it was validated again since the review you ` +
        "approve, or the time is not the one its review showed. Review its counts and failed rows, then finalize with the run's " +
        'result.validatedAt',
    );
    this.name = 'StaleReviewError';
  }
}

/** Work to do in the decision's own transaction (its history entry: worker/actions/run-actions.ts). */
export type InDecision = (tx: PoolClient, job: JobRow) => Promise<void>;

export interface FinalizeOptions {
  /**
   * Rows not to write, by line number ("12,40-90", or parsed): approval per batch. Finalize records each excluded
   * valid row as a row error (rule `excluded`), so `errors <id> --csv` exports them with the failed rows.
   */
  excludeRows?: RowRanges | string | null | undefined;
  /**
   * The validation the reviewer saw (its `validatedAt`, in the run's result): the approval is refused (StaleReviewError)
   * when the run was validated again since. Without it, the run's current validation is approved.
   */
  validatedAt?: string | Date | null | undefined;
}

/**
 * Approves a reviewed import: the run goes back to the queue as `csv-finalize` and a worker with a free finalize slot
 * writes its valid rows — all of them, or all but `excludeRows`. Throws when the job is not a CSV import waiting for
 * review, or on an invalid row list (InvalidRowRangesError).
 */
export async function finalizeImport(db: Pool, jobId: number, options: FinalizeOptions = {}, inDecision?: InDecision): Promise<JobRow> {
  const excluded = typeof options.excludeRows === 'string' ? RowRanges.parse(options.excludeRows) : (options.excludeRows ?? null);
  const reviewed = options.validatedAt ? new Date(options.validatedAt) : null;
  if (reviewed && Number.isNaN(reviewed.getTime())) throw new Error(`validatedAt: ${JSON.stringify(String(options.validatedAt))} is not a date`);
  await requireReviewableImport(db, jobId, 'finalize');
  return withTransaction(db, async (tx) => {
    if (reviewed) {
      // Locked: a validation cannot be recorded between this check and the decision.
      const { rows } = await tx.query<{ validated_at: Date | null; same: boolean }>(
        `SELECT validated_at, date_trunc('milliseconds', validated_at) = $2::timestamptz AS same FROM csv_import_runs WHERE job_id = $1 FOR UPDATE`,
        [jobId, reviewed.toISOString()],
      );
      if (!rows[0]?.same) throw new StaleReviewError(jobId, reviewed.toISOString(), rows[0]?.validated_at ?? null);
    }
    // The exclusion and the decision commit together: a finalize never runs with another reviewer's selection.
    await setExcludedRows(tx, jobId, excluded?.toJSON() ?? null);
    const resumed = await resumeParkedJob(tx, jobId, { kind: CSV_FINALIZE_KIND });
    if (!resumed) {
      // Someone else decided in between (another finalize or a reject/cancel).
      const job = await requireJob(tx, jobId);
      throw new InvalidTransitionError(jobId, job.state, 'finalize', 'a CSV import waiting in review_ready');
    }
    await inDecision?.(tx, resumed);
    return resumed;
  });
}

/** Rejects a reviewed import: the run ends `canceled` without writing anything, and its batch ledger is deleted. */
export async function rejectImport(db: Pool, jobId: number, inDecision?: InDecision): Promise<JobRow> {
  const job = await requireReviewableImport(db, jobId, 'reject');
  return withTransaction(db, async (tx) => {
    // Both or neither: a run that could not be ended (decided by someone else meanwhile) keeps its batch ledger.
    const discardedRows = await discardValidatedRows(tx, jobId);
    const result = { ...(job.result ?? {}), rejected: true, rejectedAt: new Date().toISOString(), discardedRows };
    const ended = await endParkedJob(tx, jobId, 'canceled', result);
    if (!ended) {
      const current = await requireJob(tx, jobId);
      throw new InvalidTransitionError(jobId, current.state, 'reject', 'a CSV import waiting in review_ready');
    }
    await inDecision?.(tx, ended);
    return ended;
  });
}
