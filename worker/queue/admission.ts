// Admission control: a submit over a queue limit is refused before anything is written (docs/ARCHITECTURE.md,
// "Admission control and estimates").
//
// Limits count the queued runs of the submitted kind: per tenant and in total (all tenants), as runs, as bytes of work
// (`size_bytes`, recorded at submit) and as the age of the oldest due run. The check and the insert run in one
// transaction that first takes an advisory lock: per kind when a total limit is set, else per tenant and kind. So
// submitters of one kind (or one tenant's kind) take turns between check and commit, and each counts in a snapshot that
// holds every earlier admitted run: no limit is ever overshot by concurrent submits (the documented bound is 0).
// Other enqueue paths (enqueueJobs in bulk, requeue, dead replay, rescue) are not admission-checked.
import type { Queryable } from '../db/pool.js';
import { PermanentJobError, TransientJobError } from './errors.js';
import type { KindThroughput } from './estimate.js';

/** One scope's limits; 0 = no limit. */
export interface QueueLimits {
  /** Queued runs. */
  runs: number;
  /** Sum of the queued runs' size_bytes. */
  bytes: number;
  /** Age of the oldest due queued run (now − run_at), ms. */
  oldestQueuedMs: number;
}

export interface AdmissionLimits {
  /** One tenant's queued runs of the kind. */
  tenant: QueueLimits;
  /** Every tenant's queued runs of the kind. */
  total: QueueLimits;
  /** Per kind: the `runs` limit of `tenant` and of `total` for that kind instead of the general one. */
  tenantRunsByKind: Readonly<Record<string, number>>;
  totalRunsByKind: Readonly<Record<string, number>>;
}

export const NO_LIMITS: QueueLimits = { runs: 0, bytes: 0, oldestQueuedMs: 0 };
export const NO_ADMISSION_LIMITS: AdmissionLimits = { tenant: NO_LIMITS, total: NO_LIMITS, tenantRunsByKind: {}, totalRunsByKind: {} };

type LimitScope = 'tenant' | 'total';
type LimitMeasure = keyof QueueLimits;

/** The setting behind each limit, named in the refusal so an operator knows what to change. */
const LIMIT_SETTINGS: Record<LimitScope, Record<LimitMeasure, string>> = {
  tenant: { runs: 'ADMISSION_TENANT_QUEUED_RUNS', bytes: 'ADMISSION_TENANT_QUEUED_BYTES', oldestQueuedMs: 'ADMISSION_TENANT_OLDEST_QUEUED_MS' },
  total: { runs: 'ADMISSION_TOTAL_QUEUED_RUNS', bytes: 'ADMISSION_TOTAL_QUEUED_BYTES', oldestQueuedMs: 'ADMISSION_TOTAL_OLDEST_QUEUED_MS' },
};

export interface LimitBreach {
  scope: LimitScope;
  measure: LimitMeasure;
  kind: string;
  tenantId: string | null;
  /** The limit and the value that the submit would exceed (runs, bytes or ms). */
  max: number;
  current: number;
  setting: string;
  /**
   * When a retry may pass: the time the fleet needs to start the excess at its measured rate (1 s to 1 h) — for a
   * tenant's limit, with the other tenants' runs that start meanwhile (tenantWaitClaims).
   */
  retryAfterSeconds: number;
}

/** A submit refused by a queue limit: nothing was written; try again after `retryAfterSeconds`. */
export class QueueLimitError extends TransientJobError {
  constructor(readonly breach: LimitBreach) {
    super(describeBreach(breach), 'QUEUE_LIMIT', { ...breach });
    this.name = 'QueueLimitError';
  }
}

const UNITS: Record<LimitMeasure, (value: number) => string> = {
  runs: (n) => `${n} queued run${n === 1 ? '' : 's'}`,
  bytes: (n) => `${n} queued bytes`,
  oldestQueuedMs: (ms) => `oldest queued run waiting ${Math.round(ms / 1000)} s`,
};

function describeBreach(b: LimitBreach): string {
  const whose = b.scope === 'tenant' ? `tenant ${b.tenantId ?? '(none)'}` : 'all tenants';
  return (
    `queue limit reached for ${b.kind} runs of ${whose}: ${UNITS[b.measure](b.current)}, limit ${UNITS[b.measure](b.max)} ` +
    `(${b.setting}); nothing was submitted; retry in ${b.retryAfterSeconds} s`
  );
}

function limitsFor(limits: AdmissionLimits, kind: string): Record<LimitScope, QueueLimits> {
  return {
    tenant: { ...limits.tenant, runs: limits.tenantRunsByKind[kind] ?? limits.tenant.runs },
    total: { ...limits.total, runs: limits.totalRunsByKind[kind] ?? limits.total.runs },
  };
}

const anyLimit = (limits: QueueLimits) => limits.runs > 0 || limits.bytes > 0 || limits.oldestQueuedMs > 0;

