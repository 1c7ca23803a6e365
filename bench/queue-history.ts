// npm run bench:queue-history — does a large history of finished runs slow the queue, and does retention deleting it
// stall the claim? On one embedded Postgres holding two databases, with the in-process Worker configured as
// bench:queue runs it (bench/queue/bulk-import-queue.ts: concurrency 16, claim session, LISTEN, state notifications
// on, silent logger):
//   Seed. H finished runs into their own database (default 10,000,000: succeeded/partial/failed/dead/canceled, 100
//      tenants, four kinds, created over 30 days ending a day ago), then VACUUM ANALYZE. --seed lifecycle (the
//      default) writes each run as the queue does, inserted queued, then claimed, then finished, vacuuming as it goes;
//      --seed direct inserts each in its final form, which leaves room for a new row on every page of the history
//      (the free space map then spreads new runs over all of it): a worst case.
//   A and B. In the empty database (A) and the history's (B) in turn, alternating which goes first: VACUUM jobs,
//      CHECKPOINT and sync (what earlier work left dirty is written out first), bulk-enqueue J no-op jobs, run them;
//      --rounds times each, after --warmup-rounds unmeasured ones (default 1). jobs/s from first to last handler start
//      (median of the rounds), the claim statement's latency (p50/p99/max, pooled over the rounds), and B's ratios to A.
//   C. with the history present and the worker fed a steady stream of no-op jobs: a window without retention, a window
//      of the shipped retention service (createRetention, batch 100), then the same service with --retention-batch
//      until every history row is gone (RETENTION_DAYS=1: all history is older, the live runs are not), then a window
//      after it, and one more after a plain VACUUM jobs. Per window: rows deleted and rows/s, jobs/s, claim
//      p50/p99/max, seconds a vacuum ran on jobs, and at its end the dead tuples in jobs_live and its claim index's size.
//      The retention rounds run back to back (the service waits RETENTION_INTERVAL_MS, default 10 min, between them).
//      The archiver runs throughout, as in a worker process (ARCHIVE_AFTER_SECONDS, ARCHIVE_INTERVAL_MS defaults).
//
// Claim latency is the real claim statement as the worker issues it: pg.Client.prototype.query is wrapped and times,
// client-side, each query whose text is the claim statement (claimStatement() of worker/queue/claim.ts); the
// worker's claim session is a pool of one connection used for nothing else, so the time is the statement's round trip.
// The worker claims for its free slots plus an adaptive prefetch (hundreds of rows per claim under a backlog), so a
// run of J jobs holds few claims: the tables print how many. Phases A and B also print how many heap pages the J new
// jobs landed on (the free space map spreads new rows over the history's pages) and the three slowest claims.
//
//   npm run bench:queue-history
//   npm run bench:queue-history -- --history 200000 --jobs 10000 --window 10 --rounds 3 --retention-batch 5000
//   npm run bench:queue-history -- --seed direct --skip-retention   (phases A and B only)
//
// The history is where the queue keeps it: the lifecycle seed archives each chunk once it is finished, as the
// archiver does a minute after a run ends (maintenance/archiver.ts), so it sits in jobs_archive and the queue in
// jobs_live. Before each round the previous rounds' runs are archived the same way, timed: the table's "archive"
// column is the cost the archiver adds per run, paid a minute later, outside the round.
import { execFileSync } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startBenchDatabase } from './support/bench-database.js';
import { median } from './support/median.js';
import { loadConfig } from '../worker/config.js';
import { createPool } from '../worker/db/pool.js';
import { BACKFILL_KIND, CSV_IMPORT_KIND, MASS_IMPORT_KIND, NOOP_KIND } from '../worker/handlers/kinds.js';
import { HandlerRegistry } from '../worker/handlers/registry.js';
import type { JobHandler } from '../worker/handlers/types.js';
import { createLogger } from '../worker/logger.js';
import { createArchiver } from '../worker/maintenance/archiver.js';
import { createRetention } from '../worker/maintenance/retention.js';
import { claimStatement } from '../worker/queue/claim.js';
import { enqueueJobs } from '../worker/queue/enqueue.js';
import { archiveFinishedRuns } from '../worker/queue/maintenance.js';
import { stateNotificationOption, Worker } from '../worker/runner/worker.js';

