// Claim: take up to `limit` due queued jobs in one statement and lease them to this worker.
import { inTransaction, type Pool, type PoolClient, type Queryable } from '../db/pool.js';
import { recordClaimSpan } from '../tracing/job-spans.js';
import type { ClaimedJob } from './types.js';

export interface ClaimRequest {
  workerId: string;
  limit: number;
  leaseMs: number;
  /** Only these kinds; undefined claims any kind. */
  kinds?: string[] | undefined;
  /**
   * Jobs this worker still has a handler for (e.g. one unwinding after its lease was lost and the job was rescued):
   * never claim them again while that handler runs, so one process never holds two attempts of one job.
   */
  excludeIds?: number[];
  /**
   * TENANT_KIND_CONCURRENCY: a tenant holds at most this many running (leased) jobs of the kind across the fleet.
   * Enforced in the claim statement, with the claims of those kinds serialized (see claimWithTenantCeilings).
   */
  tenantKindConcurrency?: Readonly<Record<string, number>>;
}

// Tenant ceilings ($6 kinds, $7 their ceilings): `held` counts each tenant's leased jobs of those kinds; the scan
// passes over tenants already at their ceiling (on the row, before locking it), and `allowed` keeps of the locked rows
// only as many per tenant as its ceiling leaves room for (the others are unlocked at commit, still queued).
const TENANT_CEILING_CTES = `
ceiling AS (SELECT * FROM unnest($6::text[], $7::int[]) AS c(kind, max_running)),
held AS (
  SELECT running.kind, running.tenant_id, count(*)::int AS running FROM jobs running JOIN ceiling USING (kind)
  WHERE running.state = 'running' GROUP BY running.kind, running.tenant_id
),`;
const TENANT_NOT_AT_CEILING = `AND NOT EXISTS (
      SELECT 1 FROM held JOIN ceiling USING (kind)
      WHERE held.kind = jobs.kind AND held.tenant_id IS NOT DISTINCT FROM jobs.tenant_id AND held.running >= ceiling.max_running)`;
const TENANT_WITHIN_CEILING = `,
allowed AS (
  SELECT ranked.id FROM (
    SELECT due.*, row_number() OVER (PARTITION BY due.kind, due.tenant_id ORDER BY due.priority, due.fair_tag, due.run_at, due.id) AS rank
    FROM due
  ) ranked
  LEFT JOIN ceiling ON ceiling.kind = ranked.kind
  LEFT JOIN held ON held.kind = ranked.kind AND held.tenant_id IS NOT DISTINCT FROM ranked.tenant_id
  WHERE ceiling.max_running IS NULL OR ranked.rank <= ceiling.max_running - coalesce(held.running, 0)
)`;

// Why this is safe with many workers: the inner SELECT locks the rows it returns and SKIP LOCKED passes over rows
// another claimer holds, so two workers never take the same row, and neither waits on the other. The outer UPDATE
// runs in the same statement, so a row is never locked without being leased. `attempts + 1` makes every claim a new
// fencing token. Ordered by the partial index jobs_claim_order (priority, fair_tag, run_at, id) WHERE state =
// 'queued': fair_tag interleaves tenants within a priority (fair-share.ts); run_at is checked on the index entry.
function claimSql(filterKinds: boolean, tenantCeilings = false): string {
  return `
WITH ${tenantCeilings ? TENANT_CEILING_CTES : ''} due AS (
  SELECT id${tenantCeilings ? ', kind, tenant_id, priority, fair_tag, run_at' : ''} FROM jobs
  WHERE state = 'queued' AND run_at <= now() AND NOT (id = ANY($4::bigint[]))
    ${filterKinds ? (tenantCeilings ? 'AND ($5::text[] IS NULL OR kind = ANY($5::text[]))' : 'AND kind = ANY($5::text[])') : ''}
    ${tenantCeilings ? TENANT_NOT_AT_CEILING : ''}
  ORDER BY priority, fair_tag, run_at, id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)${tenantCeilings ? TENANT_WITHIN_CEILING : ''}
UPDATE jobs SET
  state = 'running',
  lease_owner = $1,
  lease_expires_at = now() + $3 * interval '1 millisecond',
  heartbeat_at = now(),
  attempts = jobs.attempts + 1,
  started_at = coalesce(jobs.started_at, now()),
  claimed_at = now(),
  updated_at = now()
FROM ${tenantCeilings ? 'allowed' : 'due'} due WHERE jobs.id = due.id
RETURNING jobs.id, jobs.kind, jobs.tenant_id, jobs.payload, jobs.attempts, jobs.max_attempts, jobs.progress, jobs.created_at,
  jobs.traceparent`;
}

