// Enqueue: insert a run, or return the active run with the same dedupe key (the idempotency key).
import type { Queryable } from '../db/pool.js';
import { JOBS_READY_CHANNEL } from './channels.js';
import { ACTIVE_STATES, JOB_COLUMNS, toJobRow, type JobRow } from './types.js';

export interface EnqueueRequest {
  kind: string;
  payload?: Record<string, unknown>;
  tenantId?: string | null;
  /** While a run with this key is queued, running or in review, enqueuing it again returns that run. */
  dedupeKey?: string | null;
  priority?: number;
  /** Not before this time; default now. */
  runAt?: Date;
  maxAttempts?: number;
}

export interface EnqueueResult {
  job: JobRow;
  /** True when an active run with the same dedupe key was returned instead of a new one. */
  reused: boolean;
}

// Must spell the predicate of the partial unique index jobs_active_dedupe_key, so ON CONFLICT can infer it.
const ACTIVE = `(${ACTIVE_STATES.map((state) => `'${state}'`).join(', ')})`;

// One statement: insert unless an active run holds the key, and wake idle workers when the new job is due. The
// NOTIFY is delivered at commit, so a worker never wakes before it can see the row. (pg_notify sits in the select
// list on purpose: a CTE joined only for its side effect can be optimised away; Postgres folds identical
// notifications of one transaction into one.)
const INSERT_JOB = `
WITH inserted AS (
  INSERT INTO jobs (kind, payload, tenant_id, dedupe_key, priority, run_at, max_attempts)
  VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), $7)
  ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND state IN ${ACTIVE} DO NOTHING
  RETURNING ${JOB_COLUMNS}
)
SELECT inserted.*, false AS reused,
  CASE WHEN inserted.run_at <= now() THEN pg_notify('${JOBS_READY_CHANNEL}', inserted.kind) END AS woke
FROM inserted`;

const ACTIVE_BY_KEY = `SELECT ${JOB_COLUMNS}, true AS reused FROM jobs WHERE dedupe_key = $1 AND state IN ${ACTIVE}`;

export async function enqueueJob(db: Queryable, request: EnqueueRequest, defaultMaxAttempts = 5): Promise<EnqueueResult> {
  const values = [
    request.kind,
    request.payload ?? {},
    request.tenantId ?? null,
    request.dedupeKey ?? null,
    request.priority ?? 0,
    request.runAt ?? null,
    request.maxAttempts ?? defaultMaxAttempts,
  ];
  // The conflicting run may finish between our insert attempt and the lookup; then the key is free again: retry.
  for (let round = 0; round < 10; round += 1) {
    const inserted = await db.query(INSERT_JOB, values);
    if (inserted.rows[0]) return { job: toJobRow(inserted.rows[0]), reused: false };
    const active = await db.query(ACTIVE_BY_KEY, [request.dedupeKey]);
    if (active.rows[0]) return { job: toJobRow(active.rows[0]), reused: true };
  }
  throw new Error(`could not enqueue ${request.kind}: dedupe key ${request.dedupeKey} kept changing state`);
}

/**
 * Inserts many jobs in one statement (no dedupe keys): for backends and benchmarks that enqueue in bulk.
 * Returns the new ids in input order.
 */
export async function enqueueJobs(
  db: Queryable,
  kind: string,
  payloads: Array<Record<string, unknown>>,
  options: { tenantId?: string | null; priority?: number; maxAttempts?: number } = {},
): Promise<number[]> {
  if (payloads.length === 0) return [];
  const { rows } = await db.query<{ id: number }>(
    `WITH inserted AS (
       INSERT INTO jobs (kind, payload, tenant_id, priority, max_attempts)
       SELECT $1, payload, $3, $4, $5 FROM unnest($2::jsonb[]) WITH ORDINALITY AS input(payload, position)
       ORDER BY position
       RETURNING id
     )
     SELECT id, pg_notify('${JOBS_READY_CHANNEL}', $1) AS woke FROM inserted ORDER BY id`,
    [kind, payloads, options.tenantId ?? null, options.priority ?? 0, options.maxAttempts ?? 5],
  );
  return rows.map((row) => row.id);
}
