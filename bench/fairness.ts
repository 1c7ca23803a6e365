// npm run bench:fairness — fair share between tenants under a flood (run it under `flock /tmp/heavy.lock`).
//
// Tenant A bulk-enqueues BENCH_FLOOD no-op runs; a Worker (BENCH_CONCURRENCY slots, default prefetch) drains them
// while tenant B enqueues one run every BENCH_SMALL_EVERY_MS. Per mode — fair claim (fair_tag, FAIR_CLAIM=true) and
// plain priority order (every tag 0) — and per round (alternating the order), it prints B's pickup latency (enqueue
// to handler start: p50, p99, max) and the throughput of all runs (first start to last finish), and at the end the
// throughput cost of fairness. `--explain` instead fills a table with 1,000,000 queued runs of 1,000 tenants (and
// 1,000,000 finished ones) and prints the plan of the claim statement with EXPLAIN (ANALYZE, BUFFERS). `--ceilings`
// times the claim of a kind with a tenant ceiling (TENANT_KIND_CONCURRENCY 3, claims of 16, over 1,000,000 finished
// runs and 100,000 queued runs of another kind): with one tenant at its ceiling in front of backlogs of 10,000 to 200,000 runs and nothing else to take, and
// with 1,000 and 10,000 tenants of 5 queued runs each.
//
//   BENCH_FLOOD=20000 BENCH_ROUNDS=7 flock /tmp/heavy.lock npm run bench:fairness
//
// Seven rounds by default: single rounds spread ±15 % on a 2-core machine, and the cost is a ratio of two medians;
// with three rounds it read anywhere from 4 % to 17 % for the same code (about 35 s for seven).
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { startBenchDatabase } from './support/bench-database.js';
import { postgresCpuMeter } from './support/process-cpu.js';
import { printStatements, resetStatements, STATEMENTS_SETTINGS } from './support/statements.js';
import { loadConfig } from '../worker/config.js';
import { createPool, type Pool } from '../worker/db/pool.js';
import { HandlerRegistry } from '../worker/handlers/registry.js';
import type { JobHandler } from '../worker/handlers/types.js';
import { createLogger } from '../worker/logger.js';
import { claimJobs, claimStatement } from '../worker/queue/claim.js';
import { enqueueJob, enqueueJobs } from '../worker/queue/enqueue.js';
import { EQUAL_SHARES, PLAIN_ORDER, type FairSharePolicy } from '../worker/queue/fair-share.js';
import { Worker } from '../worker/runner/worker.js';

const settings = {
  flood: Number(process.env.BENCH_FLOOD ?? 20_000),
  concurrency: Number(process.env.BENCH_CONCURRENCY ?? 16),
  smallEveryMs: Number(process.env.BENCH_SMALL_EVERY_MS ?? 20),
  rounds: Number(process.env.BENCH_ROUNDS ?? 7),
  /** BENCH_STATEMENTS=1: each round also prints its statements by database time (pg_stat_statements). */
  statements: process.env.BENCH_STATEMENTS === '1',
};

interface RoundResult {
  mode: 'fair' | 'plain';
  throughput: number;
  smallLatencies: number[];
  /** CPU per run, ms: every Postgres process, and this process (the worker, and B's enqueues). */
  postgresCpuMsPerJob: number;
  workerCpuMsPerJob: number;
}

const MODES: Array<{ mode: RoundResult['mode']; policy: FairSharePolicy }> = [
  { mode: 'fair', policy: EQUAL_SHARES },
  { mode: 'plain', policy: PLAIN_ORDER },
];

