// node --import tsx bench/ops.ts — what the operational pieces cost, each next to the alternative it was chosen over:
//   1. health check start-up: the compiled script (config + fs only) vs the full CLI, next to bare `node`;
//   2. per-job metrics: aggregated statistic sets (what the worker does) vs one data point per job, through the real
//      CloudWatch SDK against a local recording endpoint: calls, bytes and CPU for N finished jobs;
//   3. queue gauges: one gauge query on a jobs table with a large history; one elected publisher vs every task;
//   4. documents audit: comparing N listed keys with N documents rows in Postgres (temp table + anti-joins).
//
//   node --import tsx bench/ops.ts
//   node --import tsx bench/ops.ts --jobs 100000 --history 500000 --audit-keys 1000000 --tasks 8
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { addListedObjects, createListingTable, orphanObjectsPage, rowsWithoutObject } from '../worker/audit/audit-store.js';
import { loadConfig } from '../worker/config.js';
import { migrate } from '../worker/db/migrate.js';
import { startEmbeddedPostgres } from '../worker/dev/embedded-postgres.js';
import { createLogger } from '../worker/logger.js';
import { createCloudWatchClient, jobMetricPoints, MetricsPublisher } from '../worker/ops/metrics.js';
import { gaugePoints } from '../worker/ops/queue-gauges.js';
import { readQueueGauges } from '../worker/queue/gauges.js';
import type { JobFinishedEvent } from '../worker/runner/worker.js';
import { BACKFILL_KIND, CSV_FINALIZE_KIND, CSV_IMPORT_KIND, MASS_IMPORT_KIND, NOOP_KIND } from '../worker/handlers/kinds.js';
import { bytesMetric, countMetric } from '../worker/handlers/metrics.js';
import { cloudWatchSuccess, putMetricDataCalls, startRecordingEndpoint } from '../test/support/recording-endpoint.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const { values: args } = parseArgs({
  options: {
    jobs: { type: 'string', default: '20000' },
    history: { type: 'string', default: '200000' },
    'audit-keys': { type: 'string', default: '200000' },
    tasks: { type: 'string', default: '4' },
    runs: { type: 'string', default: '15' },
  },
});
const settings = {
  jobs: Number(args.jobs),
  history: Number(args.history),
  auditKeys: Number(args['audit-keys']),
  tasks: Number(args.tasks),
  runs: Number(args.runs),
};
const silent = createLogger({ level: 'silent', format: 'json' });

interface Row {
  section: string;
  variant: string;
  figures: string;
}
const rows: Row[] = [];
const ALL_KINDS = [MASS_IMPORT_KIND, CSV_IMPORT_KIND, CSV_FINALIZE_KIND, BACKFILL_KIND, NOOP_KIND];
/** The kinds the gauge benchmark seeds rows of (one in four each). */
const SEEDED_KINDS = [MASS_IMPORT_KIND, CSV_IMPORT_KIND, BACKFILL_KIND, NOOP_KIND];

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

function timeProcess(argv: string[], env: NodeJS.ProcessEnv): number[] {
  const times: number[] = [];
  for (let run = 0; run < settings.runs; run += 1) {
    const started = performance.now();
    const result = spawnSync(process.execPath, argv, { cwd: ROOT, env, stdio: 'ignore' });
    times.push(performance.now() - started);
    if (result.error) throw result.error;
  }
  return times;
}

