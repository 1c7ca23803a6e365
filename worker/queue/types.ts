// The shapes of a job as the queue stores and hands it out.

export const JOB_STATES = ['queued', 'running', 'review_ready', 'succeeded', 'partial', 'failed', 'dead', 'canceled'] as const;
export type JobState = (typeof JOB_STATES)[number];

/**
 * What a kind may be called: 1 to 64 of [a-z0-9-], not starting with a hyphen. The jobs table's jobs_kind_check holds
 * the same rule, written without a regular expression (migration 20261206213000).
 */
export const JOB_KIND_PATTERN_SOURCE = '^[a-z0-9][a-z0-9-]{0,63}$';
export const JOB_KIND_PATTERN = new RegExp(JOB_KIND_PATTERN_SOURCE);

/** States in which a run is still active: enqueuing the same dedupe key returns it. */
export const ACTIVE_STATES: readonly JobState[] = ['queued', 'running', 'review_ready'];
const TERMINAL = ['succeeded', 'partial', 'failed', 'dead', 'canceled'] as const satisfies readonly JobState[];
/** A state a run never leaves by itself (requeue/replay start it again). */
export type TerminalState = (typeof TERMINAL)[number];
/** States a run never leaves by itself (requeue/replay start it again). */
export const TERMINAL_STATES: readonly JobState[] = TERMINAL;

/**
 * A state list as an SQL literal, `('queued', 'running')`, for `state IN …`. Written into the statement rather than
 * bound, so the planner can match it against a partial index's predicate (and ON CONFLICT can infer one).
 */
export function sqlStates(states: readonly JobState[]): string {
  return `(${states.map((state) => `'${state}'`).join(', ')})`;
}

export type ErrorClass = 'transient' | 'permanent';

/** What `last_error` holds: enough to diagnose a failure without the logs. */
export interface JobErrorRecord {
  message: string;
  /** A stable code: a Postgres SQLSTATE, an S3 error name, a Node error code, or one of ours (LEASE_EXPIRED …). */
  code: string;
  class: ErrorClass;
  attempt: number;
  /** ISO time of the failure. */
  at: string;
  worker?: string;
  /** The handler's context: file, bucket, key, row … */
  context?: Record<string, unknown>;
  /** First lines of the stack, for bugs. */
  stack?: string;
  /**
   * The message is not one of ours written for the run's owner (a JobError's) but an internal failure's: the driver's,
   * the SDK's, a bug's, the rescuer's naming a worker. It may name hosts, addresses or tables, so a tenant sees a plain
   * sentence in its place (queue/visible-errors.ts). Absent from records stored before it (judged there by their shape).
   */
  internal?: boolean;
}

export interface JobRow {
  id: number;
  kind: string;
  tenantId: string | null;
  payload: Record<string, unknown>;
  dedupeKey: string | null;
  state: JobState;
  priority: number;
  runAt: Date;
  attempts: number;
  maxAttempts: number;
  leaseOwner: string | null;
  leaseExpiresAt: Date | null;
  heartbeatAt: Date | null;
  cancelRequestedAt: Date | null;
  progress: Record<string, unknown> | null;
  result: Record<string, unknown> | null;
  lastError: JobErrorRecord | null;
  /** While the run waits out a dependency outage (queue/outage.ts): since when, and which dependency. */
  outageStartedAt?: Date | null;
  outageDependency?: 's3' | 'database' | null;
  createdAt: Date;
  /** First claimed (stays across retries). */
  startedAt: Date | null;
  /** The current (or last) attempt's claim; null for runs finished before it was recorded. */
  claimedAt?: Date | null;
  finishedAt: Date | null;
  updatedAt: Date;
}

/** A job as a worker holds it after a claim: the lease is identified by (id, leaseOwner, attempt). */
export interface ClaimedJob {
  id: number;
  kind: string;
  tenantId: string | null;
  payload: Record<string, unknown>;
  /** 1 on the first run; the fencing token together with the lease owner. */
  attempt: number;
  maxAttempts: number;
  /** Progress saved by an earlier attempt: handlers resume from it. */
  progress: Record<string, unknown> | null;
  leaseOwner: string;
  createdAt: Date;
  /** The W3C trace context the attempt's spans go under (its claim span), when tracing is on. */
  traceparent?: string | null;
  /** The dependency whose outage the run was waiting out when claimed (an earlier attempt stopped for it), if any. */
  outageDependency?: 's3' | 'database' | null;
}

/** The lease that fences every write about a claimed job. */
export interface Lease {
  jobId: number;
  owner: string;
  attempt: number;
}

export const JOB_COLUMNS = `id, kind, tenant_id, payload, dedupe_key, state, priority, run_at, attempts, max_attempts,
  lease_owner, lease_expires_at, heartbeat_at, cancel_requested_at, progress, result, last_error, outage_started_at,
  outage_dependency, created_at, started_at, claimed_at, finished_at, updated_at`;

export function toJobRow(row: Record<string, unknown>): JobRow {
  return {
    id: row.id as number,
    kind: row.kind as string,
    tenantId: row.tenant_id as string | null,
    payload: row.payload as Record<string, unknown>,
    dedupeKey: row.dedupe_key as string | null,
    state: row.state as JobState,
    priority: row.priority as number,
    runAt: row.run_at as Date,
    attempts: row.attempts as number,
    maxAttempts: row.max_attempts as number,
    leaseOwner: row.lease_owner as string | null,
    leaseExpiresAt: row.lease_expires_at as Date | null,
    heartbeatAt: row.heartbeat_at as Date | null,
    cancelRequestedAt: row.cancel_requested_at as Date | null,
    progress: row.progress as Record<string, unknown> | null,
    result: row.result as Record<string, unknown> | null,
    lastError: row.last_error as JobErrorRecord | null,
    outageStartedAt: (row.outage_started_at as Date | null | undefined) ?? null,
    outageDependency: (row.outage_dependency as 's3' | 'database' | null | undefined) ?? null,
    createdAt: row.created_at as Date,
    startedAt: row.started_at as Date | null,
    claimedAt: (row.claimed_at as Date | null | undefined) ?? null,
    finishedAt: row.finished_at as Date | null,
    updatedAt: row.updated_at as Date,
  };
}