const ADMISSION_LOCK_NAMESPACE = 0x62_69_61_64; // 'biad'

/**
 * Serializes the admission of `kind` (every tenant, when a total limit applies) or of (tenant, kind) until the caller's
 * transaction ends. Must run inside that transaction, before the dedupe lookup and the check.
 */
export async function lockAdmission(tx: Queryable, kind: string, tenantId: string | null, limits: AdmissionLimits): Promise<void> {
  const scoped = limitsFor(limits, kind);
  if (!anyLimit(scoped.tenant) && !anyLimit(scoped.total)) return;
  const key = anyLimit(scoped.total) ? `kind:${kind}` : `tenant:${tenantId ?? ''}\u001f${kind}`;
  await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [ADMISSION_LOCK_NAMESPACE, key]);
}

interface QueueLoad {
  runs: number;
  bytes: number;
  oldestQueuedMs: number;
  /** Due runs queued longer than the scope's oldest-queued limit: all of them must start before it holds again. */
  overAge: number;
}

// One pass over the kind's queued runs in jobs_queued_by_kind_tenant (kind, tenant_id, …) INCLUDE (run_at, size_bytes):
// the whole kind when a total limit applies, else the tenant's range only.
const loadSql = (whole: boolean, tenantIsNull: boolean) => {
  const ofTenant = tenantIsNull ? 'tenant_id IS NULL' : 'tenant_id = $2';
  const tenantFilter = whole ? `FILTER (WHERE ${ofTenant})` : '';
  const dueFilter = (extra: string) => `FILTER (WHERE run_at <= now()${extra})`;
  // $3 and $4: the tenant's and the total oldest-queued limits in ms (0: off, and the count is not used).
  const overAge = (limit: string) => `run_at <= now() - ${limit}::float8 * interval '1 millisecond'`;
  return `
SELECT count(*) ${tenantFilter} AS tenant_runs,
  coalesce(sum(size_bytes) ${tenantFilter}, 0)::float8 AS tenant_bytes,
  coalesce(extract(epoch FROM now() - min(run_at) ${dueFilter(whole ? ` AND ${ofTenant}` : '')}) * 1000, 0)::float8 AS tenant_oldest_ms,
  count(*) FILTER (WHERE ${overAge('$3')}${whole ? ` AND ${ofTenant}` : ''}) AS tenant_over_age,
  count(*) AS total_runs, coalesce(sum(size_bytes), 0)::float8 AS total_bytes,
  coalesce(extract(epoch FROM now() - min(run_at) ${dueFilter('')}) * 1000, 0)::float8 AS total_oldest_ms,
  count(*) FILTER (WHERE ${overAge('$4')}) AS total_over_age
FROM jobs WHERE state = 'queued' AND kind = $1 ${whole ? (tenantIsNull ? 'AND $2::text IS NULL' : 'AND $2::text IS NOT NULL') : `AND ${ofTenant}${tenantIsNull ? ' AND $2::text IS NULL' : ''}`}`;
};

async function queueLoad(db: Queryable, kind: string, tenantId: string | null, scoped: Record<LimitScope, QueueLimits>, whole: boolean): Promise<Record<LimitScope, QueueLoad>> {
  const { rows } = await db.query(loadSql(whole, tenantId === null), [kind, tenantId, scoped.tenant.oldestQueuedMs, scoped.total.oldestQueuedMs]);
  const row = rows[0] as Record<string, string | number>;
  const n = (name: string) => Number(row[name] ?? 0);
  const tenant = { runs: n('tenant_runs'), bytes: n('tenant_bytes'), oldestQueuedMs: n('tenant_oldest_ms'), overAge: n('tenant_over_age') };
  return {
    tenant,
    total: whole ? { runs: n('total_runs'), bytes: n('total_bytes'), oldestQueuedMs: n('total_oldest_ms'), overAge: n('total_over_age') } : tenant,
  };
}

/** Seconds until `claims` more runs of the kind have started at the measured rate; 60 s when the rate is unknown. */
function retryAfter(claims: number, throughput: KindThroughput | null): number {
  const rate = throughput?.runsPerSecond ?? null;
  const seconds = rate !== null && rate > 0 ? claims / rate : 60;
  return Math.min(3600, Math.max(1, Math.ceil(seconds)));
}

/** Claims counted ahead of a tenant's runs at most (the wait is capped at an hour anyway). */
const MAX_AHEAD = 100_000;

