// npm run bench:queue — this queue vs pg-boss and graphile-worker, side by side in one run on one Postgres server.
// Measures (1) enqueue rate, single and bulk, (2) throughput of no-op jobs at equal total concurrency, (3) pickup
// latency from enqueue to handler start on an idle worker (p50/p99). Prints the settings and a comparison table.
// Then the black box (bench/queue/black-box.ts): the built `bulk-import worker` process against graphile-worker in its
// own process, paired rounds, and the scale-out of 1, 2 and 4 worker processes.
//
//   BENCH_JOBS=50000 BENCH_LATENCY_SAMPLES=300 BENCH_CONCURRENCY=16 npm run bench:queue
//   BENCH_IN_PROCESS=0 BENCH_BLACK_BOX_ROUNDS=3 BENCH_SCALE_OUT=1,2,4 npm run bench:queue   (the black box only)
//   BENCH_BLACK_BOX=0 npm run bench:queue                                                    (in-process only)
//   BENCH_WORKER_SETTINGS='JOB_STATE_NOTIFICATIONS=false' …   (the black box with a setting changed: what it costs)
import { mkdtemp, rm, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startEmbeddedPostgres } from '../worker/dev/embedded-postgres.js';
import { migrate } from '../worker/db/migrate.js';
import { runBlackBox } from './queue/black-box.js';
import { runBulkImportQueue } from './queue/bulk-import-queue.js';
import { runGraphileWorker } from './queue/graphile-worker.js';
import { runPgBoss } from './queue/pg-boss.js';
import { type QueueBenchResult, type BenchSettings, printResults } from './queue/report.js';
import { STATEMENTS_SETTINGS } from './support/statements.js';

const settings: BenchSettings = {
  jobs: Number(process.env.BENCH_JOBS ?? 50_000),
  singleEnqueues: Number(process.env.BENCH_SINGLE_ENQUEUES ?? 2_000),
  latencySamples: Number(process.env.BENCH_LATENCY_SAMPLES ?? 300),
  concurrency: Number(process.env.BENCH_CONCURRENCY ?? 16),
  rounds: Number(process.env.BENCH_ROUNDS ?? 2),
};
const inProcess = process.env.BENCH_IN_PROCESS !== '0';
const blackBox = process.env.BENCH_BLACK_BOX !== '0';
const blackBoxSettings = {
  jobs: settings.jobs,
  concurrency: settings.concurrency,
  rounds: Number(process.env.BENCH_BLACK_BOX_ROUNDS ?? 3),
  scaleOut: (process.env.BENCH_SCALE_OUT ?? '1,2,4').split(',').filter(Boolean).map(Number),
};

async function main(): Promise<void> {
  const stateDir = await mkdtemp(join(tmpdir(), 'bench-queue-'));
  await chmod(stateDir, 0o755);
  // BENCH_STATEMENTS=1: the black box prints our worker's statements by database time (pg_stat_statements).
  const statements = process.env.BENCH_STATEMENTS === '1';
  const postgres = await startEmbeddedPostgres({
    baseDir: join(stateDir, 'pg'),
    persistent: false,
    fast: true,
    ...(statements ? { settings: STATEMENTS_SETTINGS } : {}),
  });
  try {
    const admin = new pg.Client({ connectionString: postgres.adminUrl });
    await admin.connect();
    for (const name of ['bench_ours', 'bench_pgboss', 'bench_graphile']) await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    await migrate(postgres.databaseUrl('bench_ours'));
    console.log(`Postgres ${await serverVersion(postgres.adminUrl)} (embedded, fsync off), Node ${process.version}`);
    console.log(`settings: ${JSON.stringify(settings)}\n`);

    const results: QueueBenchResult[] = [];
    for (let round = 1; inProcess && round <= settings.rounds; round += 1) {
      console.log(`round ${round}/${settings.rounds}`);
      // Alternate the order so no system always runs on a warmer (or more bloated) server.
      const runners = [
        () => runBulkImportQueue(postgres.databaseUrl('bench_ours'), settings),
        () => runBulkImportQueue(postgres.databaseUrl('bench_ours'), settings, false),
        () => runGraphileWorker(postgres.databaseUrl('bench_graphile'), settings),
        () => runPgBoss(postgres.databaseUrl('bench_pgboss'), settings),
      ];
      if (round % 2 === 0) runners.reverse();
      for (const run of runners) {
        const result = await run();
        console.log(`  ${result.system.padEnd(18)} ${Math.round(result.throughput)} jobs/s, p50 ${result.latencyP50.toFixed(2)} ms`);
        results.push(result);
        await vacuum(postgres.adminUrl);
        await sleep(500);
      }
    }
    if (inProcess) printResults(results, settings);
    if (blackBox) await runBlackBox({ ours: postgres.databaseUrl('bench_ours'), graphile: postgres.databaseUrl('bench_graphile') }, blackBoxSettings);
  } finally {
    await postgres.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

async function serverVersion(url: string): Promise<string> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const { rows } = await client.query<{ server_version: string }>('SHOW server_version');
  await client.end();
  return rows[0]!.server_version;
}

async function vacuum(adminUrl: string): Promise<void> {
  for (const name of ['bench_ours', 'bench_pgboss', 'bench_graphile']) {
    const url = new URL(adminUrl);
    url.pathname = `/${name}`;
    const client = new pg.Client({ connectionString: url.toString() });
    await client.connect();
    await client.query('VACUUM ANALYZE');
    await client.end();
  }
}

export { performance };
await main();
// Every system has stopped and Postgres is down, yet four timers were seen still pending after the table printed
// (not yet traced to one of the four systems); end the process once the table is out rather than hang.
process.exit(0);
