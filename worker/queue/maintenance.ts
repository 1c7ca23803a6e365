// Maintenance statements: rescue of expired leases, retention and archiving of finished runs, statistics of `jobs`.
import type { QueryConfig } from 'pg';
import { releaseClient, withTransaction, type Pool, type Queryable } from '../db/pool.js';
import { JOBS_READY_CHANNEL } from './channels.js';
import { LEASE_EXPIRED_CODE } from './errors.js';
import { TERMINAL_STATES } from './types.js';

export interface RescueResult {
  requeued: number[];
  dead: number[];
  canceled: number[];
}

/**
 * How long a rescue statement may go unanswered. Given a pool, a rescue sent into a connection gone silent (a failover
 * that takes the old primary's address away) would wait until TCP gives up, about 15 minutes, and no run of a worker
 * that died meanwhile would be rescued by this worker; given up, its connection is discarded and the next round uses
 * a new one. A rescue of a batch takes milliseconds.
 */
export const RESCUE_STATEMENT_TIMEOUT_MS = 60_000;

/**
 * Returns running jobs whose lease expired (their worker crashed, froze or lost the database) to `queued`, or to
 * `dead` when no attempts remain, recording why in last_error. Locks with SKIP LOCKED, so several workers may run
 * the rescue at once, and a job whose owner is committing right now is left for the next round.
 */
export async function rescueExpiredLeases(db: Queryable, batchSize = 1000, timeoutMs = RESCUE_STATEMENT_TIMEOUT_MS): Promise<RescueResult> {
  const { rows } = await db.query<{ id: number; state: string }>({
    // A pool discards a connection whose statement timed out (pool.query releases it with the error).
    query_timeout: timeoutMs,
    text: `WITH expired AS (
       SELECT id FROM jobs WHERE state = 'running' AND lease_expires_at < now()
       ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
     ), rescued AS (
       UPDATE jobs SET
         -- An operator asked to cancel it and its worker died before it could: honour the cancel.
         state = CASE WHEN jobs.cancel_requested_at IS NOT NULL THEN 'canceled'
                      WHEN jobs.attempts >= jobs.max_attempts THEN 'dead' ELSE 'queued' END,
         finished_at = CASE WHEN jobs.cancel_requested_at IS NOT NULL OR jobs.attempts >= jobs.max_attempts THEN now() END,
         run_at = now(),
         last_error = jsonb_build_object(
           'message', format('lease of worker %s expired at %s without a heartbeat (worker crashed, froze or lost the database)',
                             jobs.lease_owner, jobs.lease_expires_at),
           'code', '${LEASE_EXPIRED_CODE}', 'class', 'transient', 'attempt', jobs.attempts,
           'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           'worker', jobs.lease_owner, 'internal', true, 'context', jobs.last_error -> 'context'),
         lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
       FROM expired WHERE jobs.id = expired.id
       RETURNING jobs.id, jobs.state, jobs.kind
     )
     SELECT id, state, CASE WHEN state = 'queued' THEN pg_notify('${JOBS_READY_CHANNEL}', kind) END AS woke FROM rescued`,
    values: [batchSize],
  } as QueryConfig);
  return {
    requeued: rows.filter((row) => row.state === 'queued').map((row) => row.id),
    dead: rows.filter((row) => row.state === 'dead').map((row) => row.id),
    canceled: rows.filter((row) => row.state === 'canceled').map((row) => row.id),
  };
}

interface ChildReference {
  table: string;
  column: string;
  /** What happens to the row when its run is deleted. */
  onDelete: 'cascade' | 'set-null';
}

/**
 * Tables whose rows point at runs, from the registry job_child_tables (migration 20261206063000: a partitioned jobs
 * cannot be the target of foreign keys). Per-item records are deleted with their run; business rows such as
 * documents only lose the link.
 */
async function childReferences(db: Queryable): Promise<ChildReference[]> {
  const { rows } = await db.query<{ child: string; column: string; action: string }>(
    'SELECT table_name AS child, column_name AS column, on_delete AS action FROM job_child_tables ORDER BY 1, 2',
  );
  return rows.map((row) => ({
    table: row.child,
    column: `"${row.column.replace(/"/g, '""')}"`,
    onDelete: row.action === 'cascade' ? 'cascade' : 'set-null',
  }));
}

/**
 * Deletes finished runs older than the retention, at most `batchSize` runs per call. A run's per-item rows (a
 * campaign has a million import_items) go first, `childChunk` rows per statement, so no single statement holds
 * millions of row locks or runs for minutes next to the live workload; the job rows go last. Returns how many runs
 * were deleted.
 *
 * Every statement is a transaction of its own (a batch in one transaction lasted minutes for a campaign: it pinned
 * vacuum's horizon under the live queue and held the documents it unlinked). What keeps an operator from requeueing a
 * run whose rows are half gone is the mark the first statement sets, retention_started_at (migration
 * 20261207140000): requeueWhere refuses a marked run. The mark takes the batch's rows with SKIP LOCKED, so a run an
 * operator is changing is left for a later round; a run a round left marked (the process died) is taken again an hour
 * on, and a round in progress is not joined by another worker's.
 */
