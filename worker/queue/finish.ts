// Finish: record a run's outcome, fenced by its lease. A write whose lease no longer matches changes nothing.
import { integerArrayLiteral, wordArrayLiteral } from '../db/array-literal.js';
import { isPool, withTransaction, type Queryable } from '../db/pool.js';
import { JOBS_READY_CHANNEL } from './channels.js';
import { DEPENDENCY_OUTAGE_CODE, dependencyName, MAX_OUTAGE_RESTARTS, type OutageFailure } from './outage.js';
import type { JobErrorRecord, JobState, Lease } from './types.js';

// `archived = false`: a held run is in jobs_live; said so, the plan leaves the archive out (see claim.ts).

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
 * The completion statement and its parameters. A run asked to cancel while its attempt was ending in `review_ready`
 * ends `canceled` (nothing was written yet: that waits for the review): parked with the request, a later approval
 * would have started a finalize that its first heartbeat then canceled. A finished outcome stands: the work is done. The batch reaches its runs through the pkey (`id = ANY`), with nested
 * loops turned off (COMPLETION_PLAN_SETTINGS): the planner's guess at this worker's running runs (`lease_owner = $1`;
 * a worker id is never in the statistics) is a row or two, so with many runs running in the fleet it planned a nested
 * loop over every running run with the batch rescanned for each — 174–258 µs a job against 25–53 µs, batches of 500
 * among 20,000 runs held by other workers. Postgres has no per-statement hint: the setting is SET LOCAL in the batch's
 * own transaction, sent with its BEGIN (the state triggers carry the same setting, migration 20261206070000).
 */
export function completeStatement(workerId: string, completions: Completion[]): { text: string; values: unknown[] } {
  const ids = integerArrayLiteral(completions.map((c) => c.jobId));
  return {
    text: `UPDATE jobs SET
       state = CASE WHEN done.state = 'review_ready' AND jobs.cancel_requested_at IS NOT NULL THEN 'canceled' ELSE done.state END,
       result = coalesce(done.result, jobs.result),
       progress = coalesce(done.progress, jobs.progress),
       lease_owner = NULL, lease_expires_at = NULL, outage_started_at = NULL, outage_dependency = NULL,
       finished_at = CASE WHEN done.state = 'review_ready' AND jobs.cancel_requested_at IS NULL THEN NULL ELSE now() END,
       updated_at = now()
     FROM unnest($2::bigint[], $3::int[], $4::text[], $5::jsonb[], $6::jsonb[]) AS done(id, attempt, state, result, progress)
     WHERE jobs.id = done.id AND jobs.id = ANY($2::bigint[]) AND jobs.attempts = done.attempt AND jobs.lease_owner = $1
       AND jobs.state = 'running' AND jobs.archived = false
     RETURNING jobs.id, jobs.state`,
    values: [
      workerId,
      ids,
      integerArrayLiteral(completions.map((c) => c.attempt)),
      wordArrayLiteral(completions.map((c) => c.state)),
      completions.map((c) => c.result ?? null),
      completions.map((c) => c.progress ?? null),
    ],
  };
}

/** What the completion's transaction sets (SET LOCAL) for its statement (completeStatement says why). */
export const COMPLETION_PLAN_SETTINGS: readonly string[] = ['enable_nestloop = off'];

/**
 * Records many completions in one statement (the runner batches them). Returns the state each applied one was stored
 * in, by id (a review_ready outcome of a run asked to cancel is stored `canceled`); the others had lost their lease and
 * their outcome is discarded. Given a client rather than a pool, the statement runs as it is, in whatever transaction
 * and with whatever settings the caller has.
 */
export async function completeJobs(db: Queryable, workerId: string, completions: Completion[]): Promise<Map<number, CompletionState>> {
  if (completions.length === 0) return new Map();
  const statement = completeStatement(workerId, completions);
  type Stored = { id: number; state: CompletionState };
  const { rows } = isPool(db)
    ? await withTransaction(db, (client) => client.query<Stored>(statement), { setLocal: COMPLETION_PLAN_SETTINGS })
    : await db.query<Stored>(statement);
  return new Map(rows.map((row) => [Number(row.id), row.state]));
}

export interface FailureRequest {
  lease: Lease;
  error: JobErrorRecord;
  /** Delay before the retry, from the backoff policy; ignored for permanent errors and used-up attempts. */
  retryDelayMs: number;
  progress?: Record<string, unknown> | null;
  /** The failure is an outage of S3 or the database (outage.ts outageFailure): the run waits, its attempt not counted. */
  outage?: OutageFailure | undefined;
}