async function runRound(databaseUrl: string, pool: Pool, mode: RoundResult['mode'], policy: FairSharePolicy): Promise<RoundResult> {
  await pool.query('TRUNCATE jobs CASCADE');
  for (let done = 0; done < settings.flood; done += 5_000) {
    const count = Math.min(5_000, settings.flood - done);
    await enqueueJobs(pool, 'bench', Array.from({ length: count }, () => ({ tenant: 'A' })), { tenantId: 'A', fairShare: policy });
  }
  await pool.query('VACUUM ANALYZE jobs');
  const enqueuedAt = new Map<number, number>();
  const latencies: number[] = [];
  let firstStart = 0;
  let lastFinish = 0;
  let finished = 0;
  const handler: JobHandler<{ tenant: string; seq?: number }> = {
    kind: 'bench',
    description: 'no-op',
    parsePayload: (raw) => raw as { tenant: string; seq?: number },
    run: async ({ payload }) => {
      const now = performance.now();
      firstStart ||= now;
      if (payload.tenant === 'B') latencies.push(now - enqueuedAt.get(payload.seq!)!);
    },
  };
  const config = loadConfig({ DATABASE_URL: databaseUrl });
  const worker = new Worker(
    pool,
    new HandlerRegistry([handler]),
    { config, pool, s3: undefined, bucket: undefined },
    { ...config.worker, concurrency: settings.concurrency, workerId: `bench-${mode}`, kinds: ['bench'] },
    createLogger({ level: 'silent', format: 'json' }),
    { database: databaseUrl, claimSession: true, listen: true },
  );
  worker.on('jobFinished', () => {
    finished += 1;
    lastFinish = performance.now();
  });
  // Where the cost of fairness goes: the database's CPU and this process's, per run, over the round.
  const statements = settings.statements && (await resetStatements(pool));
  const postgresCpu = postgresCpuMeter();
  const sampler = setInterval(() => postgresCpu.sample(), 250);
  const workerCpu = process.cpuUsage();
  await worker.start();
  // B trickles in while A's backlog drains; its last run is enqueued once A is 90 % done.
  let seq = 0;
  const total = () => settings.flood + seq;
  while (finished < settings.flood * 0.9) {
    seq += 1;
    enqueuedAt.set(seq, performance.now());
    await enqueueJob(pool, { kind: 'bench', tenantId: 'B', payload: { tenant: 'B', seq } }, 5, policy);
    await sleep(settings.smallEveryMs);
  }
  while (finished < total()) await sleep(5);
  clearInterval(sampler);
  const postgresCpuMs = postgresCpu.elapsedMs();
  const { user, system } = process.cpuUsage(workerCpu);
  await worker.stop();
  if (statements) await printStatements(pool, total());
  return {
    mode,
    throughput: (total() / (lastFinish - firstStart)) * 1000,
    smallLatencies: latencies,
    postgresCpuMsPerJob: postgresCpuMs / total(),
    workerCpuMsPerJob: (user + system) / 1000 / total(),
  };
}

const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
};
const median = (values: number[]) => percentile(values, 50);

