// Lease upkeep and fencing: heartbeats extend the leases a worker holds; every write about a job checks the lease.
import { escapeLiteral } from 'pg';
import { integerArrayLiteral } from '../db/array-literal.js';
import type { Queryable } from '../db/pool.js';
import type { Lease } from './types.js';

export class LeaseLostError extends Error {
  readonly code = 'LEASE_LOST';
  constructor(readonly jobId: number) {
    super(`job ${jobId}: lease lost (expired and rescued, or taken over by another worker); this worker stops it`);
    this.name = 'LeaseLostError';
  }
}

export interface HeartbeatResult {
  /** Leases that were extended. */
  extended: number[];
  /** Leases this worker no longer holds: their handlers must stop. */
  lost: number[];
  /** Jobs an operator asked to cancel. */
  cancelRequested: number[];
}

// `archived = false`: a held run is in jobs_live; said so, the plan leaves the archive out (see claim.ts).

/** Extends every given lease in one statement; reports the ones lost and the ones asked to cancel. */
export async function extendLeases(
  db: Queryable,
  workerId: string,
  leases: Array<Pick<Lease, 'jobId' | 'attempt'>>,
  leaseMs: number,
): Promise<HeartbeatResult> {
  if (leases.length === 0) return { extended: [], lost: [], cancelRequested: [] };
  const { rows } = await db.query<{ id: number; cancel_requested: boolean }>(
    `UPDATE jobs SET lease_expires_at = now() + $4 * interval '1 millisecond', heartbeat_at = now()
     FROM unnest($2::bigint[], $3::int[]) AS held(id, attempt)
     WHERE jobs.id = held.id AND jobs.attempts = held.attempt AND jobs.lease_owner = $1 AND jobs.state = 'running' AND jobs.archived = false
     RETURNING jobs.id, jobs.cancel_requested_at IS NOT NULL AS cancel_requested`,
    [workerId, integerArrayLiteral(leases.map((lease) => lease.jobId)), integerArrayLiteral(leases.map((lease) => lease.attempt)), leaseMs],
  );
  const extended = rows.map((row) => row.id);
  const kept = new Set(extended);
  return {
    extended,
    lost: leases.map((lease) => lease.jobId).filter((id) => !kept.has(id)),
    cancelRequested: rows.filter((row) => row.cancel_requested).map((row) => row.id),
  };
}

/** The job row while the lease ($1 job id, $2 owner, $3 attempt) is held, locked for key share (see assertLeaseHeld). */
const HELD_LEASE_ROW = `SELECT 1 FROM jobs WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND state = 'running' AND archived = false FOR KEY SHARE`;

/**
 * Inside a handler's own transaction: lock the job row and check the lease, so the transaction commits only while
 * this worker holds the job. FOR KEY SHARE conflicts with the FOR UPDATE that every change of ownership takes
 * (claim, rescue, cancel), so a rescuer skips the row and a new owner cannot appear before our commit; it does not
 * conflict with the plain UPDATEs of our own heartbeat and progress, so a long transaction never stalls the
 * heartbeat of the worker's other jobs. Throws LeaseLostError (the caller rolls back).
 */
export async function assertLeaseHeld(db: Queryable, lease: Lease): Promise<void> {
  const { rowCount } = await db.query(HELD_LEASE_ROW, [lease.jobId, lease.owner, lease.attempt]);
  if (rowCount !== 1) throw new LeaseLostError(lease.jobId);
}

/**
 * Every run leased to this worker now, with its attempt: a handful (its slots and its prefetch), read through the
 * running runs' partial index. The runner compares them with the leases it knows after a claim whose answer may have
 * been lost (worker.ts, giveBackUnknownLeases).
 */
export async function leasesHeldBy(db: Queryable, workerId: string): Promise<Array<Pick<Lease, 'jobId' | 'attempt'>>> {
  const { rows } = await db.query<{ id: number; attempts: number }>(
    `SELECT id, attempts FROM jobs WHERE state = 'running' AND lease_owner = $1 AND archived = false`,
    [workerId],
  );
  return rows.map((row) => ({ jobId: row.id, attempt: row.attempts }));
}

/** Saves progress while the lease holds; returns false when the lease was lost (the write was refused). */
export async function saveProgress(db: Queryable, lease: Lease, progress: Record<string, unknown>): Promise<boolean> {
  const { rowCount } = await db.query(
    `UPDATE jobs SET progress = $4, updated_at = now()
     WHERE id = $1 AND lease_owner = $2 AND attempts = $3 AND state = 'running' AND archived = false`,
    [lease.jobId, lease.owner, lease.attempt, progress],
  );
  return rowCount === 1;
}

/**
 * The check of {@link assertLeaseHeld} as an SQL boolean expression with the lease's values written in, for handlers
 * that send it together with other statements in one round trip: true while this worker holds the lease, and then it
 * locks the job row the same way.
 */
export function leaseHeldCondition(lease: Lease): string {
  const values: Record<string, string> = { $1: String(Number(lease.jobId)), $2: escapeLiteral(lease.owner), $3: String(Number(lease.attempt)) };
  return `EXISTS (${HELD_LEASE_ROW.replace(/\$[123]\b/g, (parameter) => values[parameter]!)})`;
}