/** How a failure was recorded. */
export interface RecordedFailure {
  state: JobState;
  /** The run waits out a dependency outage: requeued without counting the attempt. */
  waiting: boolean;
  /** The outage lasted longer than its budget: the run ended `dead` with DEPENDENCY_OUTAGE. */
  outageOverBudget: boolean;
  /** When the outage began (this failure's or an earlier one's), for outage failures. */
  outageStartedAt: Date | null;
  /** The delay before the retry, when the run went back to the queue. */
  retryInMs: number | null;
}

// One statement, fenced by the lease:
//   held    the job row while this worker holds the lease, locked;
//   outage  when the outage began: this failure's start, or the start stored by an earlier outage failure of the same
//           dependency when this attempt never saw the dependency work (it is the same outage going on). A new outage
//           is waited for only while the run's consecutive outage failures (last_error.context.outageRestarts) have
//           begun fewer than MAX_OUTAGE_RESTARTS ($16) new outages (outage.ts says why); past that, a new outage
//           counts the attempt like any other failure. Progress the attempt keeps ($17) starts the count again.
//   next    the new state: permanent → failed; an outage within its budget → queued, the attempt given back
//           (attempts - 1, as releaseJobs does), after a wait that grows with the outage (as long as it has lasted,
//           from the base up to the cap, equal jitter, never past the budget's end, so the last try comes when the
//           budget runs out); an outage over its budget → dead with DEPENDENCY_OUTAGE naming it; otherwise
//           attempts used up → dead, else queued after the backoff. A cancel an operator asked for while the
//           attempt was failing wins over any retry or dead end (as in the rescue): the run ends canceled.
const RECORD_FAILURE = `
WITH held AS (
  SELECT id, attempts, max_attempts, outage_started_at, outage_dependency, cancel_requested_at,
    coalesce(CASE WHEN jsonb_typeof(last_error -> 'context' -> 'outageRestarts') = 'number'
                  THEN (last_error -> 'context' ->> 'outageRestarts')::numeric END, 0) AS restarts
  FROM jobs
  WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND state = 'running' AND archived = false
  FOR UPDATE
), kind_of AS (
  SELECT held.*,
    $8::text IS NOT NULL AND $7 <> 'permanent' AS is_outage,
    $9::boolean OR held.outage_started_at IS NULL OR held.outage_dependency IS DISTINCT FROM $8::text AS fresh,
    -- A new outage that counts: after progress (not kept), or another dependency than the one waited for. Not one
    -- found at the start of an attempt with no outage stored (the first of a series, or the one after a count).
    NOT $17::boolean AND ($9::boolean OR (held.outage_started_at IS NOT NULL AND held.outage_dependency IS DISTINCT FROM $8::text)) AS counted
  FROM held
), outage AS (
  SELECT kind_of.*,
    CASE WHEN NOT is_outage OR (counted AND restarts >= $16::int) THEN NULL::timestamptz
         WHEN fresh THEN now() - $10::double precision * interval '1 millisecond'
         ELSE outage_started_at END AS began,
    CASE WHEN NOT is_outage THEN restarts
         WHEN $17::boolean THEN 0
         WHEN counted AND restarts < $16::int THEN restarts + 1
         ELSE restarts END AS restarts_now
  FROM kind_of
), judged AS (
  SELECT outage.*,
    extract(epoch FROM now() - outage.began) * 1000 AS elapsed_ms,
    outage.began IS NOT NULL AND now() - outage.began > $11::double precision * interval '1 millisecond' AS over_budget
  FROM outage
), next AS (
  SELECT judged.*,
    judged.began IS NOT NULL AND NOT judged.over_budget AND judged.cancel_requested_at IS NULL AS waiting,
    CASE WHEN $7 = 'permanent' THEN 'failed'
         WHEN judged.cancel_requested_at IS NOT NULL THEN 'canceled'
         WHEN judged.over_budget THEN 'dead'
         WHEN judged.began IS NOT NULL THEN 'queued'
         WHEN judged.attempts >= judged.max_attempts THEN 'dead'
         ELSE 'queued' END AS state,
    CASE WHEN judged.began IS NULL THEN $5::double precision
         ELSE greatest(0, least($11::double precision - judged.elapsed_ms,
                                least($13::double precision, greatest($12::double precision, judged.elapsed_ms)) * $14::double precision))
    END AS delay_ms,
    to_char(judged.began AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS began_iso
  FROM judged
)
UPDATE jobs SET
  state = next.state,
  attempts = CASE WHEN next.waiting THEN jobs.attempts - 1 ELSE jobs.attempts END,
  run_at = CASE WHEN next.state = 'queued' THEN now() + next.delay_ms * interval '1 millisecond' ELSE jobs.run_at END,
  finished_at = CASE WHEN next.state = 'queued' THEN NULL ELSE now() END,
  last_error = CASE
    WHEN next.over_budget THEN $4::jsonb || jsonb_build_object(
      'code', '${DEPENDENCY_OUTAGE_CODE}',
      'message', format('%s unavailable since %s (%s s), longer than the dependency outage budget of %s s (DEPENDENCY_OUTAGE_BUDGET_MS); last error: %s %s',
                        $15::text, next.began_iso, round(next.elapsed_ms / 1000), round($11::numeric / 1000), $4::jsonb ->> 'code', $4::jsonb ->> 'message'),
      'context', coalesce($4::jsonb -> 'context', '{}'::jsonb) || jsonb_build_object(
        'dependency', $8::text, 'outageSince', next.began_iso, 'outageBudgetMs', $11::double precision, 'lastCode', $4::jsonb ->> 'code'))
    WHEN next.waiting THEN $4::jsonb || jsonb_build_object(
      'context', coalesce($4::jsonb -> 'context', '{}'::jsonb) || jsonb_build_object(
        'dependency', $8::text, 'outageSince', next.began_iso, 'attemptCounted', false, 'outageRestarts', next.restarts_now))
    -- An outage failure counted because the run has begun MAX_OUTAGE_RESTARTS outages: the count stays with the run.
    WHEN next.is_outage AND next.began IS NULL THEN $4::jsonb || jsonb_build_object(
      'context', coalesce($4::jsonb -> 'context', '{}'::jsonb) || jsonb_build_object(
        'dependency', $8::text, 'attemptCounted', true, 'outageRestarts', next.restarts_now))
    ELSE $4::jsonb END,
  progress = coalesce($6, jobs.progress),
  outage_started_at = CASE WHEN next.waiting THEN next.began END,
  outage_dependency = CASE WHEN next.waiting THEN $8::text END,
  lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
FROM next WHERE jobs.id = next.id AND jobs.archived = false
RETURNING jobs.state, next.waiting, next.over_budget, next.began, CASE WHEN jobs.state = 'queued' THEN next.delay_ms END AS delay_ms`;

