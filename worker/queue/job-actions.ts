// The history of what operators and API callers did to runs (job_actions), and the run record as the API and
// `bulk-import show` present it: the job row, its resolution, and that history, in one round trip.
import type { Queryable } from '../db/pool.js';
import { JOB_COLUMNS, toJobRow, type JobRow, type JobState } from './types.js';

export const JOB_ACTIONS = ['submitted', 'finalized', 'rejected', 'canceled', 'requeued', 'replayed', 'resolved', 'purged'] as const;
export type JobAction = (typeof JOB_ACTIONS)[number];

/** The most history entries a run record carries (newest kept); a run acted on more often than this is unusual. */
export const MAX_ACTIONS_SHOWN = 200;

export interface JobActionEntry {
  jobId: number;
  action: JobAction;
  /** An API key's name, or `cli:<user>` for the operator CLI. */
  actor: string;
  /** Taken by an operator (the CLI, an operator key or session), not by the run's tenant: a tenant sees "operator". */
  byOperator: boolean;
  note: string | null;
  stateAfter: JobState | null;
}

export interface JobActionRecord extends JobActionEntry {
  id: number;
  at: Date;
}

export interface Resolution {
  at: Date;
  by: string;
  note: string;
}

export interface RunRecord {
  job: JobRow;
  resolution: Resolution | null;
  /** Oldest first. */
  actions: JobActionRecord[];
}

/** Records actions in the caller's transaction (so an action and its record commit together). */
export async function recordJobActions(db: Queryable, entries: JobActionEntry[]): Promise<void> {
  if (entries.length === 0) return;
  await db.query(
    `INSERT INTO job_actions (job_id, action, actor, note, state_after, by_operator)
     SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::boolean[])`,
    [
      entries.map((entry) => entry.jobId),
      entries.map((entry) => entry.action),
      entries.map((entry) => entry.actor),
      entries.map((entry) => entry.note),
      entries.map((entry) => entry.stateAfter),
      entries.map((entry) => entry.byOperator),
    ],
  );
}

function toAction(row: Record<string, unknown>): JobActionRecord {
  return {
    id: Number(row.id),
    jobId: Number(row.job_id),
    action: row.action as JobAction,
    actor: row.actor as string,
    byOperator: row.by_operator !== false,
    note: (row.note as string | null) ?? null,
    stateAfter: (row.state_after as JobState | null) ?? null,
    at: row.at instanceof Date ? row.at : new Date(row.at as string),
  };
}

/**
 * An action's `by_operator` as read: as recorded, or for actions recorded without it (before migration 20261207060000,
 * or by the previous release during a deploy) whether its actor is the name of a key of the run's own tenant. `a` is
 * the action, `tenant` the run's tenant (null for a run purged since: then an operator's, the safe side).
 */
const byOperator = (tenant: string) =>
  `coalesce(a.by_operator, NOT EXISTS (SELECT 1 FROM api_keys k WHERE k.name = a.actor AND k.tenant_id = ${tenant})) AS by_operator`;

export async function listJobActions(db: Queryable, jobId: number): Promise<JobActionRecord[]> {
  const { rows } = await db.query(
    `SELECT * FROM (
       SELECT a.id, a.job_id, a.action, a.actor, ${byOperator('(SELECT tenant_id FROM jobs WHERE id = a.job_id)')},
         a.note, a.state_after, a.at
       FROM job_actions a WHERE a.job_id = $1 ORDER BY a.id DESC LIMIT ${MAX_ACTIONS_SHOWN}
     ) newest ORDER BY id`,
    [jobId],
  );
  return rows.map(toAction);
}

/**
 * One run with its resolution and history, or null when it does not exist — or, with `tenantId`, belongs to another
 * tenant: the two look the same to the caller.
 */
export async function getRunRecord(db: Queryable, id: number, tenantId: string | null = null): Promise<RunRecord | null> {
  const { rows } = await db.query({
    // The API's most frequent statement: prepared, it is planned once per connection instead of on every request
    // (parse and plan were about three quarters of its database time). A primary-key lookup: the generic plan is right.
    name: 'bulk-import-run-record',
    text: `SELECT ${JOB_COLUMNS}, resolved_at, resolved_by, resolution_note,
       (SELECT coalesce(json_agg(a ORDER BY a.id), '[]') FROM (
          SELECT a.id, a.job_id, a.action, a.actor, ${byOperator('jobs.tenant_id')}, a.note, a.state_after, a.at
          FROM job_actions a WHERE a.job_id = jobs.id ORDER BY a.id DESC LIMIT ${MAX_ACTIONS_SHOWN}) a) AS actions
     FROM jobs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)`,
    values: [id, tenantId],
  });
  const row = rows[0];
  if (!row) return null;
  return {
    job: toJobRow(row),
    resolution: row.resolved_at ? { at: row.resolved_at as Date, by: row.resolved_by as string, note: row.resolution_note as string } : null,
    actions: (row.actions as Array<Record<string, unknown>>).map(toAction),
  };
}

export interface JobStatusRow {
  id: number;
  state: JobState;
  attempts: number;
  progress: Record<string, unknown> | null;
  updatedAt: Date;
}

/**
 * State, attempt and progress of some runs (the API's event streams poll followed runs with this), and the snapshot
 * they were read in (`pg_current_snapshot()`, the statement's own: db/snapshot.ts), so a reader can tell which state
 * notifications the rows already reflect. `snapshot` is null when no run was found.
 */
export async function readJobStatuses(db: Queryable, ids: number[]): Promise<{ rows: JobStatusRow[]; snapshot: string | null }> {
  if (ids.length === 0) return { rows: [], snapshot: null };
  const { rows } = await db.query(
    'SELECT pg_current_snapshot()::text AS snapshot, id, state, attempts, progress, updated_at FROM jobs WHERE id = ANY($1::bigint[])',
    [ids],
  );
  return {
    // Only read with the rows: none found, none needed.
    snapshot: (rows[0]?.snapshot as string | undefined) ?? null,
    rows: rows.map((row) => ({
      id: Number(row.id),
      state: row.state as JobState,
      attempts: row.attempts as number,
      progress: (row.progress as Record<string, unknown> | null) ?? null,
      updatedAt: row.updated_at as Date,
    })),
  };
}