export async function deleteExpiredJobs(
  pool: Pool,
  retentionDays: number,
  batchSize = 100,
  childChunk = 5_000,
): Promise<number> {
  const client = await pool.connect();
  try {
    const { rows } = await client.query<{ id: number }>(
      `WITH batch AS (
         SELECT id FROM jobs
         WHERE finished_at < now() - $1 * interval '1 day' AND state = ANY($3::text[])
           -- A dead run stays until resolved, then as long again from its resolution (it is kept as history).
           AND (state <> 'dead' OR resolved_at < now() - $1 * interval '1 day')
           AND (retention_started_at IS NULL OR retention_started_at < now() - interval '1 hour')
         ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED
       )
       UPDATE jobs SET retention_started_at = now() FROM batch WHERE jobs.id = batch.id RETURNING jobs.id`,
      [retentionDays, batchSize, [...TERMINAL_STATES]],
    );
    const ids = rows.map((row) => row.id);
    if (ids.length === 0) return 0;
    for (const child of await childReferences(client)) {
      const change =
        child.onDelete === 'cascade'
          ? `DELETE FROM ${child.table}`
          : `UPDATE ${child.table} SET ${child.column} = NULL`;
      for (;;) {
        const { rowCount } = await client.query(
          `${change} WHERE ctid = ANY(ARRAY(SELECT ctid FROM ${child.table} WHERE ${child.column} = ANY($1) LIMIT $2))`,
          [ids, childChunk],
        );
        if ((rowCount ?? 0) < childChunk) break;
      }
    }
    const { rowCount } = await client.query('DELETE FROM jobs WHERE id = ANY($1) AND retention_started_at IS NOT NULL', [ids]);
    return rowCount ?? 0;
  } finally {
    releaseClient(client);
  }
}

/**
 * Moves finished runs that ended more than `afterSeconds` ago from jobs_live to jobs_archive (at most `batchSize`
 * per call; returns how many), so the live partition holds the queue and its recent past only. The delay keeps the
 * move away from the statements that still touch a run just after it ends (its worker's last writes, an operator's
 * first look): a statement that waits on a row while it moves fails with 40001. SKIP LOCKED leaves runs someone
 * holds for the next round. The row keeps its id, and its child rows stay: the move is an UPDATE, not a delete.
 */