async function benchHealthcheck(buildDir: string, databaseUrl: string): Promise<void> {
  console.log('building dist (tsc -p tsconfig.build.json) for the compiled health check …');
  const build = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json', '--outDir', buildDir], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  if (build.status !== 0) throw new Error('build failed');
  const heartbeat = join(buildDir, 'bench.heartbeat');
  spawnSync('touch', [heartbeat]);
  const env = { PATH: process.env.PATH, HEALTH_HEARTBEAT_FILE: heartbeat, DATABASE_URL: databaseUrl, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  const variants: Array<[string, string[]]> = [
    ['node -e 0 (floor)', ['-e', '0']],
    ['healthcheck.js', [join(buildDir, 'scripts/healthcheck.js')]],
    ['healthcheck.js --check-database', [join(buildDir, 'scripts/healthcheck.js'), '--check-database']],
    ['full CLI: main.js --help', [join(buildDir, 'worker/cli/main.js'), '--help']],
  ];
  for (const [name, argv] of variants) {
    const times = timeProcess(argv, env);
    rows.push({ section: 'health check start-up', variant: name, figures: `p50 ${percentile(times, 50).toFixed(0)} ms, p95 ${percentile(times, 95).toFixed(0)} ms (${settings.runs} runs)` });
  }
}

function syntheticEvents(count: number): JobFinishedEvent[] {
  const kinds = ALL_KINDS;
  const states: JobFinishedEvent['state'][] = ['succeeded', 'succeeded', 'succeeded', 'partial', 'queued', 'failed'];
  return Array.from({ length: count }, (_, index) => ({
    job: { id: index, kind: kinds[index % kinds.length]!, tenantId: 't', payload: {}, attempt: 1, maxAttempts: 5, progress: null, leaseOwner: 'w', createdAt: new Date() },
    state: states[index % states.length]!,
    durationMs: 5 + (index % 997),
    metrics: { Files: countMetric(1 + (index % 13)), BytesImported: bytesMetric(1000 * (index % 101)), FailedItems: countMetric(index % 17 === 0 ? 1 : 0) },
  }));
}

async function benchMetrics(): Promise<void> {
  const endpoint = await startRecordingEndpoint(cloudWatchSuccess);
  const config = loadConfig({ METRICS_NAMESPACE: 'Bench/Ops', CLOUDWATCH_ENDPOINT: endpoint.url });
  const credentials = { accessKeyId: 'bench', secretAccessKey: 'bench' };
  const events = syntheticEvents(settings.jobs);
  const flushes = 6; // the jobs finish over a minute: six 10-second flushes
  try {
    for (const variant of ['aggregated statistic sets (ours)', 'one data point per job'] as const) {
      endpoint.requests.length = 0;
      const client = createCloudWatchClient(config.metrics, 'us-east-1', credentials)!;
      const publisher = new MetricsPublisher(client, 'Bench/Ops', silent);
      const cpu = process.cpuUsage();
      const started = performance.now();
      if (variant === 'one data point per job') {
        await publisher.publish(events.flatMap(jobMetricPoints));
      } else {
        const perFlush = Math.ceil(events.length / flushes);
        for (let start = 0; start < events.length; start += perFlush) {
          for (const event of events.slice(start, start + perFlush)) for (const point of jobMetricPoints(event)) publisher.record(point);
          await publisher.flush();
        }
      }
      await publisher.stop();
      const elapsed = performance.now() - started;
      const used = process.cpuUsage(cpu);
      client.destroy();
      const calls = putMetricDataCalls(endpoint.requests);
      const points = calls.reduce((sum, call) => sum + call.MetricData.length, 0);
      const bytes = endpoint.requests.reduce((sum, request) => sum + Number(request.headers['content-length'] ?? request.body.length), 0);
      rows.push({
        section: `job metrics, ${settings.jobs.toLocaleString('en')} jobs in a minute`,
        variant,
        figures: `${calls.length} PutMetricData calls, ${points.toLocaleString('en')} data points, ${(bytes / 1024).toFixed(0)} KiB sent, ` +
          `${((used.user + used.system) / 1000).toFixed(0)} ms CPU, ${elapsed.toFixed(0)} ms`,
      });
    }
  } finally {
    await endpoint.close();
  }
}

async function benchGauges(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(
      `INSERT INTO jobs (kind, state, attempts, started_at, finished_at)
       SELECT ($2::text[])[1 + g % 4], 'succeeded', 1, now() - interval '2 days', now() - interval '1 day'
       FROM generate_series(1, $1::int) g`,
      [settings.history, SEEDED_KINDS],
    );
    await client.query(
      `INSERT INTO jobs (kind, state, run_at, attempts, lease_owner, lease_expires_at, finished_at)
       SELECT ($1::text[])[1 + g % 4],
              (ARRAY['queued','running','dead'])[1 + g % 3],
              now() - (g % 600) * interval '1 second',
              CASE WHEN g % 3 = 0 THEN 0 ELSE 1 END,
              CASE WHEN g % 3 = 1 THEN 'bench' END,
              CASE WHEN g % 3 = 1 THEN now() + interval '1 hour' END,
              CASE WHEN g % 3 = 2 THEN now() END
       FROM generate_series(0, 9999) g`,
      [SEEDED_KINDS],
    );
    await client.query('VACUUM ANALYZE jobs');
    const times: number[] = [];
    let points = 0;
    for (let run = 0; run < settings.runs; run += 1) {
      const started = performance.now();
      const gauges = await readQueueGauges(client, ALL_KINDS);
      times.push(performance.now() - started);
      points = gaugePoints(gauges).length;
    }
    const section = `queue gauges, ${(settings.history + 10_000).toLocaleString('en')} job rows`;
    const query = `query p50 ${percentile(times, 50).toFixed(1)} ms, p95 ${percentile(times, 95).toFixed(1)} ms`;
    rows.push({ section, variant: 'one elected publisher (ours)', figures: `${query}; 1 query + 1 call (${points} points) per minute` });
    rows.push({
      section,
      variant: `every task publishes (${settings.tasks} tasks)`,
      figures: `${settings.tasks} queries + ${settings.tasks} calls (${settings.tasks * points} points) per minute, alarms read ${settings.tasks} overlapping views`,
    });
  } finally {
    await client.end();
  }
}

