// Retention: deletes finished runs older than RETENTION_DAYS in small batches, so the jobs table and its indexes
// stay small and the claim stays fast (a bloated queue table is a known way peer queues slow down).
import { setTimeout as sleep } from 'node:timers/promises';
import type { DatabaseStatusSink, Pool } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { retryWhenRowMoved } from '../db/row-moved.js';
import { deleteExpiredJobs } from '../queue/maintenance.js';
import { PeriodicService } from './periodic-service.js';

export function createRetention(
  pool: Pool,
  retentionDays: number,
  intervalMs: number,
  log: Logger,
  options: { batchSize?: number; batchesPerRound?: number; status?: DatabaseStatusSink } = {},
): PeriodicService {
  const batchSize = options.batchSize ?? 100;
  const batchesPerRound = options.batchesPerRound ?? 200;
  return new PeriodicService(
    'retention',
    intervalMs,
    async () => {
      let total = 0;
      let more = false;
      // Bounded per round; a pause between batches leaves room for the claim. A round that ends at its bound says
      // so, and the next round follows in a second rather than a whole interval: a backlog (a first deployment of
      // retention, a fleet finishing runs faster than one round per interval deletes) drains instead of growing.
      for (let batch = 0; batch < batchesPerRound; batch += 1) {
        const deleted = await retryWhenRowMoved(() => deleteExpiredJobs(pool, retentionDays, batchSize));
        total += deleted;
        if (deleted < batchSize) break;
        more = batch === batchesPerRound - 1;
        if (!more) await sleep(20);
      }
      if (total > 0) log.info({ deleted: total, retention_days: retentionDays, more }, 'deleted finished jobs past retention');
      return more;
    },
    log,
    options.status,
  );
}