const { values: args } = parseArgs({
  options: {
    history: { type: 'string', default: '10000000' },
    jobs: { type: 'string', default: '50000' },
    concurrency: { type: 'string', default: '16' },
    /** Runs of J jobs per table state in phases A and B (jobs/s is their median, claim latency pooled over all). */
    rounds: { type: 'string', default: '3' },
    /**
     * Unmeasured rounds per table state before those (printed, not counted). In a 10,000,000-run run, each table's
     * first round was its slowest (15,456 and 10,498 jobs/s against 24,500-29,100 in the others; p99 94 and 111 ms
     * against 29-38), and pooled over 5 rounds the history's first round alone set its p99.
     */
    'warmup-rounds': { type: 'string', default: '1' },
    /** Seconds of the phase C windows without retention and of the shipped-batch retention window. */
    window: { type: 'string', default: '20' },
    /** Batch size of the retention that deletes the rest of the history (the service ships with 100). */
    'retention-batch': { type: 'string', default: '5000' },
    /**
     * How the history is written: `lifecycle` (default) as the queue writes runs, inserted queued, claimed and
     * finished; `direct`, each run inserted once in its final form (a worst case: room for a new row on every page).
     */
    seed: { type: 'string', default: 'lifecycle' },
    /** Phases A and B only. */
    'skip-retention': { type: 'boolean', default: false },
  },
});
const settings = {
  history: Number(args.history),
  jobs: Number(args.jobs),
  concurrency: Number(args.concurrency),
  rounds: Number(args.rounds),
  warmupRounds: Number(args['warmup-rounds']),
  windowSeconds: Number(args.window),
  retentionBatch: Number(args['retention-batch']),
  seed: args.seed,
};
if (settings.seed !== 'lifecycle' && settings.seed !== 'direct') throw new Error(`--seed is lifecycle or direct, not ${settings.seed}`);
// jobs and its partitions (where vacuum runs and the pages are).
const JOBS_RELATIONS = "SELECT 'jobs'::regclass UNION ALL SELECT inhrelid FROM pg_inherits WHERE inhparent = 'jobs'::regclass";
const KIND = 'bench';
const SHIPPED_RETENTION_BATCH = 100;
/** Every history run finished more than this long ago; the live runs did not. */
const RETENTION_DAYS = 1;
const ENQUEUE_CHUNK = 5_000;

// ---- claim timing -------------------------------------------------------------------------------------------------

interface ClaimSample {
  at: number;
  ms: number;
  rows: number;
}
const claims: ClaimSample[] = [];
const CLAIM_TEXT = claimStatement({ workerId: '', limit: 1, leaseMs: 1, kinds: [KIND] }).text;

function timeClaims(): void {
  type Query = (...queryArgs: unknown[]) => unknown;
  const prototype = pg.Client.prototype as unknown as { query: Query };
  const query = prototype.query;
  prototype.query = function (this: pg.Client, ...queryArgs: unknown[]): unknown {
    const first = queryArgs[0];
    const text = typeof first === 'string' ? first : (first as { text?: unknown } | null)?.text;
    if (text !== CLAIM_TEXT) return query.apply(this, queryArgs);
    const started = performance.now();
    const record = (result: unknown) => {
      const now = performance.now();
      claims.push({ at: now, ms: now - started, rows: (result as { rowCount?: number } | undefined)?.rowCount ?? 0 });
    };
    const callback = queryArgs[queryArgs.length - 1];
    if (typeof callback === 'function') {
      // pg.Pool passes a callback.
      queryArgs[queryArgs.length - 1] = (error: unknown, result: unknown) => {
        if (!error) record(result);
        (callback as (error: unknown, result: unknown) => void)(error, result);
      };
      return query.apply(this, queryArgs);
    }
    return (query.apply(this, queryArgs) as Promise<unknown>).then((result) => {
      record(result);
      return result;
    });
  };
}

// ---- the worker, as bench/queue/bulk-import-queue.ts configures it ------------------------------------------------

interface Handled {
  count: number;
  first: number;
  last: number;
  /** Handler start times (performance.now()), for jobs/s within a window. */
  starts: number[];
}

async function startWorker(databaseUrl: string, pool: pg.Pool, handled: Handled): Promise<Worker> {
  const config = loadConfig({ DATABASE_URL: databaseUrl, JOB_STATE_NOTIFICATIONS: 'true' });
  const handler: JobHandler<Record<string, never>> = {
    kind: KIND,
    description: 'no-op',
    parsePayload: () => ({}),
    run: async () => {
      const now = performance.now();
      if (handled.count === 0) handled.first = now;
      handled.last = now;
      handled.count += 1;
      handled.starts.push(now);
    },
  };
  const options = { ...config.worker, concurrency: settings.concurrency, workerId: 'bench', pollIntervalMs: 1_000 };
  const log = createLogger({ level: 'silent', format: 'json' });
  const worker = new Worker(pool, new HandlerRegistry([handler]), { config, pool, s3: undefined, bucket: undefined }, options, log, {
    database: databaseUrl,
    claimSession: true,
    listen: true,
  });
  await worker.start();
  return worker;
}