export async function archiveFinishedRuns(
  db: Queryable,
  afterSeconds: number,
  batchSize = 5_000,
  /** Leave runs retention deletes anyway (older than this many days) where they are; null: move them too. */
  retentionDays: number | null = null,
): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE jobs SET archived = true
     WHERE archived = false AND id = ANY(ARRAY(
       SELECT id FROM jobs_live
       WHERE finished_at < now() - $1 * interval '1 second' AND state = ANY($3::text[])
         AND ($4::int IS NULL OR finished_at >= now() - $4::int * interval '1 day')
       ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED))`,
    [afterSeconds, batchSize, [...TERMINAL_STATES], retentionDays],
  );
  return rowCount ?? 0;
}

/** Statistics of `jobs` as a whole older than this are refreshed even when its size barely changed. */
export const JOBS_STATISTICS_MAX_AGE_HOURS = 24;
/** pg_try_advisory_xact_lock key: one worker of the fleet analyzes at a time, the others skip. */
const ANALYZE_LOCK = `hashtextextended('bulk-import-worker/analyze-jobs', 0)`;

export interface JobsStatistics {
  /** Why `jobs` was analyzed, or null when its statistics were fresh, another worker held the lock, or it was skipped. */
  analyzed: 'never' | 'rows' | 'age' | null;
  /** Stale statistics not refreshed, and why: the database user may not analyze `jobs`, or Postgres skipped it. */
  skipped?: { reason: 'never' | 'rows' | 'age'; because: string };
  /** Rows the partitions hold (their own estimates) and rows `jobs` had when it was last analyzed. */
  partitionRows: number;
  parentRows: number;
}

/** Why the statistics of `jobs` need refreshing (see analyzeJobsIfStale), or null when they are fresh. */
export function jobsStatisticsStaleness(state: {
  partitionRows: number;
  parentRows: number;
  hoursSinceAnalyze: number | null;
  /** Whether autovacuum (or anyone) vacuumed or analyzed a partition since `jobs` was analyzed. */
  partitionsCountedSince: boolean;
}): JobsStatistics['analyzed'] {
  if (state.hoursSinceAnalyze === null) return 'never';
  // The partitions' row estimates move only when they are vacuumed or analyzed; until then a difference from the
  // parent's own count (a fresher sample) is theirs to catch up, not a change since.
  if (state.partitionsCountedSince && Math.abs(state.partitionRows - state.parentRows) > 50 + 0.1 * state.parentRows) return 'rows';
  return state.hoursSinceAnalyze >= JOBS_STATISTICS_MAX_AGE_HOURS ? 'age' : null;
}

/**
 * Analyzes the partitioned `jobs` table itself when its statistics are stale. Autovacuum analyzes the partitions
 * (jobs_live, jobs_archive) but never a partitioned table, and the planner uses the parent's own statistics for the
 * estimates above the partitions' scans (a join or aggregate over runs of both partitions); the migration that split
 * the table analyzed it once. Stale means never analyzed (or the statistics were lost with a failover), a row count
 * that moved by more than autovacuum's default for a table (50 rows + 10 %) since, or older than
 * JOBS_STATISTICS_MAX_AGE_HOURS: retention deleting what arrives keeps the count flat while the timestamps move on.
 * `ANALYZE ONLY` (Postgres 18) leaves the partitions to autovacuum; before 18 the partitions are sampled again too, in
 * this one transaction. A database user that may not analyze `jobs` (owns neither it nor the database; from Postgres
 * 17, has no MAINTAIN on it either) does not try, and one that Postgres skips (SKIP_LOCKED, a warning) is told so: both are
 * returned as `skipped`, not as analyzed.
 */
export async function analyzeJobsIfStale(pool: Pool): Promise<JobsStatistics> {
  return withTransaction(pool, async (client) => {
    const { rows } = await client.query<{
      locked: boolean;
      partition_rows: number;
      parent_rows: number;
      hours: number | null;
      counted: boolean | null;
      only: boolean;
      allowed: boolean;
    }>(
      `SELECT pg_try_advisory_xact_lock(${ANALYZE_LOCK}) AS locked,
         (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = 'jobs'::regclass) AS partition_rows,
         greatest(p.reltuples, 0)::float8 AS parent_rows,
         extract(epoch FROM now() - s.last_analyze)::float8 / 3600 AS hours,
         (SELECT max(greatest(t.last_analyze, t.last_autoanalyze, t.last_vacuum, t.last_autovacuum))
          FROM pg_inherits i JOIN pg_stat_all_tables t ON t.relid = i.inhrelid WHERE i.inhparent = 'jobs'::regclass) > s.last_analyze AS counted,
         current_setting('server_version_num')::int >= 180000 AS only,
         -- Who may analyze a table: its owner (or a member of the owning role), the database's owner, a superuser
         -- (a member of every role), and from Postgres 17 whoever has MAINTAIN on it (pg_maintain, a grant).
         pg_has_role(p.relowner, 'USAGE')
           OR pg_has_role((SELECT datdba FROM pg_database WHERE datname = current_database()), 'USAGE')
           OR CASE WHEN current_setting('server_version_num')::int >= 170000 THEN has_table_privilege(p.oid, 'MAINTAIN') ELSE false END
           AS allowed
       FROM pg_class p LEFT JOIN pg_stat_all_tables s ON s.relid = p.oid WHERE p.oid = 'jobs'::regclass`,
    );
    const row = rows[0]!;
    const counts = { partitionRows: row.partition_rows, parentRows: row.parent_rows };
    const analyzed = jobsStatisticsStaleness({ ...counts, hoursSinceAnalyze: row.hours, partitionsCountedSince: row.counted === true });
    if (!row.locked || analyzed === null) return { analyzed: null, ...counts };
    if (!row.allowed) {
      const because = 'the database user may not analyze jobs (it must own it or the database, or have MAINTAIN on it from Postgres 17)';
      return { analyzed: null, skipped: { reason: analyzed, because }, ...counts };
    }
    // SKIP_LOCKED: behind a vacuum of the table (or a migration's lock) it skips rather than waits, and with it the
    // queue's statements that would queue behind a waiting ANALYZE; the next round tries again. Postgres says it
    // skipped with a warning (and nothing else): what it says is the reason. Only a warning about `jobs` itself counts
    // (lock not available, 55P03, or another naming it; the severity's text is in the server's language): without
    // ONLY (before Postgres 18) the partitions are visited too, and a partition skipped leaves the parent analyzed.
    const skips: string[] = [];
    const onNotice = (notice: { code?: string; message?: string }) => {
      if (notice.code === '55P03' || (notice.message ?? '').includes('"jobs"')) skips.push(notice.message ?? notice.code!);
    };
    client.on('notice', onNotice);
    try {
      await client.query(`ANALYZE (SKIP_LOCKED) ${row.only ? 'ONLY ' : ''}jobs`);
    } finally {
      client.off('notice', onNotice);
    }
    if (skips.length > 0) return { analyzed: null, skipped: { reason: analyzed, because: skips.join('; ') }, ...counts };
    return { analyzed, ...counts };
  });
}