async function benchAudit(url: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const n = settings.auditKeys;
  try {
    await client.query(
      `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
       SELECT 'acme', 'f' || g, md5(g::text) || md5((-g)::text), 1, 'application/pdf', 'bench', 'imports/acme/f' || g
       FROM generate_series(1, $1::int) g`,
      [n],
    );
    await client.query('ANALYZE documents');
    await createListingTable(client);
    // The listing: every document's object except 1 in 1,000, plus 1 in 1,000 orphans — as pages of 1,000 keys.
    const started = performance.now();
    for (let start = 1; start <= n; start += 1000) {
      const page = [];
      for (let g = start; g < Math.min(start + 1000, n + 1); g += 1) {
        if (g % 1000 !== 7) page.push({ key: `imports/acme/f${g}`, sizeBytes: 1, lastModified: new Date() });
        if (g % 1000 === 3) page.push({ key: `imports/acme/orphan-${g}`, sizeBytes: 1, lastModified: new Date() });
      }
      await addListedObjects(client, page);
    }
    await client.query('ANALYZE audit_listed_objects');
    const loaded = performance.now();
    let orphans = 0;
    for (let after: string | null = null; ; ) {
      const page = await orphanObjectsPage(client, 'bench', after, 1000);
      if (page.length === 0) break;
      orphans += page.length;
      after = page[page.length - 1]!.key;
    }
    const missing = await rowsWithoutObject(client, 'bench', 'imports/', new Date(Date.now() + 60_000), 50);
    const compared = performance.now();
    rows.push({
      section: `documents audit, ${n.toLocaleString('en')} keys`,
      variant: 'listing into a temp table + anti-joins (ours)',
      figures: `load ${((loaded - started) / 1000).toFixed(1)} s (${Math.round(n / ((loaded - started) / 1000)).toLocaleString('en')} keys/s), ` +
        `compare ${((compared - loaded) / 1000).toFixed(1)} s; found ${orphans} orphans, ${missing.total} rows without object ` +
        `(planted ${Math.floor(n / 1000)} each); client memory independent of N`,
    });
  } finally {
    await client.end();
  }
}

function printTable(): void {
  const widths = [Math.max(...rows.map((row) => row.section.length)), Math.max(...rows.map((row) => row.variant.length))];
  console.log(`\n${'what'.padEnd(widths[0]!)}  ${'variant'.padEnd(widths[1]!)}  figures`);
  console.log(`${'-'.repeat(widths[0]!)}  ${'-'.repeat(widths[1]!)}  -------`);
  for (const row of rows) console.log(`${row.section.padEnd(widths[0]!)}  ${row.variant.padEnd(widths[1]!)}  ${row.figures}`);
}

async function main(): Promise<void> {
  // The pinned SDK warns on every client that its future releases need Node 22 (bin/bulk-import.js silences it too).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const stateDir = await mkdtemp(join(tmpdir(), 'bench-ops-'));
  await chmod(stateDir, 0o755);
  const buildDir = join(ROOT, '.bench', 'ops-dist');
  const postgres = await startEmbeddedPostgres({ baseDir: join(stateDir, 'pg'), persistent: false, fast: true });
  try {
    const admin = new pg.Client({ connectionString: postgres.adminUrl });
    await admin.connect();
    await admin.query('CREATE DATABASE bench_ops');
    await admin.end();
    const url = postgres.databaseUrl('bench_ops');
    await migrate(url);
    console.log(`Node ${process.version}; settings ${JSON.stringify(settings)}`);
    await benchHealthcheck(buildDir, url);
    await benchMetrics();
    await benchGauges(url);
    await benchAudit(url);
    printTable();
  } finally {
    await postgres.stop();
    await rm(stateDir, { recursive: true, force: true });
    await rm(buildDir, { recursive: true, force: true });
  }
}

await main();
