// The rescuer: requeues (or kills) jobs whose lease expired, so a job of a crashed or frozen task resumes within
// about two lease lengths: the lease runs out, then the next rescue round (interval < lease) picks it up.
//
// After a database outage (a restart, a failover) every lease may have run out while nobody could renew it. Their
// owners renew them as soon as the database answers (the heartbeat that follows its return) and store the outcomes
// that waited for it; a rescue in that moment would take over runs still going, or already done, and count an attempt
// (a run on its last attempt would end dead). So while this worker sees the database away, and for a lease length
// after it saw it come back, its rescuer holds off: the runs of workers that died meanwhile are rescued then. (A rescue
// sent while the database is away would be the first statement through when it returns, before any renewal.)
import type { DatabaseStatus } from '../db/database-status.js';
import type { Pool } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { rescueExpiredLeases } from '../queue/maintenance.js';
import { PeriodicService } from './periodic-service.js';

export interface RescuerOptions {
  /** The database's availability as this worker sees it: rounds are held off for `holdAfterOutageMs` after its return. */
  status?: DatabaseStatus | undefined;
  /** The lease length: how long the owners of runs have to renew their leases after an outage. */
  holdAfterOutageMs?: number;
}

export function createRescuer(pool: Pool, intervalMs: number, log: Logger, options: RescuerOptions = {}): PeriodicService {
  // A worker started while the database was away (a replacement task during a failover) saw no outage end: it holds
  // off as if the database had just come back, so the owners of the runs it would rescue renew their leases first.
  let holdUntil = options.status ? Date.now() + (options.holdAfterOutageMs ?? 0) : 0;
  options.status?.on('change', (health) => {
    if (health.state === 'ok') holdUntil = Date.now() + (options.holdAfterOutageMs ?? 0);
  });
  return new PeriodicService(
    'rescuer',
    intervalMs,
    async () => {
      if (options.status && options.status.health.state !== 'ok') return 'skipped';
      if (Date.now() < holdUntil) {
        log.debug({ until: new Date(holdUntil).toISOString() }, 'rescue held off: the database is just back, owners renew their leases first');
        return 'skipped';
      }
      for (let round = 0; round < 100; round += 1) {
        const { requeued, dead, canceled } = await rescueExpiredLeases(pool);
        if (requeued.length > 0) log.warn({ jobs: requeued }, 'rescued jobs with expired leases back to the queue');
        if (dead.length > 0) log.error({ jobs: dead }, 'jobs with expired leases had no attempts left: dead');
        if (canceled.length > 0) log.info({ jobs: canceled }, 'jobs with expired leases had a cancel request: canceled');
        if (requeued.length + dead.length + canceled.length < 1000) break;
      }
    },
    log,
    options.status,
  );
}
