// The rescuer: requeues (or kills) jobs whose lease expired, so a job of a crashed or frozen task resumes within
// about two lease lengths: the lease runs out, then the next rescue round (interval < lease) picks it up.
import type { DatabaseStatusSink, Pool } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { rescueExpiredLeases } from '../queue/maintenance.js';
import { PeriodicService } from './periodic-service.js';

export function createRescuer(pool: Pool, intervalMs: number, log: Logger, status?: DatabaseStatusSink): PeriodicService {
  return new PeriodicService(
    'rescuer',
    intervalMs,
    async () => {
      for (let round = 0; round < 100; round += 1) {
        const { requeued, dead, canceled } = await rescueExpiredLeases(pool);
        if (requeued.length > 0) log.warn({ jobs: requeued }, 'rescued jobs with expired leases back to the queue');
        if (dead.length > 0) log.error({ jobs: dead }, 'jobs with expired leases had no attempts left: dead');
        if (canceled.length > 0) log.info({ jobs: canceled }, 'jobs with expired leases had a cancel request: canceled');
        if (requeued.length + dead.length + canceled.length < 1000) break;
      }
    },
    log,
    status,
  );
}