const CLAIM_ANY_KIND = claimSql(false);
const CLAIM_KINDS = claimSql(true);
const CLAIM_KINDS_WITH_TENANT_CEILINGS = claimSql(true, true);
/** pg_advisory_xact_lock(namespace, kind) of the claims of a kind with a tenant ceiling. */
const TENANT_CEILING_LOCK_NAMESPACE = 0x62_69_77_63; // 'biwc'

/**
 * A claim of kinds with a tenant ceiling, in a transaction that first takes an advisory lock per such kind (in kind
 * order): claimers of those kinds take turns, and each counts `held` in a snapshot taken after the previous one
 * committed, so the ceiling is exact across the fleet. The claim statement itself is unchanged otherwise. Needs a
 * pool (or a client the caller holds outside a transaction).
 */
async function claimWithTenantCeilings(db: Queryable, values: unknown[], ceilings: Array<[string, number]>): Promise<{ rows: Record<string, unknown>[] }> {
  const client = 'connect' in db && typeof db.connect === 'function' ? await (db as Pool).connect() : (db as PoolClient);
  try {
    return await inTransaction(client, async () => {
      for (const [kind] of ceilings) await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [TENANT_CEILING_LOCK_NAMESPACE, kind]);
      return client.query(CLAIM_KINDS_WITH_TENANT_CEILINGS, [...values, ceilings.map(([kind]) => kind), ceilings.map(([, max]) => max)]);
    });
  } finally {
    if (client !== db) client.release();
  }
}

/** The claim statement without tenant ceilings and its parameters (claimJobs; bench:fairness --explain shows its plan). */
export function claimStatement(request: ClaimRequest): { text: string; values: unknown[] } {
  const values: unknown[] = [request.workerId, request.limit, request.leaseMs, request.excludeIds ?? []];
  if (request.kinds) values.push(request.kinds);
  return { text: request.kinds ? CLAIM_KINDS : CLAIM_ANY_KIND, values };
}

export async function claimJobs(db: Queryable, request: ClaimRequest): Promise<ClaimedJob[]> {
  if (request.limit <= 0 || (request.kinds && request.kinds.length === 0)) return [];
  const startedAt = Date.now();
  const { text, values } = claimStatement(request);
  const ceilings = Object.entries(request.tenantKindConcurrency ?? {})
    .filter(([kind]) => request.kinds?.includes(kind) ?? true)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const { rows } =
    ceilings.length > 0
      ? await claimWithTenantCeilings(db, request.kinds ? values : [...values, null], ceilings)
      : await db.query(text, values);
  return rows
    .map((row) => {
      const job: ClaimedJob = {
        id: row.id as number,
        kind: row.kind as string,
        tenantId: row.tenant_id as string | null,
        payload: row.payload as Record<string, unknown>,
        attempt: row.attempts as number,
        maxAttempts: row.max_attempts as number,
        progress: row.progress as Record<string, unknown> | null,
        leaseOwner: request.workerId,
        createdAt: row.created_at as Date,
      };
      // Each job's trace gets its claim span; the attempt's spans go beneath it.
      job.traceparent = recordClaimSpan(job, row.traceparent as string | null, startedAt, request.workerId);
      return job;
    })
    .sort((a, b) => a.id - b.id);
}
