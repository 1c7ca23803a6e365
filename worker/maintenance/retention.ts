// Retention: deletes finished runs older than RETENTION_DAYS in small batches, so the jobs table and its indexes
// stay small and the claim stays fast (a bloated queue table is a known way peer queues slow down).
import { setTimeout as sleep } from 'node:timers/promises';
import type { DatabaseStatusSink, Pool } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { deleteExpiredJobs } from '../queue/maintenance.js';
import { PeriodicService } from './periodic-service.js';

export function createRetention(
  pool: Pool,
  retentionDays: number,
  intervalMs: number,
  log: Logger,
  options: { batchSize?: number; status?: DatabaseStatusSink } = {},
): PeriodicService {
  const batchSize = options.batchSize ?? 100;
  return new PeriodicService(
    'retention',
    intervalMs,
    async () => {
      let total = 0;
      // Bounded per round; a pause between batches leaves room for the claim.
      for (let batch = 0; batch < 200; batch += 1) {
        const deleted = await deleteExpiredJobs(pool, retentionDays, batchSize);
        total += deleted;
        if (deleted < batchSize) break;
        await sleep(20);
      }
      if (total > 0) log.info({ deleted: total, retention_days: retentionDays }, 'deleted finished jobs past retention');
    },
    log,
    options.status,
  );
}
