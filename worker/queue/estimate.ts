// When a run will start and finish: the runs ahead of it in the claim order, the kind's measured throughput, and the
// workers present (docs/ARCHITECTURE.md, "Admission control and estimates").
import { isPool, type Queryable } from '../db/pool.js';
import type { JobRow } from './types.js';

/** The most runs counted ahead of one (the count stops there: an estimate past it is "later than" anyway). */
const MAX_COUNTED_AHEAD = 100_000;
/** Finished runs looked at (newest first, any kind) to measure a kind's historical rate and duration. */
const FINISHED_SAMPLE = 2_000;

export interface KindThroughput {
  /** Runs of the kind started per second by the fleet, or null when nothing measured it. */
  runsPerSecond: number | null;
  /** Mean time from claim to finish of recent runs of the kind (prefetch wait included), ms. */
  meanRunMs: number | null;
  /** Runs of the kind leased now (running or in a worker's prefetch buffer). */
  running: number;
  /** Workers holding a lease of any kind now (the live leases' distinct owners). */
  workers: number;
  /** How runsPerSecond was obtained: `leases` (Little's law over the runs leased now), `history`, or `none`. */
  basis: 'leases' | 'history' | 'none';
}

export interface RunEstimate extends KindThroughput {
  /** Runs of the same kind that the claim order puts before this one (due now), up to 100,000. */
  ahead: number;
  /** Null when it cannot be told: no throughput measured and runs ahead, or no worker present. */
  startAt: Date | null;
  finishAt: Date | null;
}

// Little's law: with the fleet busy, throughput = runs in the system / time each spends there. Counted over the live
// leases (the fleet's slots and buffers now) and the recent runs' claim-to-finish time: of their last attempt
// (claimed_at), since the time from the first claim (started_at) holds retry backoffs, outage waits and a CSV
// import's review; runs finished before claimed_at existed fall back to started_at. Canceled runs are left out: a
// person ended them (a review rejected, a queued run or one waiting out a retry canceled), so claim to finish is
// not work. Without live leases of the kind, the rate of the last finished runs of the kind (their count over the
// time they spread across) stands in.
export const THROUGHPUT_STATEMENT = `
WITH recent AS (
  SELECT claimed_at, finished_at FROM (
    SELECT kind, coalesce(claimed_at, started_at) AS claimed_at, finished_at FROM jobs
    WHERE finished_at IS NOT NULL AND state <> 'canceled' ORDER BY finished_at DESC LIMIT ${FINISHED_SAMPLE}
  ) newest
  WHERE kind = $1 AND claimed_at IS NOT NULL
),
leased AS (
  -- Live leases only: a run whose lease has expired has no worker behind it (crashed, frozen) until the rescuer takes
  -- it; counted, a stopped fleet read as one still at work, with a start time for every queued run.
  SELECT count(*) FILTER (WHERE kind = $1)::int AS running, count(DISTINCT lease_owner)::int AS workers FROM jobs
  WHERE state = 'running' AND lease_expires_at > now()
)
SELECT leased.running, leased.workers,
  (SELECT count(*)::int FROM recent) AS finished,
  (SELECT avg(extract(epoch FROM finished_at - claimed_at)) * 1000 FROM recent)::float8 AS mean_run_ms,
  (SELECT extract(epoch FROM max(finished_at) - min(finished_at)) FROM recent)::float8 AS span_seconds
FROM leased`;

export async function measureThroughput(db: Queryable, kind: string): Promise<KindThroughput> {
  // Prepared, as the run-ahead count below: planning each was more than executing it (4.2 and 2.2 ms against 5.1 and
  // 5.7 with 2,000 queued runs of a kind), and every detail of a queued run asks both.
  const { rows } = await db.query({ name: 'bulk-import-kind-throughput', text: THROUGHPUT_STATEMENT, values: [kind] });
  const row = rows[0] as { running: number; workers: number; finished: number; mean_run_ms: number | null; span_seconds: number | null };
  const meanRunMs = row.finished > 0 && row.mean_run_ms !== null ? Math.max(1, row.mean_run_ms) : null;
  const base = { meanRunMs, running: row.running, workers: row.workers };
  if (row.running > 0 && meanRunMs !== null) return { ...base, runsPerSecond: row.running / (meanRunMs / 1000), basis: 'leases' };
  if (row.finished >= 2 && row.span_seconds !== null && row.span_seconds > 0) {
    return { ...base, runsPerSecond: (row.finished - 1) / row.span_seconds, basis: 'history' };
  }
  return { ...base, runsPerSecond: null, basis: 'none' };
}

