// Claim: take up to `limit` due queued jobs in one statement and lease them to this worker.
import { integerArrayLiteral } from '../db/array-literal.js';
import { inTransaction, isPool, releaseClient, type PoolClient, type Queryable } from '../db/pool.js';
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
  /** Only these runs; undefined claims any. `bulk-import local`: its worker runs the run it follows and no other. */
  onlyIds?: readonly number[] | undefined;
  /**
   * TENANT_KIND_CONCURRENCY: a tenant holds at most this many running (leased) jobs of the kind across the fleet.
   * Enforced in the claim statement, with the claims of those kinds serialized (see claimWithTenantCeilings). A claim
   * of a kind listed here names only kinds listed here (claimJobs refuses a mix; the runner claims each apart).
   */
  tenantKindConcurrency?: Readonly<Record<string, number>>;
}

// `archived = false` in the claim and in every write of a held run (lease.ts, finish.ts) changes no result: those runs
// are all in jobs_live. It lets the planner leave jobs_archive out of the plan, which otherwise probed the archive's
// indexes for every run claimed, heartbeated and finished.

/**
 * The lease of the runs `due` locked ($1 worker id, $3 lease length in ms): what every claim statement ends with.
 * Its times are the statement's, not the transaction's: a claim of a kind with tenant ceilings first waits for its
 * turn (an advisory lock), and a lease dated from before that wait would be shorter than asked.
 */
const LEASE_DUE_RUNS = `UPDATE jobs SET
  state = 'running',
  lease_owner = $1,
  lease_expires_at = statement_timestamp() + $3 * interval '1 millisecond',
  heartbeat_at = statement_timestamp(),
  attempts = jobs.attempts + 1,
  started_at = coalesce(jobs.started_at, statement_timestamp()),
  claimed_at = statement_timestamp(),
  updated_at = statement_timestamp()
FROM due WHERE jobs.id = due.id AND jobs.archived = false
RETURNING jobs.id, jobs.kind, jobs.tenant_id, jobs.payload, jobs.attempts, jobs.max_attempts, jobs.progress, jobs.created_at,
  jobs.traceparent, jobs.outage_dependency`;

/** How many runs in claim order ($7) a claim of `limit` runs with tenant ceilings reads before it looks tenant by tenant. */
const ceilingWalkRows = (limit: number): number => Math.max(100, 8 * limit);

