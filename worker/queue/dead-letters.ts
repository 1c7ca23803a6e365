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
  /** Only runs dead for longer than this (at the purge's start). */
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

/** Runs a purge deletes per transaction: each batch commits with its history, so no purge is one long transaction. */
export const PURGE_BATCH_RUNS = 200;

/**
 * What a purge deletes, fixed once at its start: dead runs of these kinds that died before `bound` (Postgres's own
 * text of a timestamptz, so its microseconds survive the round trip).
 */
export interface PurgeScope {
  bound: string;
  kinds: string[] | null;
}

const PURGE_WHERE = `jobs.state = 'dead' AND jobs.finished_at < $1::timestamptz AND ($2::text[] IS NULL OR jobs.kind = ANY($2))`;

type PurgedRow = { id: number; kind: string; tenant_id: string | null; finished_at: Date };
const toPurgedJob = (row: PurgedRow): PurgedJob => ({ id: row.id, kind: row.kind, tenantId: row.tenant_id, finishedAt: row.finished_at });

/** The scope of a purge asked for now: dead for longer than `olderThanMs`, and no later than `diedNoLaterThan`. */
export async function purgeScope(db: Queryable, request: PurgeRequest): Promise<PurgeScope> {
  const { rows } = await db.query<{ bound: string }>(
    `SELECT least(now() - $1 * interval '1 millisecond', $2::timestamptz + interval '1 millisecond')::text AS bound`,
    [request.olderThanMs, request.diedNoLaterThan ?? null],
  );
  return { bound: rows[0]!.bound, kinds: request.kinds ?? null };
}

/** The dead runs a purge of this scope would delete, in id order (a dry run). */
export async function listPurgeable(db: Queryable, scope: PurgeScope): Promise<PurgedJob[]> {
  const { rows } = await db.query<PurgedRow>(
    `SELECT id, kind, tenant_id, finished_at FROM jobs WHERE ${PURGE_WHERE} ORDER BY id`,
    [scope.bound, scope.kinds],
  );
  return rows.map(toPurgedJob);
}

/**
 * Deletes the next batch of at most `limit` runs of the scope after run `afterId` (their per-item rows go with them,
 * through the delete trigger over job_child_tables; business rows such as documents stay, unlinked). A run replayed
 * or resolved since it was picked is not one any more: the delete reads each row again before it goes. `next` is
 * where the batch after this one starts, null when this was the last.
 */
export async function purgeDeadBatch(
  tx: Queryable,
  scope: PurgeScope,
  afterId: number,
  limit = PURGE_BATCH_RUNS,
): Promise<{ purged: PurgedJob[]; next: number | null }> {
  const { rows } = await tx.query<PurgedRow & { last_candidate: number | null; candidates: number }>(
    `WITH candidates AS (
       SELECT id FROM jobs WHERE ${PURGE_WHERE} AND id > $3 ORDER BY id LIMIT $4
     ), purged AS (
       DELETE FROM jobs USING candidates WHERE jobs.id = candidates.id AND ${PURGE_WHERE}
       RETURNING jobs.id, jobs.kind, jobs.tenant_id, jobs.finished_at
     )
     SELECT seen.last_candidate, seen.candidates, purged.*
     FROM (SELECT max(id) AS last_candidate, count(*)::int AS candidates FROM candidates) seen LEFT JOIN purged ON true
     ORDER BY purged.id`,
    [scope.bound, scope.kinds, afterId, limit],
  );
  const seen = rows[0];
  const purged = rows.filter((row) => row.id !== null).map(toPurgedJob);
  // Fewer candidates than asked for: no run of the scope is left after them.
  const next = seen && seen.candidates === limit ? Number(seen.last_candidate) : null;
  return { purged, next };
}