// The claim order of jobs_claim_order, within the run's kind: one index-only range of jobs_queued_ahead, which has that
// order. Only runs due now count (a later run_at waits anyway).
export const AHEAD_STATEMENT = `
SELECT count(*)::int AS ahead FROM (
  SELECT 1 FROM jobs
  WHERE state = 'queued' AND run_at <= now() AND kind = $1
    AND (priority, fair_tag, run_at, id) < (SELECT priority, fair_tag, run_at, id FROM jobs WHERE id = $2)
  LIMIT ${MAX_COUNTED_AHEAD}
) ahead`;

/**
 * A kind's throughput read at most once per `maxAgeMs`, for a server answering many run records: every detail of a
 * queued or running run asks for it, and each read goes through the kind's last finished runs. An estimate a second
 * old is as good; requests that ask at once share one read; a failed read is not kept.
 */
export class ThroughputCache {
  private readonly kinds = new Map<string, { at: number; value: Promise<KindThroughput> }>();

  constructor(
    private readonly db: Queryable,
    private readonly maxAgeMs = 1_000,
  ) {}

  read(kind: string): Promise<KindThroughput> {
    const now = performance.now();
    const kept = this.kinds.get(kind);
    if (kept !== undefined && now - kept.at < this.maxAgeMs) return kept.value;
    const entry = { at: now, value: measureThroughput(this.db, kind) };
    this.kinds.set(kind, entry);
    entry.value.catch(() => {
      if (this.kinds.get(kind) === entry) this.kinds.delete(kind);
    });
    return entry.value;
  }
}

/**
 * The estimate of a run: queued (start and finish), running (finish), finished or parked (null). `throughputOf` reads
 * a kind's throughput (a ThroughputCache's, in a server); by default it is measured afresh.
 */
export async function estimateRun(
  db: Queryable,
  job: JobRow,
  options: { now?: Date; throughputOf?: (kind: string) => Promise<KindThroughput> } = {},
): Promise<RunEstimate | null> {
  if (job.state !== 'queued' && job.state !== 'running') return null;
  const now = options.now ?? new Date();
  const throughputOf = options.throughputOf ?? ((kind: string) => measureThroughput(db, kind));
  if (job.state === 'running') {
    const throughput = await throughputOf(job.kind);
    const startAt = job.claimedAt ?? job.startedAt ?? now;
    const finishAt = throughput.meanRunMs !== null ? new Date(Math.max(now.getTime(), startAt.getTime() + throughput.meanRunMs)) : null;
    return { ...throughput, ahead: 0, startAt, finishAt };
  }
  // From a pool, the two reads at once on two connections: a queued run's detail waits for one round trip, not two.
  // (A client runs one statement at a time.)
  const countAhead = () => db.query<{ ahead: number }>({ name: 'bulk-import-runs-ahead', text: AHEAD_STATEMENT, values: [job.kind, job.id] });
  const [throughput, { rows }] = isPool(db) ? await Promise.all([throughputOf(job.kind), countAhead()]) : [await throughputOf(job.kind), await countAhead()];
  const ahead = rows[0]?.ahead ?? 0;
  const notBefore = Math.max(now.getTime(), job.runAt.getTime());
  let startAt: Date | null = null;
  if (ahead === 0) startAt = new Date(notBefore);
  else if (throughput.runsPerSecond !== null && throughput.workers > 0) startAt = new Date(notBefore + (ahead / throughput.runsPerSecond) * 1000);
  const finishAt = startAt && throughput.meanRunMs !== null ? new Date(startAt.getTime() + throughput.meanRunMs) : null;
  return { ...throughput, ahead, startAt, finishAt };
}

/** The estimate as JSON for the API and `--json` (ISO times, rounded rate). */
export function estimateJson(estimate: RunEstimate | null): Record<string, unknown> | null {
  if (!estimate) return null;
  return {
    startAt: estimate.startAt?.toISOString() ?? null,
    finishAt: estimate.finishAt?.toISOString() ?? null,
    ahead: estimate.ahead,
    runsPerSecond: estimate.runsPerSecond === null ? null : Math.round(estimate.runsPerSecond * 100) / 100,
    meanRunMs: estimate.meanRunMs === null ? null : Math.round(estimate.meanRunMs),
    running: estimate.running,
    workers: estimate.workers,
    basis: estimate.basis,
  };
}