function createWorkerPool(databaseUrl: string): pg.Pool {
  return createPool(databaseUrl, { max: 20, sessionOptions: stateNotificationOption(true) });
}

async function enqueue(pool: pg.Pool, count: number): Promise<number[]> {
  const ids: number[] = [];
  for (let offset = 0; offset < count; offset += ENQUEUE_CHUNK) {
    ids.push(...(await enqueueJobs(pool, KIND, Array.from({ length: Math.min(ENQUEUE_CHUNK, count - offset) }, () => ({})))));
  }
  return ids;
}

// ---- figures ------------------------------------------------------------------------------------------------------

interface ClaimFigures {
  claims: number;
  rowsPerClaim: number;
  p50: number;
  p99: number;
  max: number;
}

function claimFigures(windows: Array<{ from: number; to: number }>): ClaimFigures {
  const window = claims.filter((claim) => windows.some(({ from, to }) => claim.at >= from && claim.at <= to));
  const sorted = window.map((claim) => claim.ms).sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
  return {
    claims: window.length,
    rowsPerClaim: window.reduce((sum, claim) => sum + claim.rows, 0) / Math.max(1, window.length),
    p50: at(0.5),
    p99: at(0.99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/** Samples every second whether an (auto)vacuum is running on jobs; counts the seconds it was. */
class VacuumWatch {
  private readonly seen: number[] = [];
  private stopped = false;
  private readonly loop: Promise<void>;

  constructor(private readonly db: pg.Client) {
    this.loop = this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      const { rows } = await this.db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_progress_vacuum WHERE datname = current_database() AND relid IN (${JOBS_RELATIONS})`,
      );
      if (rows[0]!.n > 0) this.seen.push(performance.now());
      await sleep(1_000);
    }
  }

  secondsBetween(from: number, to: number): number {
    return this.seen.filter((at) => at >= from && at <= to).length;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

const fmt = (value: number, digits = 2) => (Number.isFinite(value) ? value.toFixed(digits) : '–');
const int = (value: number) => Math.round(value).toLocaleString('en-US');

// ---- phases -------------------------------------------------------------------------------------------------------

interface DrainResult {
  label: string;
  rows: number;
  enqueueRate: number;
  jobsPerSecond: number;
  claim: ClaimFigures;
  /** Heap pages the round's jobs were inserted into: new rows go where the free space map points. */
  heapPages: number;
  vacuumSeconds: number;
  /** Milliseconds the archiver took per 1,000 of the previous rounds' runs (before the round; NaN in the first). */
  archiveMsPer1000: number;
}

/** A database of phases A and B, and what its rounds measured. */
interface PhaseTarget {
  label: string;
  url: string;
  db: pg.Client;
  historyRows: number;
  watch: VacuumWatch;
}

/**
 * Phases A and B: `rounds` times, enqueue J jobs and run them all, in the empty database and in the one holding the
 * history, round by round in alternating order, so that both meet the machine in the same moods (its speed moves
 * by a third over minutes here). The finished jobs of a round stay in the table in both alike.
 */
async function measurePhases(targets: PhaseTarget[]): Promise<DrainResult[]> {
  const rounds = new Map<string, Array<{ result: DrainResult; from: number; to: number }>>(targets.map((t) => [t.label, []]));
  for (let round = 1 - settings.warmupRounds; round <= settings.rounds; round += 1) {
    for (const t of round % 2 !== 0 ? targets : [...targets].reverse()) {
      const measured = await drain(round < 1 ? `${t.label} warm-up ${round + settings.warmupRounds}` : `${t.label} ${round}`, t.url, t.db, t.historyRows, t.watch);
      if (round >= 1) rounds.get(t.label)!.push(measured);
    }
  }
  return targets.map(({ label, historyRows }) => {
    const done = rounds.get(label)!;
    return {
      label,
      rows: historyRows + settings.jobs,
      enqueueRate: median(done.map(({ result }) => result.enqueueRate)),
      jobsPerSecond: median(done.map(({ result }) => result.jobsPerSecond)),
      claim: claimFigures(done.map(({ from, to }) => ({ from, to }))),
      heapPages: median(done.map(({ result }) => result.heapPages)),
      vacuumSeconds: done.reduce((sum, { result }) => sum + result.vacuumSeconds, 0),
      archiveMsPer1000: median(done.map(({ result }) => result.archiveMsPer1000).filter(Number.isFinite)),
    };
  });
}

/**
 * Writes out what earlier work left dirty, before a round: CHECKPOINT (the server's dirty buffers, both databases':
 * the seed's, the vacuum's, the archiving's) and sync (the kernel's dirty pages: with fsync off nothing else waits for
 * them). Otherwise their writeback lands in whichever round runs when it comes. Before this, one round of the empty
 * table after a 10,000,000-run seed had a 9.1 s claim and ran at 831 jobs/s, against 23,000 in its other rounds.
 * Returns the seconds it took.
 */
async function writeOut(db: pg.Client): Promise<number> {
  const started = performance.now();
  await db.query('CHECKPOINT');
  execFileSync('sync');
  return (performance.now() - started) / 1000;
}

/** One round: enqueue J jobs, run them all, stop. */
async function drain(
  label: string,
  databaseUrl: string,
  db: pg.Client,
  historyRows: number,
  watch: VacuumWatch,
): Promise<{ result: DrainResult; from: number; to: number }> {
  const pool = createWorkerPool(databaseUrl);
  try {
    // The previous round's runs left dead row versions (two per run). On the empty table autovacuum would have run
    // before the next burst; on the history's not yet (2 % of 10,000,000 rows is 200,000 dead versions, two rounds).
    // Vacuuming both before every round keeps their rounds alike (the history's first follows the seed's vacuum in
    // any case): each round's new runs go to the holes the free space map then records, in the history's case mostly
    // those of its previous round. First the previous rounds' runs go to the archive, as the archiver would have
    // moved them a minute after they finished.
    const archiveStarted = performance.now();
    let archived = 0;
    for (let moved = -1; moved !== 0; archived += moved) moved = Math.max(0, await archiveFinishedRuns(db, 0, 5_000));
    const archiveMsPer1000 = archived > 0 ? (performance.now() - archiveStarted) / (archived / 1000) : Number.NaN;
    await db.query('VACUUM jobs');
    const writtenOutSeconds = await writeOut(db);
    let started = performance.now();
    const ids = await enqueue(pool, settings.jobs);
    const enqueueRate = settings.jobs / ((performance.now() - started) / 1000);
    const { rows: pages } = await db.query<{ n: number }>(
      'SELECT count(DISTINCT (ctid::text::point)[0])::int AS n FROM jobs WHERE id = ANY($1::bigint[])',
      [ids],
    );
    const handled: Handled = { count: 0, first: 0, last: 0, starts: [] };
    started = performance.now();
    const worker = await startWorker(databaseUrl, pool, handled);
    while (handled.count < settings.jobs) {
      if (performance.now() - started > 600_000) throw new Error(`${label}: ${handled.count} of ${settings.jobs} jobs ran in 10 minutes`);
      await sleep(20);
    }
    await worker.stop();
    const { rows } = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM jobs WHERE kind = $1 AND state IN ('queued', 'running')",
      [KIND],
    );
    if (rows[0]!.n !== 0) throw new Error(`${label}: ${rows[0]!.n} jobs left unfinished`);
    if (handled.count !== settings.jobs) throw new Error(`${label}: ${handled.count} handler calls for ${settings.jobs} jobs`);
    const result: DrainResult = {
      label,
      rows: historyRows + settings.jobs,
      enqueueRate,
      jobsPerSecond: settings.jobs / ((handled.last - handled.first) / 1000),
      claim: claimFigures([{ from: started, to: handled.last }]),
      heapPages: pages[0]!.n,
      vacuumSeconds: watch.secondsBetween(started, handled.last),
      archiveMsPer1000,
    };
    const slowest = claims
      .filter((claim) => claim.at >= started && claim.at <= handled.last)
      .sort((a, b) => b.ms - a.ms)
      .slice(0, 3)
      .map((claim) => `${fmt(claim.ms, 0)} ms at ${fmt((claim.at - started) / 1000, 1)} s`);
    console.log(
      `  ${label}: ${int(result.jobsPerSecond)} jobs/s, ${result.claim.claims} claims, p50 ${fmt(result.claim.p50)} ms, p99 ${fmt(result.claim.p99)} ms ` +
        `(slowest ${slowest.join(', ')}); jobs on ${int(result.heapPages)} heap pages; ${result.vacuumSeconds} s with a vacuum on jobs; ` +
        `archived ${int(archived)} earlier runs first (${fmt(archiveMsPer1000)} ms per 1,000); written out first in ${fmt(writtenOutSeconds, 1)} s`,
    );
    return { result, from: started, to: handled.last };
  } finally {
    await pool.end();
  }
}

/** The history's columns by row number g: kind, state and times as the seeds below write them. */
const HISTORY_ROW = `SELECT g, ($4::text[])[1 + g % 4] AS kind, 't' || (g % 100) AS tenant_id,
    CASE WHEN g % 100 < 85 THEN 'succeeded' WHEN g % 100 < 90 THEN 'partial' WHEN g % 100 < 95 THEN 'failed'
         WHEN g % 100 < 97 THEN 'dead' ELSE 'canceled' END AS state,
    now() - interval '31 days' + (g * interval '30 days' / $3) - interval '1 minute' AS created
  FROM generate_series($1::bigint, $2::bigint) g`;
const HISTORY_PROGRESS = "jsonb_build_object('done', 100, 'total', 100, 'phase', 'done')";
const HISTORY_RESULT = "jsonb_build_object('rows', 100)";
/** A history run's last_error, from its state column (`state`, or `s.state` where jobs.state is in scope too). */
const historyError = (state: string) =>
  `CASE WHEN ${state} IN ('failed', 'dead') THEN jsonb_build_object('code', 'X', 'message', 'failed', 'class', 'permanent', 'attempt', 1, 'at', now()::text) END`;

async function seedHistory(db: pg.Client): Promise<void> {
  const started = performance.now();
  await db.query('SET bulk_import.state_notifications = off');
  await db.query('SET synchronous_commit = off');
  const kinds = [NOOP_KIND, CSV_IMPORT_KIND, MASS_IMPORT_KIND, BACKFILL_KIND];
  if (settings.seed === 'direct') {
    // Finished runs like those a 30-day retention keeps: ids grow with creation time, the newest finished a day ago.
    // Each row is written once, in its final form, in statements of a million rows (so progress shows). Every page
    // keeps its fillfactor reserve plus the gap a finished row leaves: room a small new row fits into, on every page.
    const chunk = 1_000_000;
    for (let from = 1; from <= settings.history; from += chunk) {
      const to = Math.min(settings.history, from + chunk - 1);
      await db.query(
        `INSERT INTO jobs (kind, tenant_id, payload, state, attempts, max_attempts, progress, result, last_error,
           created_at, started_at, finished_at, updated_at, run_at, archived)
         SELECT kind, tenant_id, jsonb_build_object('seq', g), state, 1, 5, ${HISTORY_PROGRESS}, ${HISTORY_RESULT}, ${historyError('state')},
           created, created + interval '2 seconds', created + interval '5 seconds', created + interval '5 seconds', created, true
         FROM (${HISTORY_ROW}) s`,
        [from, to, settings.history, kinds],
      );
      console.log(`  ${int(to)} rows, ${fmt((performance.now() - started) / 1000, 0)} s`);
    }
  } else {
    // The same runs written the way the queue writes them: inserted queued, claimed (running, leased), then finished,
    // a chunk at a time. Each row version is placed as the queue's would be: updates take the page's reserve, and
    // pruning and vacuum leave the holes the free space map later offers to inserts. The seed writes a month of runs
    // in minutes, faster than autovacuum would follow (it starts at most once a naptime), so it vacuums itself about as
    // often as autovacuum would a table written at a production rate: jobs is vacuumed once dead versions pass 2 % of
    // its rows (its autovacuum_vacuum_scale_factor), and a run leaves two, so after 1 % of the table in new runs; here
    // after 2 % (at least 100,000), which halves the seed's vacuums and leaves holes over twice as many pages.
    const chunk = 20_000;
    let reported = 0;
    let vacuumed = 0;
    for (let from = 1; from <= settings.history; from += chunk) {
      const to = Math.min(settings.history, from + chunk - 1);
      const { rows } = await db.query<{ first: string; last: string }>(
        `WITH inserted AS (
           INSERT INTO jobs (kind, tenant_id, payload, max_attempts, created_at, updated_at, run_at)
           SELECT kind, tenant_id, jsonb_build_object('seq', g), 5, created, created, created FROM (${HISTORY_ROW}) s ORDER BY g
           RETURNING id)
         SELECT min(id) AS first, max(id) AS last FROM inserted`,
        [from, to, settings.history, kinds],
      );
      const range = [rows[0]!.first, rows[0]!.last];
      await db.query(
        `UPDATE jobs SET state = 'running', attempts = 1, lease_owner = 'seed', lease_expires_at = created_at + interval '32 seconds',
           heartbeat_at = created_at + interval '2 seconds', started_at = created_at + interval '2 seconds',
           updated_at = created_at + interval '2 seconds'
         WHERE id BETWEEN $1 AND $2`,
        range,
      );
      await db.query(
        `UPDATE jobs SET state = s.state, lease_owner = NULL, lease_expires_at = NULL, progress = ${HISTORY_PROGRESS},
           result = ${HISTORY_RESULT}, last_error = ${historyError('s.state')},
           finished_at = created_at + interval '5 seconds', updated_at = created_at + interval '5 seconds'
         FROM (${HISTORY_ROW}) s
         WHERE jobs.id = $5::bigint + s.g - $1::bigint`,
        [from, to, settings.history, kinds, range[0]],
      );
      // Into the archive, as the archiver files runs a minute after they end.
      await archiveFinishedRuns(db, 0, chunk);
      if (to - vacuumed >= Math.max(100_000, vacuumed / 50)) {
        vacuumed = to;
        await db.query('VACUUM jobs');
      }
      if (to - reported >= 1_000_000 || to === settings.history) {
        reported = to;
        console.log(`  ${int(to)} rows, ${fmt((performance.now() - started) / 1000, 0)} s`);
      }
    }
    // The finishing update finds each run by its id's offset in its chunk: check that every run got its own end.
    const { rows } = await db.query<{ unfinished: number; mismatched: number }>(
      `SELECT count(*) FILTER (WHERE state IN ('queued', 'running'))::int AS unfinished,
         count(*) FILTER (WHERE state <> CASE WHEN seq % 100 < 85 THEN 'succeeded' WHEN seq % 100 < 90 THEN 'partial'
           WHEN seq % 100 < 95 THEN 'failed' WHEN seq % 100 < 97 THEN 'dead' ELSE 'canceled' END)::int AS mismatched
       FROM (SELECT state, (payload ->> 'seq')::bigint AS seq FROM jobs) j`,
    );
    if (rows[0]!.unfinished !== 0 || rows[0]!.mismatched !== 0) {
      throw new Error(`lifecycle seed: ${rows[0]!.unfinished} runs left unfinished, ${rows[0]!.mismatched} in another run's state`);
    }
  }
  const inserted = (performance.now() - started) / 1000;
  await db.query('VACUUM ANALYZE jobs');
  const { rows } = await db.query<{ size: string }>(`SELECT pg_size_pretty(sum(pg_total_relation_size(oid))) AS size FROM (${JOBS_RELATIONS}) AS r(oid)`);
  console.log(
    `seeded ${int(settings.history)} finished runs in ${fmt(inserted, 1)} s (+ VACUUM ANALYZE ${fmt((performance.now() - started) / 1000 - inserted, 1)} s); ` +
      `jobs with its indexes ${rows[0]!.size}`,
  );
}

interface Window {
  label: string;
  seconds: number;
  deleted: number;
  jobsPerSecond: number;
  claim: ClaimFigures;
  vacuumSeconds: number;
  /** At the window's end: dead tuples in jobs, and the size of the claim's index. */
  deadTuples: number;
  claimIndex: string;
}

/** Phase C: a steady stream of no-op jobs, windows without and with retention. */
async function retentionPhase(databaseUrl: string, db: pg.Client, watch: VacuumWatch): Promise<Window[]> {
  const pool = createWorkerPool(databaseUrl);
  const handled: Handled = { count: 0, first: 0, last: 0, starts: [] };
  // The feeder keeps 2-3 chunks queued ahead of the worker, so it never runs dry.
  let enqueued = 0;
  let feeding = true;
  const feeder = (async () => {
    while (feeding) {
      if (enqueued - handled.count < 2 * ENQUEUE_CHUNK) {
        await enqueue(pool, ENQUEUE_CHUNK);
        enqueued += ENQUEUE_CHUNK;
      } else {
        await sleep(10);
      }
    }
  })();
  const worker = await startWorker(databaseUrl, pool, handled);
  const historyLeft = async () => {
    const { rows } = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM jobs WHERE finished_at < now() - $1 * interval '1 day'`,
      [RETENTION_DAYS],
    );
    return rows[0]!.n;
  };
  const windows: Window[] = [];
  const record = async (label: string, from: number, to: number, deleted: number) => {
    const { rows } = await db.query<{ dead: number; index: string }>(
      `SELECT n_dead_tup::bigint::float8 AS dead, pg_size_pretty(pg_relation_size('jobs_live_claim_order')) AS index
       FROM pg_stat_user_tables WHERE relname = 'jobs_live'`,
    );
    const window: Window = {
      deadTuples: rows[0]!.dead,
      claimIndex: rows[0]!.index,
      label,
      seconds: (to - from) / 1000,
      deleted,
      jobsPerSecond: handled.starts.filter((at) => at >= from && at <= to).length / ((to - from) / 1000),
      claim: claimFigures([{ from, to }]),
      vacuumSeconds: watch.secondsBetween(from, to),
    };
    windows.push(window);
    console.log(
      `  ${label}: ${fmt(window.seconds, 1)} s, ${int(deleted)} deleted, ${int(window.jobsPerSecond)} jobs/s, ` +
        `${window.claim.claims} claims, p50 ${fmt(window.claim.p50)} p99 ${fmt(window.claim.p99)} max ${fmt(window.claim.max)} ms; ` +
        `${int(window.deadTuples)} dead tuples in jobs_live, jobs_live_claim_order ${window.claimIndex}`,
    );
  };
  const log = createLogger({ level: 'error', format: 'json' });
  // The archiver as a worker process runs it (its defaults): the stream's runs leave jobs_live a minute after they end.
  const config = loadConfig({ DATABASE_URL: databaseUrl });
  const archiver = createArchiver(pool, config.worker.archiveAfterSeconds, config.worker.archiveIntervalMs, config.worker.retentionDays, log);
  archiver.start();
  try {
    await sleep(3_000); // warm-up: the worker's first claims, the feeder's first chunks
    let from = performance.now();
    await sleep(settings.windowSeconds * 1000);
    await record('no retention', from, performance.now(), 0);

    // The retention service as shipped (createRetention's default batch), then with a larger batch to the end.
    for (const [label, batchSize, untilDone] of [
      [`retention, batch ${SHIPPED_RETENTION_BATCH} (shipped)`, SHIPPED_RETENTION_BATCH, false],
      [`retention, batch ${settings.retentionBatch}`, settings.retentionBatch, true],
    ] as const) {
      const before = await historyLeft();
      const retention = createRetention(pool, RETENTION_DAYS, 600_000, log, { batchSize });
      from = performance.now();
      for (;;) {
        await retention.runOnce();
        if (!untilDone && performance.now() - from >= settings.windowSeconds * 1000) break;
        // Cheap check (jobs_finished_at); the exact count is taken outside the window.
        const { rows } = await db.query<{ more: boolean }>(
          `SELECT EXISTS (SELECT 1 FROM jobs WHERE finished_at < now() - $1 * interval '1 day') AS more`,
          [RETENTION_DAYS],
        );
        if (!rows[0]!.more) break;
      }
      const to = performance.now();
      await record(label, from, to, before - (await historyLeft()));
    }

    from = performance.now();
    await sleep(settings.windowSeconds * 1000);
    await record('after retention', from, performance.now(), 0);

    // What a plain VACUUM (no FULL, the stream still running) gives back.
    const vacuumStarted = performance.now();
    await db.query('VACUUM jobs');
    console.log(`  VACUUM jobs: ${fmt((performance.now() - vacuumStarted) / 1000, 1)} s`);
    from = performance.now();
    await sleep(settings.windowSeconds * 1000);
    await record('after retention and a VACUUM', from, performance.now(), 0);
  } finally {
    await archiver.stop();
    feeding = false;
    await feeder;
    await worker.stop();
    await pool.end();
  }
  return windows;
}

// ---- main ---------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  timeClaims();
  const database = await startBenchDatabase('bench_history', { sharedBuffers: '1GB' });
  const url = database.url;
  try {
    const emptyUrl = await database.addDatabase('bench_empty');
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    const emptyDb = new pg.Client({ connectionString: emptyUrl });
    await emptyDb.connect();
    const watchDb = new pg.Client({ connectionString: url });
    await watchDb.connect();
    const watch = new VacuumWatch(watchDb);
    const emptyWatchDb = new pg.Client({ connectionString: emptyUrl });
    await emptyWatchDb.connect();
    const emptyWatch = new VacuumWatch(emptyWatchDb);
    const { rows } = await db.query<{ server_version: string; autovacuum: string; naptime: string; options: string[] | null }>(
      `SELECT current_setting('server_version') AS server_version, current_setting('autovacuum') AS autovacuum,
         current_setting('autovacuum_naptime') AS naptime, (SELECT reloptions FROM pg_class WHERE oid = 'jobs_live'::regclass) AS options`,
    );
    const server = rows[0]!;
    console.log(
      `Postgres ${server.server_version} (embedded, fsync off, shared_buffers 1GB; autovacuum ${server.autovacuum}, naptime ${server.naptime}, ` +
        `jobs_live ${(server.options ?? []).join(' ')}), Node ${process.version}`,
    );
    console.log(`settings: ${JSON.stringify(settings)}; Worker as bench:queue runs it (poll 1000 ms + LISTEN, claim session, state notifications on)\n`);
    console.log(`Seeding ${int(settings.history)} finished runs (--seed ${settings.seed}) into their own database`);
    await seedHistory(db);
    console.log('A and B. the empty table and the history, round by round');
    const [empty, withHistory] = (await measurePhases([
      { label: 'empty', url: emptyUrl, db: emptyDb, historyRows: 0, watch: emptyWatch },
      { label: 'history', url, db, historyRows: settings.history, watch },
    ])) as [DrainResult, DrainResult];
    await emptyWatch.stop();
    await emptyWatchDb.end();
    await emptyDb.end();
    await db.query('VACUUM ANALYZE jobs');
    let windows: Awaited<ReturnType<typeof retentionPhase>> = [];
    if (!args['skip-retention']) {
      console.log('C. retention under a steady stream of no-op jobs');
      windows = await retentionPhase(url, db, watch);
    }
    await watch.stop();
    await watchDb.end();
    const { rows: vacuums } = await db.query<{ autovacuum_count: number; autoanalyze_count: number }>(
      "SELECT sum(autovacuum_count)::int AS autovacuum_count, sum(autoanalyze_count)::int AS autoanalyze_count FROM pg_stat_user_tables WHERE relname IN ('jobs_live', 'jobs_archive')",
    );
    await db.end();

    console.log(`\nNode ${process.version}; ${JSON.stringify(settings)}`);
    console.log('\n| table | rows in jobs | enqueue jobs/s | jobs/s | claims | rows/claim | claim p50 ms | claim p99 ms | claim max ms | heap pages of the J jobs | s with a vacuum on jobs | archive ms per 1,000 runs |');
    console.log('|---|---|---|---|---|---|---|---|---|---|---|---|');
    for (const r of [empty, withHistory]) {
      console.log(
        `| ${r.label} | ${int(r.rows)} | ${int(r.enqueueRate)} | ${int(r.jobsPerSecond)} | ${r.claim.claims} | ${fmt(r.claim.rowsPerClaim, 1)} | ` +
          `${fmt(r.claim.p50)} | ${fmt(r.claim.p99)} | ${fmt(r.claim.max)} | ${int(r.heapPages)} | ${r.vacuumSeconds} | ${fmt(r.archiveMsPer1000)} |`,
      );
    }
    console.log(
      `\nhistory / empty: jobs/s ${fmt(withHistory.jobsPerSecond / empty.jobsPerSecond)}×, claim p50 ${fmt(withHistory.claim.p50 / empty.claim.p50)}×, ` +
        `claim p99 ${fmt(withHistory.claim.p99 / empty.claim.p99)}× (goal: within 10%)`,
    );
    if (windows.length > 0) {
      console.log(
        '\n| phase C window | seconds | history rows deleted | rows/s | jobs/s | claims | rows/claim | claim p50 ms | claim p99 ms | claim max ms | s with a vacuum on jobs | dead tuples in jobs_live after | jobs_live_claim_order after |',
      );
      console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
      for (const w of windows) {
        console.log(
          `| ${w.label} | ${fmt(w.seconds, 1)} | ${int(w.deleted)} | ${w.deleted > 0 ? int(w.deleted / w.seconds) : '–'} | ${int(w.jobsPerSecond)} | ${w.claim.claims} | ` +
            `${fmt(w.claim.rowsPerClaim, 1)} | ${fmt(w.claim.p50)} | ${fmt(w.claim.p99)} | ${fmt(w.claim.max)} | ${w.vacuumSeconds} | ${int(w.deadTuples)} | ${w.claimIndex} |`,
        );
      }
      // The stream's own churn (dead index entries until autovacuum gets to them) drifts the figures over the phase, so
      // each retention window is compared with the windows without retention before and after it.
      const before = windows[0]!;
      const after = windows.find((w) => w.label === 'after retention')!;
      for (const w of windows.filter((w) => w.label.startsWith('retention'))) {
        console.log(
          `${w.label} / no retention before, after: jobs/s ${fmt(w.jobsPerSecond / before.jobsPerSecond)}×, ${fmt(w.jobsPerSecond / after.jobsPerSecond)}×; ` +
            `claim p99 ${fmt(w.claim.p99 / before.claim.p99)}×, ${fmt(w.claim.p99 / after.claim.p99)}×; ` +
            `max ${fmt(w.claim.max / before.claim.max)}×, ${fmt(w.claim.max / after.claim.max)}×`,
        );
      }
    }
    console.log(`jobs: ${vacuums[0]?.autovacuum_count ?? 0} autovacuums, ${vacuums[0]?.autoanalyze_count ?? 0} autoanalyzes over the run`);
  } finally {
    await database.stop();
  }
}

await main();
// Timers of the stopped workers' pools may linger; the tables are out and Postgres is down.
process.exit(0);
