// Dead-letter statements for operators: list dead runs, replay chosen ones, purge old ones.
import type { Queryable } from '../db/pool.js';
import { JobNotFoundError, requeueJob, type RequeueOptions } from './operator.js';
import { JOB_COLUMNS, toJobRow, type JobRow, type JobState } from './types.js';

export interface DeadJobFilter {
  kinds?: string[] | undefined;
  limit?: number | undefined;
  /** Keyset cursor (API): only runs after this one in the listing's order (finished_at to the millisecond, id). */
  before?: { finishedAt: Date; id: number } | undefined;
}

/** Dead runs not resolved (bulk-import resolve), most recently dead first. */
export async function listDeadJobs(db: Queryable, filter: DeadJobFilter = {}): Promise<JobRow[]> {
  const { rows } = await db.query(
    `SELECT ${JOB_COLUMNS} FROM jobs
     WHERE state = 'dead' AND resolved_at IS NULL AND ($1::text[] IS NULL OR kind = ANY($1))
       AND ($3::timestamptz IS NULL OR (date_trunc('milliseconds', finished_at), id) < ($3, $4::bigint))
     ORDER BY date_trunc('milliseconds', finished_at) DESC NULLS LAST, id DESC LIMIT $2`,
    [filter.kinds ?? null, filter.limit ?? 100, filter.before?.finishedAt ?? null, filter.before?.id ?? null],
  );
  return rows.map(toJobRow);
}

export class NotDeadError extends Error {
  constructor(readonly jobs: Array<{ id: number; state: JobState }>) {
    super(
      `only dead runs can be replayed; not dead: ${jobs.map((job) => `${job.id} (${job.state})`).join(', ')} ` +
        '(use `bulk-import requeue <id>` for failed or canceled runs)',
    );
    this.name = 'NotDeadError';
  }
}

/**
 * Replays the given dead runs, all or none, inside the caller's transaction (`tx`, where the history of the replay is
 * written too): the rows are locked, every one must exist and be dead, then each is requeued (wake-ups are delivered at
 * commit). A wrong id throws, and the caller's rollback changes nothing.
 */
export async function replayDeadJobsById(tx: Queryable, ids: number[], options: RequeueOptions = {}): Promise<JobRow[]> {
  const unique = [...new Set(ids)].sort((a, b) => a - b);
  const { rows } = await tx.query<{ id: number; state: JobState }>(
    'SELECT id, state FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE',
    [unique],
  );
  const found = new Set(rows.map((row) => row.id));
  const missing = unique.find((id) => !found.has(id));
  if (missing !== undefined) throw new JobNotFoundError(missing);
  const notDead = rows.filter((row) => row.state !== 'dead');
  if (notDead.length > 0) throw new NotDeadError(notDead);
  const replayed: JobRow[] = [];
  for (const id of unique) replayed.push(await requeueJob(tx, id, options));
  return replayed;
}

export interface PurgeRequest {
  /** Only runs dead for longer than this. */
  olderThanMs: number;
  kinds?: string[] | undefined;
  /** Report what would be deleted; delete nothing. */
  dryRun?: boolean | undefined;
  /**
   * Only runs dead no later than this: a confirmation page passes the latest death it listed, so runs that crossed
   * the age limit since it was shown are not deleted with the ones the operator saw. A JavaScript time has
   * milliseconds, Postgres microseconds: the whole millisecond counts.
   */
  diedNoLaterThan?: Date | undefined;
}

export interface PurgedJob {
  id: number;
  kind: string;
  tenantId: string | null;
  finishedAt: Date;
}

/**
 * Deletes dead runs that died more than `olderThanMs` ago (their per-item rows go with them, through the delete
 * trigger over job_child_tables; business rows such as documents stay, unlinked). Returns the runs deleted, or with
 * dryRun the runs it would delete.
 */
export async function purgeDeadJobs(db: Queryable, request: PurgeRequest): Promise<PurgedJob[]> {
  const where = `state = 'dead' AND finished_at < now() - $1 * interval '1 millisecond'
    AND ($2::text[] IS NULL OR kind = ANY($2)) AND ($3::timestamptz IS NULL OR finished_at < $3::timestamptz + interval '1 millisecond')`;
  const values = [request.olderThanMs, request.kinds ?? null, request.diedNoLaterThan ?? null];
  const { rows } = await db.query<{ id: number; kind: string; tenant_id: string | null; finished_at: Date }>(
    request.dryRun
      ? `SELECT id, kind, tenant_id, finished_at FROM jobs WHERE ${where} ORDER BY id`
      : `WITH purged AS (DELETE FROM jobs WHERE ${where} RETURNING id, kind, tenant_id, finished_at)
         SELECT * FROM purged ORDER BY id`,
    values,
  );
  return rows.map((row) => ({ id: row.id, kind: row.kind, tenantId: row.tenant_id, finishedAt: row.finished_at }));
}
