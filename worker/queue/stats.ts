// Statements behind `bulk-import stats`: how many runs per kind and state, and what finished in a recent window.
import type { Queryable } from '../db/pool.js';
import { sqlStates, TERMINAL_STATES, type JobState, type TerminalState } from './types.js';

export interface StateCount {
  kind: string;
  state: JobState;
  count: number;
}

export async function countJobsByKindAndState(db: Queryable): Promise<StateCount[]> {
  const { rows } = await db.query<StateCount>(
    'SELECT kind, state, count(*)::int AS count FROM jobs GROUP BY kind, state ORDER BY kind, state',
  );
  return rows;
}

/** Per kind: the runs that ended in the window, in all and in each terminal state. */
export interface KindThroughput extends Record<TerminalState, number> {
  kind: string;
  /** Runs that ended (any terminal state) within the window. */
  finished: number;
  /** Finished runs per minute over the window. */
  perMinute: number;
  /** Mean and 95th percentile of first start → finish, in seconds (retries and backoff included). */
  meanSeconds: number | null;
  p95Seconds: number | null;
}

/** What finished in the last `windowMs`, per kind. Uses the jobs_finished_at index. */
export async function readThroughput(db: Queryable, windowMs: number): Promise<KindThroughput[]> {
  const { rows } = await db.query<Omit<KindThroughput, 'perMinute'>>(
    `SELECT kind,
       count(*)::int AS finished,
       ${TERMINAL_STATES.map((state) => `count(*) FILTER (WHERE state = '${state}')::int AS ${state},`).join('\n       ')}
       avg(extract(epoch FROM finished_at - started_at))::float8 AS "meanSeconds",
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at))::float8 AS "p95Seconds"
     FROM jobs
     WHERE finished_at >= now() - $1 * interval '1 millisecond'
       AND state IN ${sqlStates(TERMINAL_STATES)}
     GROUP BY kind ORDER BY kind`,
    [windowMs],
  );
  const minutes = windowMs / 60_000;
  return rows.map((row) => ({ ...row, perMinute: row.finished / minutes }));
}

/** Runs per state, of one tenant or (null) of all: the counts at the top of the admin runs page. */
export async function countJobsByState(db: Queryable, tenantId: string | null): Promise<Map<JobState, number>> {
  const { rows } = await db.query<{ state: JobState; count: number }>(
    'SELECT state, count(*)::int AS count FROM jobs WHERE ($1::text IS NULL OR tenant_id = $1) GROUP BY state',
    [tenantId],
  );
  return new Map(rows.map((row) => [row.state, row.count]));
}
