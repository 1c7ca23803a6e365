// The worker's slots, divided into claim pools. A kind with a ceiling (WORKER_KIND_CONCURRENCY, e.g. csv-import=2)
// gets a pool of its own with that many slots; every other kind shares one pool that may use every slot and is the
// only one prefetched (a buffered job of a capped kind could wait behind its ceiling, hiding it from other workers).
//
// Each pool has its own budget: a capped pool never runs more than its slots, and it claims before the shared pool
// on every turn and keeps its free slots from being filled out of the prefetch buffer while it may have work waiting,
// so a backlog of uncapped jobs cannot starve it. The shared pool gets what the capped ones leave, so a burst of a
// capped kind cannot take more than its ceiling.
//
// A kind with a tenant ceiling (TENANT_KIND_CONCURRENCY) also gets a pool of its own, never prefetched: a buffered
// run would hold its tenant's place while it waits. Its slots are its WORKER_KIND_CONCURRENCY ceiling if it has one,
// else every slot; the claim statement keeps each tenant within its ceiling (worker/queue/claim.ts).

export interface ClaimPool {
  /** The capped kind's name, or `shared`: for logs and tests. */
  readonly name: string;
  readonly kinds: readonly string[];
  /** Most of its jobs running at once: the kind's ceiling (at most the worker's concurrency), or every slot. */
  readonly slots: number;
  /** Whether it claims beyond its free slots into the prefetch buffer. */
  readonly prefetch: boolean;
  /** Its jobs running now. */
  running: number;
  /** False once a claim came back short; true again on new-work signals, the poll interval, or a freed slot. */
  mayHaveWork: boolean;
}

export const SHARED_POOL = 'shared';

/** The pools for `kinds`, capped ones first (the order the claim walks them in), then the shared one if any. */
export function buildPools(
  kinds: readonly string[],
  kindConcurrency: Readonly<Record<string, number>>,
  concurrency: number,
  tenantKindConcurrency: Readonly<Record<string, number>> = {},
): ClaimPool[] {
  const pools: ClaimPool[] = [];
  const shared: string[] = [];
  for (const kind of kinds) {
    const ceiling = kindConcurrency[kind] ?? (tenantKindConcurrency[kind] === undefined ? undefined : concurrency);
    if (ceiling === undefined) shared.push(kind);
    else pools.push({ name: kind, kinds: [kind], slots: Math.min(ceiling, concurrency), prefetch: false, running: 0, mayHaveWork: true });
  }
  if (shared.length > 0) pools.push({ name: SHARED_POOL, kinds: shared, slots: concurrency, prefetch: true, running: 0, mayHaveWork: true });
  return pools;
}

/** Free slots of a pool. */
export function headroom(pool: ClaimPool): number {
  return Math.max(0, pool.slots - pool.running);
}

/** Slots the prefetch buffer must leave free: those of capped pools that may have work waiting. */
export function reservedForCappedPools(pools: readonly ClaimPool[]): number {
  let reserved = 0;
  for (const pool of pools) if (!pool.prefetch && pool.mayHaveWork) reserved += headroom(pool);
  return reserved;
}
