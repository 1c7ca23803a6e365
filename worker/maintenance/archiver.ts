// The archiver: moves finished runs from the live partition of jobs to the archive (queue/maintenance.ts,
// archiveFinishedRuns), so the queue's own pages stay few and hot however long the history grows. Every worker runs
// it; SKIP LOCKED lets rounds of several workers overlap without waiting on each other.
import type { DatabaseStatusSink, Pool } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { isRowMoved, retryWhenRowMoved } from '../db/row-moved.js';
import { archiveFinishedRuns } from '../queue/maintenance.js';
import { PeriodicService, runBatches } from './periodic-service.js';

export function createArchiver(
  pool: Pool,
  afterSeconds: number,
  intervalMs: number,
  /** RETENTION_DAYS: runs retention is about to delete are not worth moving (the history of a converted database). */
  retentionDays: number,
  log: Logger,
  options: { batchSize?: number; batchesPerRound?: number; status?: DatabaseStatusSink } = {},
): PeriodicService {
  const batchSize = options.batchSize ?? 5_000;
  const batchesPerRound = options.batchesPerRound ?? 40;
  return new PeriodicService(
    'archiver',
    intervalMs,
    async () => {
      // Bounded like retention's rounds; a round that ends at its bound is followed by the next in a second (a fleet
      // finishing faster than one round moves, or the history a database had before the live/archive split).
      const { total, more } = await runBatches(batchSize, batchesPerRound, async () => {
        try {
          // Another worker's archiver may have moved a run this one is about to lock.
          return await retryWhenRowMoved(() => archiveFinishedRuns(pool, afterSeconds, batchSize, retentionDays));
        } catch (error) {
          if (!isRowMoved(error)) throw error;
          return null; // still meeting other archivers' moves: nothing is wrong, the next round follows in a second
        }
      });
      if (total > 0) log.debug({ archived: total, more }, 'archived finished runs');
      return more;
    },
    log,
    options.status,
  );
}
