// Claim: take up to `limit` due queued jobs in one statement and lease them to this worker.
import type { Queryable } from '../db/pool.js';
import { recordClaimSpan } from '../tracing/job-spans.js';
import type { ClaimedJob } from './types.js';

export interface ClaimRequest {
  workerId: string;
  limit: number;
  leaseMs: number;
  /** Only these kinds; undefined claims any kind. */
  kinds?: string[] | undefined;
  /**
   * Jobs this worker still has a handler for (e.g. one unwinding after its lease was lost and the job was rescued):
   * never claim them again while that handler runs, so one process never holds two attempts of one job.
   */
  excludeIds?: number[];
}

// Why this is safe with many workers: the inner SELECT locks the rows it returns and SKIP LOCKED passes over rows
// another claimer holds, so two workers never take the same row, and neither waits on the other. The outer UPDATE
// runs in the same statement, so a row is never locked without being leased. `attempts + 1` makes every claim a new
// fencing token. Ordered by the partial index jobs_claim_order (priority, run_at, id) WHERE state = 'queued'.
function claimSql(filterKinds: boolean): string {
  return `
WITH due AS (
  SELECT id FROM jobs
  WHERE state = 'queued' AND run_at <= now() AND NOT (id = ANY($4::bigint[]))
    ${filterKinds ? 'AND kind = ANY($5::text[])' : ''}
  ORDER BY priority, run_at, id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
UPDATE jobs SET
  state = 'running',
  lease_owner = $1,
  lease_expires_at = now() + $3 * interval '1 millisecond',
  heartbeat_at = now(),
  attempts = jobs.attempts + 1,
  started_at = coalesce(jobs.started_at, now()),
  updated_at = now()
FROM due WHERE jobs.id = due.id
RETURNING jobs.id, jobs.kind, jobs.tenant_id, jobs.payload, jobs.attempts, jobs.max_attempts, jobs.progress, jobs.created_at,
  jobs.traceparent`;
}

const CLAIM_ANY_KIND = claimSql(false);
const CLAIM_KINDS = claimSql(true);

export async function claimJobs(db: Queryable, request: ClaimRequest): Promise<ClaimedJob[]> {
  if (request.limit <= 0 || (request.kinds && request.kinds.length === 0)) return [];
  const startedAt = Date.now();
  const values: unknown[] = [request.workerId, request.limit, request.leaseMs, request.excludeIds ?? []];
  if (request.kinds) values.push(request.kinds);
  const { rows } = await db.query(request.kinds ? CLAIM_KINDS : CLAIM_ANY_KIND, values);
  return rows
    .map((row) => {
      const job: ClaimedJob = {
        id: row.id as number,
        kind: row.kind as string,
        tenantId: row.tenant_id as string | null,
        payload: row.payload as Record<string, unknown>,
        attempt: row.attempts as number,
        maxAttempts: row.max_attempts as number,
        progress: row.progress as Record<string, unknown> | null,
        leaseOwner: request.workerId,
        createdAt: row.created_at as Date,
      };
      // Each job's trace gets its claim span; the attempt's spans go beneath it.
      job.traceparent = recordClaimSpan(job, row.traceparent as string | null, startedAt, request.workerId);
      return job;
    })
    .sort((a, b) => a.id - b.id);
}