// One kind with tenant ceilings ($5 the kind, $6 its ceiling). `held` counts each tenant's leased runs of the kind, and
// a tenant's room is what its ceiling leaves. Candidates come from one of two reads:
// - `walked`: the first ceilingWalkRows(limit) due runs of the kind in claim order (jobs_queued_ahead, whose order
//   the kind's equality makes the claim order), keeping per tenant as many as its room. Fair tags interleave tenants,
//   so this finds `limit` runs at once whenever that many can start.
// - `per_tenant`, only when the walk was cut short without finding `limit`: the runs ahead are then mostly those of
//   tenants at their ceiling (one tenant's 100,000 queued imports), and walking on would read all of them on every
//   claim. Instead every tenant with queued runs of the kind is found by one descent of jobs_queued_by_kind_tenant (a
//   loose index scan: the next tenant after the last) and its first `room` due runs read by another; the runs without
//   a tenant are one more group. This costs a few descents per tenant with queued runs, so it is not the first read.
// Whichever is read, the best `limit` candidates in claim order are locked (SKIP LOCKED) and leased, as in the plain
// claim. Claimers of the kind take turns (claimWithTenantCeilings), so `held` is exact.
const CLAIM_WITH_TENANT_CEILING = `
WITH RECURSIVE held AS (
  SELECT tenant_id, tenant_id IS NULL AS no_tenant, coalesce(tenant_id, '') AS tenant_key, count(*)::int AS running
  FROM jobs WHERE state = 'running' AND kind = $5 GROUP BY tenant_id
),
walk AS (
  SELECT id, tenant_id, priority, fair_tag, run_at FROM jobs
  WHERE state = 'queued' AND kind = $5 AND run_at <= now() AND NOT (id = ANY($4::bigint[]))
  ORDER BY priority, fair_tag, run_at, id
  LIMIT $7
),
walked AS (
  SELECT ranked.id, ranked.priority, ranked.fair_tag, ranked.run_at FROM (
    SELECT walk.*, row_number() OVER (PARTITION BY walk.tenant_id ORDER BY walk.priority, walk.fair_tag, walk.run_at, walk.id) AS rank
    FROM walk
  ) ranked
  -- (Equalities a hash join can use: IS NOT DISTINCT FROM would compare every walked run with every held group.)
  LEFT JOIN held h ON h.no_tenant = (ranked.tenant_id IS NULL) AND h.tenant_key = coalesce(ranked.tenant_id, '')
  WHERE ranked.rank <= $6 - coalesce(h.running, 0)
),
walk_enough AS (
  SELECT (SELECT count(*) FROM walked) >= $2 OR (SELECT count(*) FROM walk) < $7 AS yes
),
tenants(tenant_id) AS (
  (SELECT tenant_id FROM jobs WHERE state = 'queued' AND kind = $5 AND tenant_id IS NOT NULL ORDER BY tenant_id LIMIT 1)
  UNION ALL
  SELECT later.tenant_id FROM tenants t
  CROSS JOIN LATERAL (
    SELECT q.tenant_id FROM jobs q WHERE q.state = 'queued' AND q.kind = $5 AND q.tenant_id > t.tenant_id
    ORDER BY q.tenant_id LIMIT 1
  ) later
),
flows AS (
  SELECT tenant_id FROM tenants
  UNION ALL
  SELECT NULL WHERE EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND kind = $5 AND tenant_id IS NULL)
),
per_tenant AS (
  SELECT pick.* FROM flows f
  LEFT JOIN held h ON h.tenant_id IS NOT DISTINCT FROM f.tenant_id
  CROSS JOIN LATERAL (
    (SELECT q.id, q.priority, q.fair_tag, q.run_at FROM jobs q
     WHERE q.state = 'queued' AND q.kind = $5 AND q.tenant_id = f.tenant_id AND q.run_at <= now() AND NOT (q.id = ANY($4::bigint[]))
     ORDER BY q.priority, q.fair_tag, q.run_at, q.id LIMIT greatest($6 - coalesce(h.running, 0), 0))
    UNION ALL
    (SELECT q.id, q.priority, q.fair_tag, q.run_at FROM jobs q
     WHERE f.tenant_id IS NULL AND q.state = 'queued' AND q.kind = $5 AND q.tenant_id IS NULL AND q.run_at <= now() AND NOT (q.id = ANY($4::bigint[]))
     ORDER BY q.priority, q.fair_tag, q.run_at, q.id LIMIT greatest($6 - coalesce(h.running, 0), 0))
  ) pick
),
candidates AS (
  SELECT * FROM walked WHERE (SELECT yes FROM walk_enough)
  UNION ALL
  SELECT * FROM per_tenant WHERE NOT (SELECT yes FROM walk_enough)
),
due AS (
  SELECT jobs.id FROM jobs
  WHERE jobs.id IN (SELECT id FROM candidates ORDER BY priority, fair_tag, run_at, id LIMIT $2) AND jobs.state = 'queued' AND jobs.archived = false
  FOR UPDATE SKIP LOCKED
)
${LEASE_DUE_RUNS}`;

// Why this is safe with many workers: the inner SELECT locks the rows it returns and SKIP LOCKED passes over rows
// another claimer holds, so two workers never take the same row, and neither waits on the other. The outer UPDATE
// runs in the same statement, so a row is never locked without being leased. `attempts + 1` makes every claim a new
// fencing token. Ordered by the partial index jobs_claim_order (priority, fair_tag, run_at, id) WHERE state =
// 'queued': fair_tag interleaves tenants within a priority (fair-share.ts); run_at is checked on the index entry.
// A claim of named runs ($5, or $6 after the kinds) is the same walk with one more filter: the statement of every
// other claim is unchanged.
function claimSql(filterKinds: boolean, filterIds = false): string {
  return `
WITH due AS (
  SELECT id FROM jobs
  WHERE state = 'queued' AND archived = false AND run_at <= now() AND NOT (id = ANY($4::bigint[]))
    ${filterKinds ? 'AND kind = ANY($5::text[])' : ''}
    ${filterIds ? `AND id = ANY($${filterKinds ? 6 : 5}::bigint[])` : ''}
  ORDER BY priority, fair_tag, run_at, id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
${LEASE_DUE_RUNS}`;
}