/** What recordFailure's statement returns (and failureStoredEarlier reads back). */
interface RecordedFailureRow {
  state: JobState;
  waiting: boolean;
  over_budget: boolean;
  began: Date | null;
  delay_ms: number | null;
}

function recordedFailureOf(row: RecordedFailureRow): RecordedFailure {
  return {
    state: row.state,
    waiting: row.waiting,
    outageOverBudget: row.over_budget,
    outageStartedAt: row.began,
    retryInMs: row.delay_ms === null ? null : Math.round(row.delay_ms),
  };
}

/**
 * Records a failed attempt: a permanent error ends the run `failed`; a transient one requeues it after the backoff,
 * or ends it `dead` (the dead-letter state) when its attempts are used up; an outage of S3 or the database requeues
 * it without counting the attempt until the outage outlasts its budget (then `dead`, DEPENDENCY_OUTAGE). Returns
 * null when the lease was lost.
 */
export async function recordFailure(db: Queryable, request: FailureRequest): Promise<RecordedFailure | null> {
  const outage = request.outage;
  const { rows } = await db.query<RecordedFailureRow>(
    RECORD_FAILURE,
    [
      request.lease.jobId,
      request.lease.owner,
      request.lease.attempt,
      request.error,
      Math.max(0, Math.round(request.retryDelayMs)),
      request.progress ?? null,
      request.error.class,
      outage?.dependency ?? null,
      outage?.progressed ?? false,
      outage ? outage.sinceMsAgo + Math.max(0, outage.measuredAt === undefined ? 0 : Date.now() - outage.measuredAt) : 0,
      outage?.policy.budgetMs ?? 0,
      outage?.policy.baseMs ?? 0,
      outage?.policy.maxMs ?? 0,
      outage?.jitter ?? 1,
      capitalised(outage ? dependencyName(outage.dependency) : ''),
      MAX_OUTAGE_RESTARTS,
      outage?.progressKept ?? false,
    ],
  );
  return rows[0] ? recordedFailureOf(rows[0]) : null;
}

