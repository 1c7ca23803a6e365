// Fair share between tenants: where a new run goes in its priority's claim order (docs/ARCHITECTURE.md, "Fair share
// between tenants").
//
// Start-time fair queuing, decided at enqueue so the claim stays one ordered range scan of jobs_claim_order
// (priority, fair_tag, run_at, id) with SKIP LOCKED and batching. Each (tenant, kind) is a flow with its own timeline:
// a new run's tag is one step after the tenant's last queued run of that kind, or the claim frontier if that is
// later; a flow with nothing queued joins at the claim frontier (firstFairTagSql). A tenant that floods 20,000 runs
// gets tags f, f + step, … f + 20,000·step; a tenant that then submits one run gets the frontier's tag and is claimed
// next — after the runs workers already hold, not after the backlog. A weight w makes the step 1000 / w, so a tenant
// of weight 2 gets two turns for another's one.

/** The step between two runs of one flow at weight 1; a weight divides it. */
const FAIR_TAG_STEP = 1000;
/** TENANT_WEIGHTS accepts weights from 1 to this; a weight above the step would round to a step of 0. */
export const MAX_TENANT_WEIGHT = 100;

export interface FairSharePolicy {
  /** Off: every run gets tag 0, and the claim order is the plain (priority, run_at, id). */
  enabled: boolean;
  /** A tenant's weight (default 1): its share of the turns while several tenants wait. */
  tenantWeights: Readonly<Record<string, number>>;
}

export const PLAIN_ORDER: FairSharePolicy = { enabled: false, tenantWeights: {} };
export const EQUAL_SHARES: FairSharePolicy = { enabled: true, tenantWeights: {} };

/**
 * A tenant's weight (1 unless TENANT_WEIGHTS names it). Own keys only: a tenant named `constructor` or `toString`
 * must not get an Object.prototype function as its weight (its tag would be NaN and its every submit refused).
 */
export function tenantWeight(policy: FairSharePolicy, tenantId: string | null): number {
  return tenantId !== null && Object.hasOwn(policy.tenantWeights, tenantId) ? policy.tenantWeights[tenantId]! : 1;
}

/** The tag step of a tenant's runs: 0 when fair share is off (every run tag 0). */
export function fairTagStep(policy: FairSharePolicy, tenantId: string | null): number {
  if (!policy.enabled) return 0;
  return Math.max(1, Math.round(FAIR_TAG_STEP / tenantWeight(policy, tenantId)));
}

/**
 * SQL for the first tag of a run (or a bulk insert's first run) of one flow; the parameters are SQL expressions for
 * kind, tenant, priority and step. A flow with queued runs continues its own timeline: its tail in
 * jobs_queued_by_kind_tenant plus one step (one index descent). A flow with nothing queued starts at the head of its
 * priority (the smallest queued tag, one descent of jobs_claim_order); coalesce evaluates lazily, so floods (which have
 * a tail) never pay for that lookup, which walks the index entries of just-claimed runs until vacuum removes them.
 *
 * Either is then raised to the claim frontier: the largest tag of the kind's running runs (claimed in tag order, so
 * that is where the claims of the kind are; a kind with tenant ceilings is claimed in a pool of its own, at its own
 * pace; read through jobs_lease_expiry). A tail or a head can be an old turn — a run scheduled for later, waiting out a
 * retry backoff, due but not yet claimed while every slot is busy, or held at its tenant's TENANT_KIND_CONCURRENCY
 * ceiling — and a flow continuing or starting from it had all its runs claimed before every other flow's backlog. A
 * flood's tail is ahead of the frontier, so the raise changes nothing for it; with the named prepared insert its cost
 * was not measurable (rounds of 2,000 single enqueues with 64 runs running: 387–536 µs with it, 354–716 µs without).
 * While nothing runs, the tail or head alone decides. With step 0 (fair share off) the tag is 0.
 */
export function firstFairTagSql(p: { kind: string; tenant: string; priority: string; step: string }, tenantIsNull: boolean): string {
  // The tail is read from jobs_queued_by_kind_tenant, and the statement is written so that no other plan is possible.
  // Named and prepared, the enqueue runs a generic plan, which cannot tell tenants apart: with few tenants (1 / their
  // number of the queue each) it read `tenant_id = $3` as matching half the queue, and found the tail of the flow by
  // walking jobs_claim_order backwards from the end of the queue, filtering on kind and tenant — while one tenant's
  // flood was queued, every submit of another tenant read the whole flood (17,000 rows, 3–10 ms, in bench:fairness).
  // A range on the tenant is not an equality the planner can fold away, so the order by tenant then tag stays: only
  // this index gives it without sorting the queue.
  const tenantMatch = tenantIsNull ? 'tail.tenant_id IS NULL' : `tail.tenant_id >= ${p.tenant} AND tail.tenant_id <= ${p.tenant}`;
  // greatest() skips NULLs: nothing running leaves the tail or head as it is, and an empty queue gives the frontier.
  return `CASE WHEN ${p.step} = 0 THEN 0::bigint ELSE coalesce(greatest(
    coalesce(
      (SELECT tail.fair_tag + ${p.step} FROM jobs tail
        WHERE tail.state = 'queued' AND tail.kind = ${p.kind} AND ${tenantMatch} AND tail.priority = ${p.priority}
        ORDER BY tail.tenant_id DESC, tail.fair_tag DESC LIMIT 1),
      (SELECT head.fair_tag FROM jobs head WHERE head.state = 'queued' AND head.priority = ${p.priority}
        ORDER BY head.fair_tag, head.run_at, head.id LIMIT 1)),
    (SELECT max(worked.fair_tag) FROM jobs worked WHERE worked.state = 'running' AND worked.priority = ${p.priority} AND worked.kind = ${p.kind})),
    0) END`;
}
