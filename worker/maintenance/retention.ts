// Retention: deletes finished runs older than RETENTION_DAYS in small batches, so the jobs table and its indexes
// stay small and the claim stays fast (a bloated queue table is a known way peer queues slow down). Each round ends
// by refreshing the statistics of `jobs` as a whole when they are stale: autovacuum never analyzes a partitioned table.
import type { DatabaseStatusSink, Pool } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { retryWhenRowMoved } from '../db/row-moved.js';
import { analyzeJobsIfStale, deleteExpiredJobs } from '../queue/maintenance.js';
import { PeriodicService, runBatches } from './periodic-service.js';

export function createRetention(
  pool: Pool,
  retentionDays: number,
  intervalMs: number,
  log: Logger,
  options: { batchSize?: number; batchesPerRound?: number; status?: DatabaseStatusSink } = {},
): PeriodicService {
  const batchSize = options.batchSize ?? 100;
  const batchesPerRound = options.batchesPerRound ?? 200;
  /** The reasons a skipped statistics refresh was already warned about in this process. */
  const warnedSkips = new Set<string>();
  return new PeriodicService(
    'retention',
    intervalMs,
    async () => {
      // Bounded per round; a pause between batches leaves room for the claim. A round that ends at its bound says
      // so, and the next round follows in a second rather than a whole interval: a backlog (a first deployment of
      // retention, a fleet finishing runs faster than one round per interval deletes) drains instead of growing.
      const { total, more } = await runBatches(batchSize, batchesPerRound, () =>
        retryWhenRowMoved(() => deleteExpiredJobs(pool, retentionDays, batchSize)),
      );
      if (total > 0) log.info({ deleted: total, retention_days: retentionDays, more }, 'deleted finished jobs past retention');
      if (!more) {
        const statistics = await analyzeJobsIfStale(pool);
        const counts = { partition_rows: statistics.partitionRows, rows_at_last_analyze: statistics.parentRows };
        if (statistics.analyzed) log.info({ reason: statistics.analyzed, ...counts }, 'analyzed the jobs table as a whole');
        if (statistics.skipped) {
          // A warning the first time for each reason (a grant to fix, a table held by a long vacuum); then at debug.
          const level = warnedSkips.has(statistics.skipped.because) ? 'debug' : 'warn';
          warnedSkips.add(statistics.skipped.because);
          log[level]({ reason: statistics.skipped.reason, because: statistics.skipped.because, ...counts }, 'the jobs table as a whole needs analyzing and was not analyzed');
        }
      }
      return more;
    },
    log,
    options.status,
  );
}
