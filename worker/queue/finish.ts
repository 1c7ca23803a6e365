// Finish: record a run's outcome, fenced by its lease. A write whose lease no longer matches changes nothing.
import type { Queryable } from '../db/pool.js';
import { JOBS_READY_CHANNEL } from './channels.js';
import type { JobErrorRecord, JobState, Lease } from './types.js';

/** Outcomes a worker records for a job it holds. `review_ready` parks the run until a person acts. */
export type CompletionState = 'succeeded' | 'partial' | 'review_ready' | 'canceled';

export interface Completion {
  jobId: number;
  attempt: number;
  state: CompletionState;
  result?: Record<string, unknown> | null;
  progress?: Record<string, unknown> | null;
}

/**
 * Records many completions in one statement (the runner batches them). Returns the ids that applied; the others
 * had lost their lease and their outcome is discarded.
 */
export async function completeJobs(db: Queryable, workerId: string, completions: Completion[]): Promise<Set<number>> {
  if (completions.length === 0) return new Set();
  const { rows } = await db.query<{ id: number }>(
    `UPDATE jobs SET
       state = done.state,
       result = coalesce(done.result, jobs.result),
       progress = coalesce(done.progress, jobs.progress),
       lease_owner = NULL, lease_expires_at = NULL,
       finished_at = CASE WHEN done.state = 'review_ready' THEN NULL ELSE now() END,
       updated_at = now()
     FROM unnest($2::bigint[], $3::int[], $4::text[], $5::jsonb[], $6::jsonb[]) AS done(id, attempt, state, result, progress)
     WHERE jobs.id = done.id AND jobs.attempts = done.attempt AND jobs.lease_owner = $1 AND jobs.state = 'running'
     RETURNING jobs.id`,
    [
      workerId,
      completions.map((c) => c.jobId),
      completions.map((c) => c.attempt),
      completions.map((c) => c.state),
      completions.map((c) => c.result ?? null),
      completions.map((c) => c.progress ?? null),
    ],
  );
  return new Set(rows.map((row) => row.id));
}

export interface FailureRequest {
  lease: Lease;
  error: JobErrorRecord;
  /** Delay before the retry, from the backoff policy; ignored for permanent errors and used-up attempts. */
  retryDelayMs: number;
  progress?: Record<string, unknown> | null;
}

/**
 * Records a failed attempt: a permanent error ends the run `failed`; a transient one requeues it after the backoff,
 * or ends it `dead` (the dead-letter state) when its attempts are used up. Returns the new state, or null when the
 * lease was lost.
 */
export async function failJob(db: Queryable, request: FailureRequest): Promise<JobState | null> {
  const { rows } = await db.query<{ state: JobState }>(
    `UPDATE jobs SET
       state = next.state,
       run_at = CASE WHEN next.state = 'queued' THEN now() + $5 * interval '1 millisecond' ELSE jobs.run_at END,
       finished_at = CASE WHEN next.state = 'queued' THEN NULL ELSE now() END,
       last_error = $4,
       progress = coalesce($6, jobs.progress),
       lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
     FROM (SELECT CASE
             WHEN $7 = 'permanent' THEN 'failed'
             WHEN attempts >= max_attempts THEN 'dead'
             ELSE 'queued' END AS state
           FROM jobs WHERE id = $1) AS next
     WHERE jobs.id = $1 AND jobs.lease_owner = $2 AND jobs.attempts = $3 AND jobs.state = 'running'
     RETURNING jobs.state`,
    [
      request.lease.jobId,
      request.lease.owner,
      request.lease.attempt,
      request.error,
      Math.max(0, Math.round(request.retryDelayMs)),
      request.progress ?? null,
      request.error.class,
    ],
  );
  return rows[0]?.state ?? null;
}

/**
 * Gives jobs back to the queue without counting the attempt (graceful shutdown): another worker resumes them at
 * once. Returns the ids released.
 */
export async function releaseJobs(
  db: Queryable,
  workerId: string,
  leases: Array<Pick<Lease, 'jobId' | 'attempt'>>,
): Promise<number[]> {
  if (leases.length === 0) return [];
  const { rows } = await db.query<{ id: number }>(
    `WITH released AS (
       UPDATE jobs SET state = 'queued', attempts = jobs.attempts - 1, run_at = now(),
         lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
       FROM unnest($2::bigint[], $3::int[]) AS held(id, attempt)
       WHERE jobs.id = held.id AND jobs.attempts = held.attempt AND jobs.lease_owner = $1 AND jobs.state = 'running'
       RETURNING jobs.id, jobs.kind
     )
     SELECT id, pg_notify('${JOBS_READY_CHANNEL}', kind) AS woke FROM released`,
    [workerId, leases.map((lease) => lease.jobId), leases.map((lease) => lease.attempt)],
  );
  return rows.map((row) => row.id);
}