// The claims before the tenant's `$3`-th due run (in claim order) starts: the due runs of the kind up to it in the
// claim order (priority, fair_tag, run_at, id), one bounded range of jobs_queued_ahead. Fair share's turns and weights
// are in the tags already (fair-share.ts), so this counts other tenants' runs only as far as they come first.
const claimsUntilSql = (tenantIsNull: boolean) => `
WITH target AS (
  SELECT priority, fair_tag, run_at, id FROM jobs
  WHERE state = 'queued' AND kind = $1 AND ${tenantIsNull ? 'tenant_id IS NULL AND $2::text IS NULL' : 'tenant_id = $2'} AND run_at <= now()
  ORDER BY priority, fair_tag, run_at, id OFFSET $3 - 1 LIMIT 1
)
SELECT count(*) AS claims FROM (
  SELECT 1 FROM jobs, target WHERE jobs.state = 'queued' AND jobs.kind = $1 AND jobs.run_at <= now()
    AND (jobs.priority, jobs.fair_tag, jobs.run_at, jobs.id) <= (target.priority, target.fair_tag, target.run_at, target.id)
  LIMIT ${MAX_AHEAD}
) ahead`;

/**
 * How many runs of the kind start before `excess` more of the tenant's have, as the queue stands: with fair share the
 * other tenants' runs that take their turns meanwhile, without it those submitted earlier. At least `excess` (also
 * when fewer of the tenant's runs are due: the rest wait for their time anyway).
 */
async function tenantWaitClaims(db: Queryable, kind: string, tenantId: string | null, excess: number): Promise<number> {
  const { rows } = await db.query<{ claims: string }>(claimsUntilSql(tenantId === null), [kind, tenantId, excess]);
  return Math.max(excess, Number(rows[0]!.claims));
}

/**
 * A run bigger than a queued-bytes limit on its own would be refused whatever the queue held: waiting cannot help, so
 * it is a permanent refusal (RUN_TOO_LARGE, naming the field), not a QueueLimitError with a time to retry.
 */
function refuseOversized(request: { kind: string; sizeBytes: number }, scoped: Record<LimitScope, QueueLimits>): void {
  for (const scope of ['tenant', 'total'] as const) {
    const max = scoped[scope].bytes;
    if (max > 0 && request.sizeBytes > max) {
      const setting = LIMIT_SETTINGS[scope].bytes;
      throw new PermanentJobError(
        `a ${request.kind} run of ${request.sizeBytes} bytes is over the ${scope === 'tenant' ? "tenant's" : 'total'} queued-bytes limit of ` +
          `${max} bytes (${setting}) on its own, so it can never be admitted: split the work into smaller runs, or raise the limit`,
        'RUN_TOO_LARGE',
        { field: 'sizeBytes', scope, sizeBytes: request.sizeBytes, max, setting },
      );
    }
  }
}

/**
 * The first limit a new run of `sizeBytes` would exceed, or null. `measure` is called only on a breach (for the retry
 * time), so an admitted submit costs one aggregate query.
 */
export async function findBreach(
  db: Queryable,
  request: { kind: string; tenantId: string | null; sizeBytes: number },
  limits: AdmissionLimits,
  measure: () => Promise<KindThroughput | null>,
): Promise<LimitBreach | null> {
  const scoped = limitsFor(limits, request.kind);
  if (!anyLimit(scoped.tenant) && !anyLimit(scoped.total)) return null;
  refuseOversized(request, scoped);
  const load = await queueLoad(db, request.kind, request.tenantId, scoped, anyLimit(scoped.total));
  for (const scope of ['tenant', 'total'] as const) {
    const max = scoped[scope];
    const now = load[scope];
    const breach = (measure: LimitMeasure, current: number, excessRuns: number) => ({
      scope, measure, kind: request.kind, tenantId: request.tenantId, max: max[measure], current,
      setting: measure === 'runs' && (scope === 'tenant' ? limits.tenantRunsByKind : limits.totalRunsByKind)[request.kind] !== undefined
        ? `ADMISSION_KIND_${scope.toUpperCase()}_QUEUED_RUNS` : LIMIT_SETTINGS[scope][measure],
      excessRuns,
    });
    let found: ReturnType<typeof breach> | null = null;
    if (max.runs > 0 && now.runs + 1 > max.runs) found = breach('runs', now.runs, now.runs + 1 - max.runs);
    else if (max.bytes > 0 && now.bytes + request.sizeBytes > max.bytes) {
      const perRun = now.runs > 0 ? now.bytes / now.runs : request.sizeBytes;
      found = breach('bytes', now.bytes, perRun > 0 ? Math.ceil((now.bytes + request.sizeBytes - max.bytes) / perRun) : 1);
    } else if (max.oldestQueuedMs > 0 && now.oldestQueuedMs > max.oldestQueuedMs) {
      // It holds again once every due run older than the limit has started, not just the oldest one.
      found = breach('oldestQueuedMs', Math.round(now.oldestQueuedMs), Math.max(1, now.overAge));
    }
    if (found) {
      const { excessRuns, ...rest } = found;
      const claims = scope === 'tenant' ? await tenantWaitClaims(db, request.kind, request.tenantId, excessRuns) : excessRuns;
      return { ...rest, retryAfterSeconds: retryAfter(claims, await measure()) };
    }
  }
  return null;
}
