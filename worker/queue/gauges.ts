// Queue gauges (what the elected worker publishes to CloudWatch) and the advisory lock that elects that worker.
import type { Queryable } from '../db/pool.js';

/** The queue's state for one job kind, as published every METRICS_GAUGE_INTERVAL_MS. */
export interface KindGauges {
  kind: string;
  /** Runs in `queued`, due or waiting for a retry's backoff or a run time ahead. */
  queued: number;
  /**
   * Queued runs that are due now (run_at reached): the work waiting for a worker. Not those scheduled for later (a
   * submit's runAt) or waiting out a retry's backoff: what autoscaling and the work-waits alarm read, so that a run
   * scheduled for tomorrow neither keeps the fleet at its maximum nor pages on-call for a service at 0 tasks.
   */
  due: number;
  /** How long the oldest *due* queued run has waited since it became due (run_at); 0 when none is due. */
  oldestQueuedAgeSeconds: number;
  /**
   * Runs running under a live lease. Not one a task that is gone left `running` (killed, or its release failed) until a
   * rescuer takes it: with the service at 0 tasks no rescuer runs, and the work-waits alarm, which asks for no running
   * run, would stay silent.
   */
  running: number;
  /**
   * How long the oldest running run's attempt under way has been running, since its claim (claimed_at; started_at for
   * a run claimed before that column existed); 0 when none runs. Not since the run first started: a CSV import's
   * finalize after hours of review, or a run an operator requeued or replayed days after its first start, has not
   * been running all that time. A run that keeps failing is the consecutive-failures and dead-jobs alarms' to show.
   */
  oldestRunningAgeSeconds: number;
  /** Runs in the dead-letter state, until replayed, resolved or purged. */
  dead: number;
  /**
   * The most failed attempts in a row of any run still queued or running: a queued run with a last error has failed
   * every attempt it counted (a success ends the run; releases and outage waits give their attempt back), a running
   * one all but the attempt under way. An operator requeue with --reset-attempts starts the count again.
   */
  maxConsecutiveFailures: number;
}

// One statement over the queued, running and unresolved dead runs. Each part of the WHERE is the predicate of a
// partial index (jobs_claim_order, jobs_lease_expiry, jobs_dead_unresolved), written as an OR so that the planner can
// combine the three; as `state IN (…)`, or counting resolved dead runs, it read the whole table, finished history and
// all, once a minute.
export const QUEUE_GAUGES_STATEMENT = `
SELECT kind,
  count(*) FILTER (WHERE state = 'queued')::int AS queued,
  count(*) FILTER (WHERE state = 'queued' AND run_at <= now())::int AS due,
  coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'queued' AND run_at <= now())), 0)::float8
    AS oldest_queued_age_seconds,
  count(*) FILTER (WHERE state = 'running' AND lease_expires_at > now())::int AS running,
  coalesce(extract(epoch FROM now() - min(coalesce(claimed_at, started_at)) FILTER (WHERE state = 'running')), 0)::float8
    AS oldest_running_age_seconds,
  count(*) FILTER (WHERE state = 'dead' AND resolved_at IS NULL)::int AS dead,
  coalesce(max(CASE WHEN state = 'running' THEN attempts - 1 ELSE attempts END)
    FILTER (WHERE state IN ('queued', 'running') AND last_error IS NOT NULL), 0)::int AS max_consecutive_failures
FROM jobs
WHERE state = 'queued' OR state = 'running' OR (state = 'dead' AND resolved_at IS NULL)
GROUP BY kind
ORDER BY kind`;

/**
 * Gauges per kind. Every kind in `knownKinds` is included even when it has no row, so an idle kind publishes zeros
 * (an alarm on it returns to OK instead of going silent).
 */
export async function readQueueGauges(db: Queryable, knownKinds: readonly string[] = []): Promise<KindGauges[]> {
  const { rows } = await db.query<{
    kind: string;
    queued: number;
    due: number;
    oldest_queued_age_seconds: number;
    running: number;
    oldest_running_age_seconds: number;
    dead: number;
    max_consecutive_failures: number;
  }>(QUEUE_GAUGES_STATEMENT);
  const byKind = new Map<string, KindGauges>();
  for (const kind of knownKinds) byKind.set(kind, { kind, ...NO_GAUGES });
  for (const row of rows) {
    byKind.set(row.kind, {
      kind: row.kind,
      queued: row.queued,
      due: row.due,
      oldestQueuedAgeSeconds: Math.max(0, Math.floor(row.oldest_queued_age_seconds)),
      running: row.running,
      oldestRunningAgeSeconds: Math.max(0, Math.floor(row.oldest_running_age_seconds)),
      dead: row.dead,
      maxConsecutiveFailures: Math.max(0, row.max_consecutive_failures),
    });
  }
  return [...byKind.values()].sort((a, b) => a.kind.localeCompare(b.kind));
}

const NO_GAUGES: Omit<KindGauges, 'kind'> = {
  queued: 0,
  due: 0,
  oldestQueuedAgeSeconds: 0,
  running: 0,
  oldestRunningAgeSeconds: 0,
  dead: 0,
  maxConsecutiveFailures: 0,
};

/** The totals over every kind: sums of the counts, the largest age and failure streak of any kind. */
export function totalGauges(perKind: readonly KindGauges[]): Omit<KindGauges, 'kind'> {
  return perKind.reduce(
    (total, gauges) => ({
      queued: total.queued + gauges.queued,
      due: total.due + gauges.due,
      oldestQueuedAgeSeconds: Math.max(total.oldestQueuedAgeSeconds, gauges.oldestQueuedAgeSeconds),
      running: total.running + gauges.running,
      oldestRunningAgeSeconds: Math.max(total.oldestRunningAgeSeconds, gauges.oldestRunningAgeSeconds),
      dead: total.dead + gauges.dead,
      maxConsecutiveFailures: Math.max(total.maxConsecutiveFailures, gauges.maxConsecutiveFailures),
    }),
    NO_GAUGES,
  );
}

// A session-level advisory lock: held while the connection that took it lives, released by Postgres when that
// connection closes — also when its worker crashes or is killed — so leadership moves to the next worker that asks.
// hashtextextended is stable across Postgres versions (hash partitioning depends on it), so every worker of every
// version agrees on the key.
const GAUGE_LEADER_LOCK = `hashtextextended('bulk-import-worker/queue-gauges', 0)`;

/**
 * Asks for gauge leadership on `session` (a dedicated connection, never a pooled one: the lock belongs to the
 * session). True when this session holds the lock now. Call it once per session: each success stacks a lock level.
 */
export async function tryAcquireGaugeLeadership(session: Queryable): Promise<boolean> {
  const { rows } = await session.query<{ acquired: boolean }>(`SELECT pg_try_advisory_lock(${GAUGE_LEADER_LOCK}) AS acquired`);
  return rows[0]?.acquired === true;
}

/** Gives up gauge leadership held by `session`. */
export async function releaseGaugeLeadership(session: Queryable): Promise<void> {
  await session.query(`SELECT pg_advisory_unlock(${GAUGE_LEADER_LOCK})`);
}