/**
 * The failure `error` as a try of recordFailure stored it, when that try's answer was lost (the connection dropped
 * after its COMMIT) and the next try found the lease no longer held: the run holds this very error record (its
 * attempt, time and worker) and no lease. Null when it holds something else (the lease was really lost).
 */
export async function failureStoredEarlier(db: Queryable, jobId: number, error: JobErrorRecord): Promise<RecordedFailure | null> {
  const { rows } = await db.query<RecordedFailureRow>(
    // Still as the failure left it: not claimed and finished since by another attempt (a claim and a completion keep
    // last_error), its attempts the failure's (one fewer when it waits out an outage, the attempt not counted). An
    // outage past its budget no longer has outage_started_at: its start is in the record's context.
    `SELECT state, outage_dependency IS NOT NULL AS waiting, last_error ->> 'code' = '${DEPENDENCY_OUTAGE_CODE}' AS over_budget,
       coalesce(outage_started_at, (last_error -> 'context' ->> 'outageSince')::timestamptz) AS began,
       CASE WHEN state = 'queued' THEN greatest(0, extract(epoch FROM run_at - now()) * 1000) END AS delay_ms
     FROM jobs
     WHERE id = $1 AND lease_owner IS NULL AND last_error ->> 'at' = $2 AND last_error ->> 'attempt' = $3
       AND last_error ->> 'worker' IS NOT DISTINCT FROM $4
       AND state IN ('queued', 'failed', 'dead', 'canceled') AND attempts = $5::int - (outage_dependency IS NOT NULL)::int`,
    [jobId, error.at, String(error.attempt), error.worker ?? null, error.attempt],
  );
  return rows[0] ? recordedFailureOf(rows[0]) : null;
}

/** {@link recordFailure}, returning only the new state (null when the lease was lost). */
export async function failJob(db: Queryable, request: FailureRequest): Promise<JobState | null> {
  return (await recordFailure(db, request))?.state ?? null;
}

function capitalised(text: string): string {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A run given back by releaseJobs: queued again, or ended canceled (a cancel was asked for it). */
export interface ReleasedJob {
  id: number;
  state: 'queued' | 'canceled';
  kind: string;
  tenantId: string | null;
}

/**
 * Gives jobs back to the queue without counting the attempt (graceful shutdown, runs claimed but not started): another
 * worker resumes them at once. Returns the runs released and the state each ended in.
 */
export async function releaseJobs(
  db: Queryable,
  workerId: string,
  leases: Array<Pick<Lease, 'jobId' | 'attempt'>>,
): Promise<ReleasedJob[]> {
  if (leases.length === 0) return [];
  const { rows } = await db.query<{ id: number; state: ReleasedJob['state']; kind: string; tenant_id: string | null }>(
    // A run an operator asked to cancel during the shutdown ends canceled instead (its handler was already stopping,
    // so the cancel never reached it).
    `WITH released AS (
       UPDATE jobs SET state = CASE WHEN jobs.cancel_requested_at IS NULL THEN 'queued' ELSE 'canceled' END,
         finished_at = CASE WHEN jobs.cancel_requested_at IS NULL THEN NULL ELSE now() END,
         attempts = jobs.attempts - 1, run_at = now(),
         lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
       FROM unnest($2::bigint[], $3::int[]) AS held(id, attempt)
       WHERE jobs.id = held.id AND jobs.attempts = held.attempt AND jobs.lease_owner = $1 AND jobs.state = 'running' AND jobs.archived = false
       RETURNING jobs.id, jobs.kind, jobs.state, jobs.tenant_id
     )
     SELECT id, state, kind, tenant_id, CASE WHEN state = 'queued' THEN pg_notify('${JOBS_READY_CHANNEL}', kind) END AS woke FROM released`,
    [workerId, integerArrayLiteral(leases.map((lease) => lease.jobId)), integerArrayLiteral(leases.map((lease) => lease.attempt))],
  );
  return rows.map((row) => ({ id: row.id, state: row.state, kind: row.kind, tenantId: row.tenant_id }));
}
