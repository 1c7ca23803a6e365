// Maintenance statements: rescue of expired leases and retention of finished runs.
import type { Queryable } from '../db/pool.js';
import { JOBS_READY_CHANNEL } from './channels.js';

export interface RescueResult {
  requeued: number[];
  dead: number[];
}

/**
 * Returns running jobs whose lease expired (their worker crashed, froze or lost the database) to `queued`, or to
 * `dead` when no attempts remain, recording why in last_error. Locks with SKIP LOCKED, so several workers may run
 * the rescue at once, and a job whose owner is committing right now is left for the next round.
 */
export async function rescueExpiredLeases(db: Queryable, batchSize = 1000): Promise<RescueResult> {
  const { rows } = await db.query<{ id: number; state: string }>(
    `WITH expired AS (
       SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < now()
       ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
     ), rescued AS (
       UPDATE jobs SET
         state = CASE WHEN jobs.attempts >= jobs.max_attempts THEN 'dead' ELSE 'queued' END,
         finished_at = CASE WHEN jobs.attempts >= jobs.max_attempts THEN now() END,
         run_at = now(),
         last_error = jsonb_build_object(
           'message', format('lease of worker %s expired at %s without a heartbeat (worker crashed, froze or lost the database)',
                             jobs.lease_owner, jobs.lease_expires_at),
           'code', 'LEASE_EXPIRED', 'class', 'transient', 'attempt', jobs.attempts,
           'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'worker', jobs.lease_owner, 'context', jobs.last_error -> 'context'),
         lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
       FROM expired WHERE jobs.id = expired.id
       RETURNING jobs.id, jobs.state, jobs.kind
     )
     SELECT id, state, CASE WHEN state = 'queued' THEN pg_notify('${JOBS_READY_CHANNEL}', kind) END AS woke FROM rescued`,
    [batchSize],
  );
  return {
    requeued: rows.filter((row) => row.state === 'queued').map((row) => row.id),
    dead: rows.filter((row) => row.state === 'dead').map((row) => row.id),
  };
}

/**
 * Deletes finished runs older than the retention, at most `batchSize` per call (small transactions, short locks);
 * per-item records go with them through ON DELETE CASCADE. Returns how many runs were deleted.
 */
export async function deleteExpiredJobs(db: Queryable, retentionDays: number, batchSize = 500): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM jobs WHERE id IN (
       SELECT id FROM jobs
       WHERE finished_at < now() - $1 * interval '1 day'
         AND state IN ('succeeded', 'partial', 'failed', 'dead', 'canceled')
       ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
    [retentionDays, batchSize],
  );
  return rowCount ?? 0;
}