function printTable(results: RoundResult[]): void {
  const rows = MODES.map(({ mode }) => {
    const mine = results.filter((r) => r.mode === mode);
    const latencies = mine.flatMap((r) => r.smallLatencies);
    return {
      mode,
      throughput: median(mine.map((r) => r.throughput)),
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: Math.max(...latencies),
      samples: latencies.length,
      perRound: mine.map((r) => Math.round(r.throughput)).join(' / '),
      postgresCpu: median(mine.map((r) => r.postgresCpuMsPerJob)),
      workerCpu: median(mine.map((r) => r.workerCpuMsPerJob)),
    };
  });
  console.log(
    '\n| claim order | throughput, all runs (median of rounds) | per round | small tenant pickup p50 | p99 | max | samples | Postgres CPU ms/run | worker CPU ms/run |',
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.mode} | ${Math.round(r.throughput)} jobs/s | ${r.perRound} | ${r.p50.toFixed(1)} ms | ${r.p99.toFixed(1)} ms | ${r.max.toFixed(1)} ms | ${r.samples} | ` +
        `${r.postgresCpu.toFixed(3)} | ${r.workerCpu.toFixed(3)} |`,
    );
  }
  const [fair, plain] = rows as [(typeof rows)[number], (typeof rows)[number]];
  console.log(`\nthroughput cost of fairness: ${(((plain.throughput - fair.throughput) / plain.throughput) * 100).toFixed(1)} % (goal: under 10 %)`);
}

async function explain(pool: Pool): Promise<void> {
  console.log('filling: 1,000,000 finished runs, then 1,000,000 queued runs of 1,000 tenants (fair tags) …');
  await pool.query(`INSERT INTO jobs (kind, tenant_id, state, finished_at, started_at, attempts)
                    SELECT 'bench', 't' || (i % 1000), 'succeeded', now() - interval '1 hour', now() - interval '1 hour', 1
                    FROM generate_series(1, 1000000) i`);
  for (let tenant = 0; tenant < 1000; tenant += 1) {
    await enqueueJobs(pool, 'bench', Array.from({ length: 1_000 }, () => ({})), { tenantId: `t${tenant}`, fairShare: EQUAL_SHARES });
  }
  await pool.query('VACUUM ANALYZE jobs');
  const client = await pool.connect();
  try {
    // As the worker's claim session runs it (worker.ts): bitmap and sequential scans off.
    await client.query('SET enable_bitmapscan = off; SET enable_seqscan = off');
    for (const limit of [16, 500]) {
      const { text, values } = claimStatement({ workerId: 'explain', limit, leaseMs: 30_000, kinds: ['bench'], excludeIds: [] });
      await client.query('BEGIN');
      const { rows } = await client.query(`EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) ${text}`, values);
      await client.query('ROLLBACK');
      console.log(`\nclaim of ${limit}, 2,000,000 rows (1,000,000 queued):\n${rows.map((row) => row['QUERY PLAN']).join('\n')}`);
    }
  } finally {
    client.release();
  }
}

const CEILING_REQUEST = { workerId: 'ceilings', leaseMs: 3_600_000, kinds: ['bench'], tenantKindConcurrency: { bench: 3 } };

/** p50 / p99 / max of `claims` claims of 16 (ms), as the worker sends them (transaction, advisory lock, statement). */
async function timeClaims(pool: Pool, claims: number): Promise<{ p50: number; p99: number; max: number; claimed: number }> {
  const times: number[] = [];
  let claimed = 0;
  for (let i = 0; i < claims; i += 1) {
    const started = performance.now();
    claimed += (await claimJobs(pool, { ...CEILING_REQUEST, limit: 16 })).length;
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  const at = (q: number) => times[Math.min(times.length - 1, Math.floor(q * times.length))]!;
  return { p50: at(0.5), p99: at(0.99), max: times.at(-1)!, claimed };
}

async function ceilings(pool: Pool): Promise<void> {
  console.log('filling: 1,000,000 finished runs, and 100,000 queued runs of another kind …');
  await pool.query(`INSERT INTO jobs (kind, tenant_id, state, finished_at, started_at, attempts)
                    SELECT 'bench', 't' || (i % 1000), 'succeeded', now() - interval '1 hour', now() - interval '1 hour', 1
                    FROM generate_series(1, 1000000) i`);
  for (let i = 0; i < 20; i += 1) await enqueueJobs(pool, 'other', Array.from({ length: 5_000 }, () => ({})), { tenantId: `o${i}` });
  console.log('\n| queue of kind `bench` (ceiling 3 per tenant) | claims | claimed | p50 ms | p99 ms | max ms |');
  console.log('|---|---|---|---|---|---|');
  const print = (label: string, result: Awaited<ReturnType<typeof timeClaims>>, claims: number) =>
    console.log(`| ${label} | ${claims} | ${result.claimed} | ${result.p50.toFixed(2)} | ${result.p99.toFixed(2)} | ${result.max.toFixed(2)} |`);
  let backlog = 0;
  for (const size of [10_000, 50_000, 200_000]) {
    for (; backlog < size; backlog += 5_000) await enqueueJobs(pool, 'bench', Array.from({ length: 5_000 }, () => ({})), { tenantId: 'flood' });
    await pool.query('VACUUM ANALYZE jobs');
    if (size === 10_000) await claimJobs(pool, { ...CEILING_REQUEST, limit: 16 }); // flood takes its 3 places
    print(`one tenant at its ceiling, ${size.toLocaleString('en-US')} queued behind it, nothing else`, await timeClaims(pool, 200), 200);
  }
  await pool.query(`DELETE FROM jobs WHERE state <> 'succeeded' AND kind = 'bench'`);
  let tenants = 0;
  for (const count of [1_000, 10_000]) {
    for (; tenants < count; tenants += 1) await enqueueJobs(pool, 'bench', Array.from({ length: 5 }, () => ({})), { tenantId: `q${tenants}` });
    await pool.query(`UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL WHERE state = 'running' AND kind = 'bench'`);
    await pool.query('VACUUM ANALYZE jobs');
    print(`${count.toLocaleString('en-US')} tenants with 5 queued runs each`, await timeClaims(pool, 60), 60);
  }
}

async function main(): Promise<void> {
  const database = await startBenchDatabase('bench_fairness', settings.statements ? { settings: STATEMENTS_SETTINGS } : {});
  const databaseUrl = database.url;
  try {
    const pool = createPool(databaseUrl, { max: 20 });
    try {
      if (process.argv.includes('--explain')) return await explain(pool);
      if (process.argv.includes('--ceilings')) return await ceilings(pool);
      console.log(`Node ${process.version}; settings: ${JSON.stringify(settings)}`);
      const results: RoundResult[] = [];
      for (let round = 1; round <= settings.rounds; round += 1) {
        const order = round % 2 === 1 ? MODES : [...MODES].reverse();
        for (const { mode, policy } of order) {
          const result = await runRound(databaseUrl, pool, mode, policy);
          console.log(
            `round ${round} ${mode.padEnd(5)} ${Math.round(result.throughput)} jobs/s, small tenant p50 ${median(result.smallLatencies).toFixed(1)} ms ` +
              `(${result.smallLatencies.length} runs), CPU ms/run Postgres ${result.postgresCpuMsPerJob.toFixed(3)} worker ${result.workerCpuMsPerJob.toFixed(3)}`,
          );
          results.push(result);
        }
      }
      printTable(results);
    } finally {
      await pool.end();
    }
  } finally {
    await database.stop();
  }
}

await main();