const CLAIM_ANY_KIND = claimSql(false);
const CLAIM_KINDS = claimSql(true);
const CLAIM_IDS_ANY_KIND = claimSql(false, true);
const CLAIM_IDS_KINDS = claimSql(true, true);
/** pg_advisory_xact_lock(namespace, kind) of the claims of a kind with a tenant ceiling. */
const TENANT_CEILING_LOCK_NAMESPACE = 0x62_69_77_63; // 'biwc'

/**
 * A claim of kinds with a tenant ceiling, in one transaction: per kind (in kind order) an advisory lock, then the
 * claim of that kind with what the limit has left. Claimers of a kind take turns, and each counts `held` in a
 * snapshot taken after the previous one committed, so the ceiling is exact across the fleet. Needs a pool (or a
 * client the caller holds outside a transaction).
 */
async function claimWithTenantCeilings(db: Queryable, request: ClaimRequest, ceilings: Array<[string, number]>): Promise<{ rows: Record<string, unknown>[] }> {
  const pool = isPool(db) ? db : undefined;
  const client = pool ? await pool.connect() : (db as PoolClient);
  try {
    return await inTransaction(client, async () => {
      const rows: Record<string, unknown>[] = [];
      for (const [kind, ceiling] of ceilings) {
        const limit = request.limit - rows.length;
        if (limit <= 0) break;
        await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [TENANT_CEILING_LOCK_NAMESPACE, kind]);
        const values = [request.workerId, limit, request.leaseMs, integerArrayLiteral(request.excludeIds ?? []), kind, ceiling, ceilingWalkRows(limit)];
        rows.push(...(await client.query(CLAIM_WITH_TENANT_CEILING, values)).rows);
      }
      return { rows };
    });
  } finally {
    if (pool) releaseClient(client);
  }
}

/** The claim statement without tenant ceilings and its parameters (claimJobs; bench:fairness --explain shows its plan). */
export function claimStatement(request: ClaimRequest): { text: string; values: unknown[] } {
  const values: unknown[] = [request.workerId, request.limit, request.leaseMs, integerArrayLiteral(request.excludeIds ?? [])];
  if (request.kinds) values.push(request.kinds);
  if (request.onlyIds) {
    values.push(integerArrayLiteral(request.onlyIds));
    return { text: request.kinds ? CLAIM_IDS_KINDS : CLAIM_IDS_ANY_KIND, values };
  }
  return { text: request.kinds ? CLAIM_KINDS : CLAIM_ANY_KIND, values };
}

export async function claimJobs(db: Queryable, request: ClaimRequest): Promise<ClaimedJob[]> {
  if (request.limit <= 0 || (request.kinds && request.kinds.length === 0)) return [];
  const startedAt = Date.now();
  const { text, values } = claimStatement(request);
  const ceilings = Object.entries(request.tenantKindConcurrency ?? {})
    .filter(([kind]) => request.kinds?.includes(kind) ?? true)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  // The runner claims each kind with a tenant ceiling in a pool of its own (runner/pools.ts), never mixed.
  if (ceilings.length > 0 && (!request.kinds || ceilings.length !== new Set(request.kinds).size)) {
    throw new Error('a claim of kinds with tenant ceilings must name those kinds only (each is claimed in its own pool)');
  }
  if (ceilings.length > 0 && request.onlyIds) throw new Error('a claim of named runs has no tenant ceilings (bulk-import local sets none)');
  const { rows } = ceilings.length > 0 ? await claimWithTenantCeilings(db, request, ceilings) : await db.query(text, values);
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
        outageDependency: row.outage_dependency as ClaimedJob['outageDependency'],
      };
      // Each job's trace gets its claim span; the attempt's spans go beneath it.
      job.traceparent = recordClaimSpan(job, row.traceparent as string | null, startedAt, request.workerId);
      return job;
    })
    .sort((a, b) => a.id - b.id);
}
