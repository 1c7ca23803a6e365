// How a finalized CSV import ends: `succeeded` when every row of the file was written, `partial` when some rows were
// invalid or refused by the database (they are listed by `bulk-import errors <id>`).
import { countMetric } from '../../handlers/metrics.js';
import type { JobOutcome } from '../../handlers/types.js';
import type { FinalizeTotals } from './finalize-import.js';
import { RowRanges } from './row-ranges.js';
import { runCounts, type CsvImportRun } from './run-record.js';

/**
 * `excluded`: valid rows the reviewer excluded (counted by the batches as failed, reported apart). `totals`: what this
 * attempt wrote; undefined when an earlier attempt had finalized the run already.
 */
export function finalizeOutcome(run: CsvImportRun, totals: FinalizeTotals | undefined, excluded = 0): JobOutcome {
  const failed = run.rowsInvalid + run.rowsFailed;
  const result: Record<string, unknown> = {
    ...runCounts(run),
    inserted: run.rowsInserted,
    updated: run.rowsUpdated,
    unchanged: run.rowsUnchanged,
    failedAtWrite: run.rowsFailed - excluded,
    referencesCreated: run.referencesCreated,
  };
  const ranges = RowRanges.fromStored(run.excludedRows);
  if (ranges) {
    result.excludedRows = ranges.toString();
    result.excluded = excluded;
  }
  if (totals) {
    result.seconds = Math.round(totals.seconds * 10) / 10;
    result.rowsPerSecond = Math.round(totals.rowsThisAttempt / Math.max(totals.seconds, 0.001));
    if (totals.batchesThisAttempt < run.batches) result.batchesWrittenByEarlierAttempts = run.batches - totals.batchesThisAttempt;
  } else if (run.batches > 0) {
    // No totals: an earlier attempt finished the whole finalize and died before its outcome was stored.
    result.batchesWrittenByEarlierAttempts = run.batches;
  }
  return {
    state: failed > 0 ? 'partial' : 'succeeded',
    result,
    metrics: {
      Rows: countMetric(run.rowsRead),
      ValidRows: countMetric(run.rowsValid),
      InvalidRows: countMetric(run.rowsInvalid),
      InsertedRows: countMetric(run.rowsInserted),
      UpdatedRows: countMetric(run.rowsUpdated),
      FailedRows: countMetric(run.rowsFailed),
    },
  };
}
