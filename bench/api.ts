// npm run bench:api — latency and throughput of the HTTP API (`bulk-import serve`, a real process) over a database
// with a large history: N runs (default 1,000,000; kinds, states and 100 tenants mixed, 30 days of creation times)
// and one CSV run with M row errors (default 1,000,000). A load generator keeps C connections busy (default 32) for
// each scenario; it is wrk (--generator wrk, the default: a C program, light on a machine the server and Postgres
// share) or node:http in this process (--generator node):
//   list   GET /v1/jobs?state=failed            (operator key: newest failed runs, first page of 50)
//   tenant GET /v1/jobs?state=succeeded          (tenant key: its tenant's runs only)
//   tenant-all GET /v1/jobs                        (tenant key: its runs of every state, the queued backlog first)
//   page   GET /v1/jobs?state=succeeded&cursor=… (operator, a page deep in the history)
//   cold   GET /v1/jobs?state=succeeded&cursor=<random> (operator, a page nobody asked for before: list, tenant and
//          page are polled listings, whose unchanged runs the server has rendered already; see summary-renderings.ts)
//   detail GET /v1/jobs/{random id}
//   errors GET /v1/jobs/{csv}/errors?limit=100&cursor=… (a page of row errors at a random position)
// For each it prints requests/s, p50/p99 latency and the CPU time per request of the server, Postgres and the load
// generator (from /proc: the server's is the figure that carries over to a machine where it has cores of its own):
// each figure's median over --rounds rounds (default 3, the scenarios in turn, after --warmup seconds of each), since
// one run's figures moved by 20 % here. Then a sweep of list and detail latency at 1 to C connections (--sweep), since
// with closed-loop load latency at C connections is C / throughput. Last, the CSV export of all M errors
// (GET …/errors?format=csv): MB/s, and the server's RSS before, at its peak and after, sampled from /proc every 50 ms
// — the export must not grow with M. --explain prints the statements' plans instead.
//
//   npm run bench:api
//   npm run bench:api -- --runs 200000 --errors 200000 --seconds 5 --connections 32 --export-connections 4
//   npm run bench:api -- --runs 200000 --errors 20000 --backlog 200000 --only list,tenant,page   (a campaign's backlog queued)
import { execFileSync, spawn } from 'node:child_process';
import { Agent, request } from 'node:http';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { startBenchDatabase } from './support/bench-database.js';
import { median } from './support/median.js';
import { postgresCpuMeter, processCpuMs } from './support/process-cpu.js';
import { ensureWrk, runWrk, type WrkResult } from './support/wrk.js';
import { ADMIN_API_NODE_FLAGS } from '../infra/node-flags.js';
import { createApiKey } from '../worker/auth/api-keys.js';
import { AHEAD_STATEMENT, THROUGHPUT_STATEMENT } from '../worker/queue/estimate.js';
import { jobsPageSignatureQuery, KnownVersions, versionedJobsPageQuery } from '../worker/queue/operator.js';
import { ROW_ERRORS_PAGE_BYTES, ROW_ERRORS_PAGE_STATEMENT } from '../worker/imports/csv/row-errors.js';
import { BACKFILL_KIND, CSV_IMPORT_KIND, MASS_IMPORT_KIND, NOOP_KIND } from '../worker/handlers/kinds.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '1000000' },
    errors: { type: 'string', default: '1000000' },
    seconds: { type: 'string', default: '10' },
    connections: { type: 'string', default: '32' },
    'export-connections': { type: 'string', default: '1,32' },
    /** Connection counts of the latency sweep (list and detail at each); empty to skip it. */
    sweep: { type: 'string', default: '1,4,8,16,32' },
    /**
     * DATABASE_POOL_SIZE of the server process. Postgres shares this machine's two cores with the server and the load
     * generator: a pool of 16 kept up to 16 backends runnable at once, and the server's one thread got a seventeenth
     * of the CPU until they were done (200,000 runs: detail p99 61–72 ms at 16, 24 ms at 4, ~4,700 req/s both).
     */
    'pool-size': { type: 'string', default: '4' },
    /** Write a CPU profile of the server to .bench/api-profile/ (for looking into where the time goes). */
    profile: { type: 'boolean', default: false },
    /** Print the plans (EXPLAIN ANALYZE) of the listing, detail and error-page statements, then stop. */
    explain: { type: 'boolean', default: false },
    /** The load generator: wrk (a C program, installed with apt-get when missing) or node (node:http in this process). */
    generator: { type: 'string', default: 'wrk' },
    /** Only these scenarios (list, tenant, page, detail, errors; comma-separated); all when empty. */
    only: { type: 'string', default: '' },
    /**
     * Queued runs added after the seed, the newest of all, as a campaign's backlog waits in jobs_live: the listings of
     * finished runs must not read them (migration 20261206090000; 0 leaves the seed's 1 % of queued runs only).
     */
    backlog: { type: 'string', default: '0' },
    /** Rounds of the scenarios (each scenario once per round, in turn); the table shows each figure's median. */
    rounds: { type: 'string', default: '3' },
    /** Seconds of unmeasured load per scenario before the first round. */
    warmup: { type: 'string', default: '5' },
  },
});
const settings = {
  runs: Number(args.runs),
  errors: Number(args.errors),
  seconds: Number(args.seconds),
  connections: Number(args.connections),
  exportConnections: args['export-connections'].split(',').filter(Boolean).map(Number),
  sweep: args.sweep.split(',').filter(Boolean).map(Number),
  only: args.only.split(',').filter(Boolean),
  rounds: Number(args.rounds),
  backlog: Number(args.backlog),
  warmup: Number(args.warmup),
};
let generator = args.generator;
// Checked before the seed, which takes half a minute.
if (generator !== 'wrk' && generator !== 'node') throw new Error(`--generator is wrk or node, not ${generator}`);
if (!(Number.isInteger(settings.rounds) && settings.rounds >= 1)) throw new Error(`--rounds is a whole number from 1, not ${args.rounds}`);
if (!(Number.isInteger(settings.backlog) && settings.backlog >= 0)) throw new Error(`--backlog is a whole number from 0, not ${args.backlog}`);

interface Result {
  scenario: string;
  connections: number;
  requests: number;
  /** Milliseconds of the server process's CPU (user + system) per request. */
  serverCpuMs: number;
  /** Milliseconds of Postgres's CPU per request. */
  postgresCpuMs: number;
  /** Milliseconds of the load generator's CPU per request. */
  loadCpuMs: number;
  perSecond: number;
  p50: number;
  p99: number;
  /** Lowest and highest p99 over the rounds, when there were several. */
  p99Range?: [number, number] | undefined;
  errors: number;
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function seed(db: pg.Client): Promise<{ csvJob: number; maxId: number }> {
  const started = performance.now();
  await db.query(`SET bulk_import.state_notifications = off`);
  await db.query(`SET synchronous_commit = off`);
  // Terminal runs mostly, like a table the retention service keeps at 30 days; ids grow with creation time. The
  // finished ones are where the archiver would have put them (jobs_archive), the queued ones in jobs_live.
  await db.query(
    `INSERT INTO jobs (kind, tenant_id, payload, state, attempts, max_attempts, progress, result, last_error,
       created_at, started_at, finished_at, updated_at, run_at, archived)
     SELECT kind, 't' || (g % 100), jsonb_build_object('seq', g), state, 1, 5,
       jsonb_build_object('done', 100, 'total', 100, 'phase', 'done'),
       jsonb_build_object('rows', 100),
       CASE WHEN state IN ('failed', 'dead') THEN jsonb_build_object('code', 'X', 'message', 'failed', 'class', 'permanent', 'attempt', 1, 'at', now()::text) END,
       created, created + interval '2 seconds', CASE WHEN state <> 'queued' THEN created + interval '5 seconds' END,
       created + interval '5 seconds', created, state <> 'queued'
     FROM (
       SELECT g, ($2::text[])[1 + g % 4] AS kind,
         CASE WHEN g % 100 < 84 THEN 'succeeded' WHEN g % 100 < 89 THEN 'partial' WHEN g % 100 < 94 THEN 'failed'
              WHEN g % 100 < 96 THEN 'dead' WHEN g % 100 < 99 THEN 'canceled' ELSE 'queued' END AS state,
         now() - interval '30 days' + (g * interval '30 days' / $1) AS created
       FROM generate_series(1, $1) g
     ) s`,
    [settings.runs, [NOOP_KIND, CSV_IMPORT_KIND, MASS_IMPORT_KIND, BACKFILL_KIND]],
  );
  const { rows } = await db.query<{ id: number }>(
    `INSERT INTO jobs (kind, tenant_id, payload, state, finished_at) VALUES ($1, 't1', '{}', 'review_ready', NULL) RETURNING id`,
    [CSV_IMPORT_KIND],
  );
  const csvJob = Number(rows[0]!.id);
  const header = ['sku', 'name', 'description', 'price', 'quantity', 'barcode', 'status', 'category', 'supplier', 'location'];
  await db.query(
    `INSERT INTO csv_import_runs (job_id, profile, tenant_id, bucket, object_key, delimiter, header, columns, rows_read, rows_invalid, validation_ended_at)
     VALUES ($1, 'products', 't1', 'bench', 'imports/t1/bench.csv', ',', $2, $2, $3, $3, now())`,
    [csvJob, header, settings.errors],
  );
  await db.query(
    `INSERT INTO csv_import_row_errors (job_id, row_number, phase, fields, errors)
     SELECT $1, g + 1, 'validate',
       ARRAY['SKU-' || lpad(g::text, 7, '0'), 'Product ' || g, CASE WHEN g % 50 = 0 THEN '=HYPERLINK("x")' ELSE 'Item, "quoted" ' || g END,
             '-1.00', '7', '', 'active', 'Category ' || g % 37, 'Supplier ' || g % 101, 'Location ' || g % 13],
       '[{"column": "price", "rule": "range", "message": "price must be at least 0, got \\"-1.00\\""}]'::jsonb
     FROM generate_series(1, $2) g`,
    [csvJob, settings.errors],
  );
  // The scenarios' ids (the detail's random run, the deep page's cursor) are drawn from the runs seeded above, so that
  // a backlog changes only what the listings must skip.
  const seededMax = Number((await db.query<{ max: number }>('SELECT max(id)::bigint AS max FROM jobs')).rows[0]!.max);
  if (settings.backlog > 0) {
    await db.query(
      `INSERT INTO jobs (kind, tenant_id, payload, state, created_at, run_at)
       SELECT $2::text, 't' || (g % 100), jsonb_build_object('seq', g), 'queued', now(), now() FROM generate_series(1, $1) g`,
      [settings.backlog, MASS_IMPORT_KIND],
    );
  }
  // The whole database, so that no autovacuum of what the seed wrote runs during a scenario.
  await db.query('VACUUM ANALYZE');
  // Every table and index of the database read into the shared buffers, as a serving database's buffer cache holds
  // its working set: VACUUM reads through a small ring of buffers, so without this a random run-record read found its
  // page in the kernel's cache, and a read() there costs more than the lookup.
  await db.query('CREATE EXTENSION IF NOT EXISTS pg_prewarm');
  const prewarmed = await db.query<{ blocks: string }>(
    `SELECT sum(pg_prewarm(c.oid))::bigint AS blocks FROM pg_class c
     WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i', 't')`,
  );
  console.log(`prewarmed ${(Number(prewarmed.rows[0]!.blocks) * 8 / 1024).toFixed(0)} MB into the shared buffers`);
  // And written out, to the disk too (fsync is off: the checkpoint leaves its pages in the page cache), so that
  // neither the checkpointer nor the kernel's writeback works while a scenario is measured.
  await db.query('CHECKPOINT');
  const syncStarted = performance.now();
  execFileSync('sync');
  console.log(`checkpoint written and synced in ${((performance.now() - syncStarted) / 1000).toFixed(1)} s`);
  console.log(`seeded ${settings.runs.toLocaleString('en-US')} runs${settings.backlog > 0 ? ` and a backlog of ${settings.backlog.toLocaleString('en-US')} queued` : ''} and ${settings.errors.toLocaleString('en-US')} row errors in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return { csvJob, maxId: seededMax };
}

async function startServe(databaseUrl: string): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const profile = args.profile ? ['--cpu-prof', `--cpu-prof-dir=${join(ROOT, '.bench', 'api-profile')}`] : [];
  const child = spawn(process.execPath, [...profile, ...ADMIN_API_NODE_FLAGS, 'bin/bulk-import.js', 'serve', '--port', '0', '--host', '127.0.0.1', '--rate-limit', '1000000'], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATABASE_URL: databaseUrl, DATABASE_POOL_SIZE: args['pool-size'], LOG_LEVEL: 'warn', LOG_FORMAT: 'json', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // LOG_LEVEL=warn hides the "listening" line: find the port from /proc instead of the log.
  createInterface({ input: child.stdout! }).on('line', (line) => process.stderr.write(`serve: ${line}\n`));
  const url = await findListeningUrl(child.pid!);
  return {
    url,
    pid: child.pid!,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** The loopback port a process listens on, once it listens (read from /proc/net/tcp and its socket inodes). */
async function findListeningUrl(pid: number): Promise<string> {
  const { readdir, readlink } = await import('node:fs/promises');
  for (let tries = 0; tries < 600; tries += 1) {
    const inodes = new Set<string>();
    for (const fd of await readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      const match = /^socket:\[(\d+)\]$/.exec(link);
      if (match) inodes.add(match[1]!);
    }
    const table = await readFile('/proc/net/tcp', 'utf8');
    for (const line of table.split('\n').slice(1)) {
      const parts = line.trim().split(/\s+/);
      if (parts[3] === '0A' && inodes.has(parts[9]!) && parts[1]!.startsWith('0100007F:')) {
        return `http://127.0.0.1:${parseInt(parts[1]!.split(':')[1]!, 16)}`;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error('serve did not start listening');
}

// node:http with a keep-alive agent: a lighter client than fetch, so the load generator, which shares the machine
// with the server and Postgres, takes less of the CPU being measured.
const agent = new Agent({ keepAlive: true, maxSockets: 64 });

function get(base: string, path: string, key: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { agent, headers: { authorization: `Bearer ${key}` } }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** What a load generator reports of one scenario (wrk's own report, or the same from the Node generator). */
type Drive = WrkResult;

/** The Node generator: node:http in this process, latencies kept and sorted here. */
async function driveWithNode(base: string, key: string, pathFor: () => string, connections: number, seconds: number): Promise<Drive> {
  const latencies: number[] = [];
  let failures = 0;
  const loadBefore = process.cpuUsage();
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < deadline) {
        const t0 = performance.now();
        const status = await get(base, pathFor(), key);
        latencies.push(performance.now() - t0);
        if (status !== 200) failures += 1;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(loadBefore);
  latencies.sort((a, b) => a - b);
  return { requests: latencies.length, seconds: elapsed, p50: percentile(latencies, 50), p99: percentile(latencies, 99), failures, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function driveWithWrk(base: string, key: string, pathFor: () => string, connections: number, seconds: number): Promise<Drive> {
  // Random ids and cursors are drawn here, ahead of the run; wrk walks round the list. Enough that a run of about
  // 6,000 requests a second repeats none (repeats would find the buffers warmer than random reads do).
  const paths = Array.from({ length: Math.max(20_000, seconds * 6_000) }, pathFor);
  return runWrk({ base, key, paths, connections, seconds });
}

async function load(name: string, key: string, pathFor: () => string, base: string, serverPid: number, connections = settings.connections, seconds = settings.seconds): Promise<Result> {
  // Warm-up: a few requests per connection, not counted.
  await Promise.all(Array.from({ length: connections }, () => get(base, pathFor(), key)));
  const cpuBefore = processCpuMs(serverPid);
  const postgres = postgresCpuMeter();
  const sampler = setInterval(() => postgres.sample(), 250);
  const drive = await (generator === 'wrk' ? driveWithWrk : driveWithNode)(base, key, pathFor, connections, seconds);
  const serverCpuMs = processCpuMs(serverPid) - cpuBefore;
  clearInterval(sampler);
  const postgresMs = postgres.elapsedMs();
  const n = drive.requests;
  return {
    scenario: name,
    connections,
    requests: n,
    serverCpuMs: serverCpuMs / n,
    postgresCpuMs: postgresMs / n,
    loadCpuMs: drive.cpuMs / n,
    perSecond: n / drive.seconds,
    p50: drive.p50,
    p99: drive.p99,
    errors: drive.failures,
  };
}

async function rssKb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)![1]);
}

async function exportCsv(base: string, key: string, csvJob: number, pid: number, connections: number) {
  const before = await rssKb(pid);
  let peak = before;
  const sampler = setInterval(() => void rssKb(pid).then((kb) => (peak = Math.max(peak, kb))), 50);
  const started = performance.now();
  const results = await Promise.all(
    Array.from({ length: connections }, async () => {
      const response = await fetch(`${base}/v1/jobs/${csvJob}/errors?format=csv`, { headers: { authorization: `Bearer ${key}` } });
      let bytes = 0;
      let lines = 0;
      for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
        bytes += chunk.byteLength;
        for (let i = 0; i < chunk.length; i += 1) if (chunk[i] === 10) lines += 1;
      }
      return { bytes, lines, status: response.status };
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  clearInterval(sampler);
  const after = await rssKb(pid);
  const bytes = results.reduce((sum, r) => sum + r.bytes, 0);
  return { connections, seconds, bytes, lines: results[0]!.lines, status: results.map((r) => r.status), mbPerSecond: bytes / 1e6 / seconds, before, peak, after };
}

async function explain(db: pg.Client, csvJob: number, maxId: number): Promise<void> {
  // The newest queued run: the most runs ahead of it.
  const queued = await db.query<{ id: number; kind: string }>(`SELECT id, kind FROM jobs WHERE state = 'queued' ORDER BY id DESC LIMIT 1`);
  const { id: queuedId, kind: queuedKind } = queued.rows[0]!;
  // The listings (as a page nobody asked for before: every run's columns) and the errors page as the server sends
  // them, with the generic plan their named statements settle on
  // after five executions (test/queue-listing.test.ts and test/csv-row-error-pages.test.ts check they do); the other
  // statements are unnamed, planned for their values each time.
  const prepared: Array<[string, { text: string; values: unknown[] }]> = [
    ['list failed', versionedJobsPageQuery({ states: ['failed'], limit: 50 }, KnownVersions.NONE)],
    ['list tenant', versionedJobsPageQuery({ states: ['succeeded'], tenantId: 't7', limit: 50 }, KnownVersions.NONE)],
    ['list tenant, every state', versionedJobsPageQuery({ tenantId: 't7', limit: 50 }, KnownVersions.NONE)],
    ['list deep', versionedJobsPageQuery({ states: ['succeeded'], beforeId: Math.floor(maxId / 3), limit: 50 }, KnownVersions.NONE)],
    // What a polled listing asks first (the server holds its answer): the page's signature.
    ['list failed, signature', jobsPageSignatureQuery({ states: ['failed'], limit: 50 })],
    ['errors page', { text: ROW_ERRORS_PAGE_STATEMENT, values: [csvJob, 500_000, 100, 0, ROW_ERRORS_PAGE_BYTES] }],
  ];
  await db.query('SET plan_cache_mode = force_generic_plan');
  for (const [name, query] of prepared) {
    await db.query(`PREPARE page AS ${query.text}`);
    const values = query.values.map((value) => (typeof value === 'string' ? `'${value}'` : String(value)));
    const { rows } = await db.query(`EXPLAIN (ANALYZE, BUFFERS) EXECUTE page${values.length > 0 ? `(${values.join(', ')})` : ''}`);
    await db.query('DEALLOCATE page');
    console.log(`-- ${name} (generic plan)\n${rows.map((row) => row['QUERY PLAN']).join('\n')}`);
  }
  await db.query('RESET plan_cache_mode');
  const statements: Array<[string, string, unknown[]]> = [
    ['detail', `SELECT * FROM jobs WHERE id = $1`, [Math.floor(maxId / 2)]],
    // A queued run's detail also estimates its start: the kind's throughput and the runs ahead of it.
    ['detail: throughput', THROUGHPUT_STATEMENT, [NOOP_KIND]],
    ['detail: runs ahead', AHEAD_STATEMENT, [queuedKind, queuedId]],
  ];
  for (const [name, sql, values] of statements) {
    const { rows } = await db.query(`EXPLAIN (ANALYZE, BUFFERS) ${sql}`, values);
    console.log(`-- ${name}\n${rows.map((row) => row['QUERY PLAN']).join('\n')}`);
  }
  const size = await db.query(`SELECT pg_size_pretty(pg_total_relation_size('jobs')) AS jobs, pg_size_pretty(pg_total_relation_size('csv_import_row_errors')) AS errors`);
  console.log(size.rows[0]);
}

/** Each figure's median over the rounds (requests summed), with the range of the p99s. */
function medianRound(results: Result[]): Result {
  const of = (pick: (r: Result) => number) => median(results.map(pick));
  const p99s = results.map((r) => r.p99);
  return {
    ...results[0]!,
    requests: results.reduce((sum, r) => sum + r.requests, 0),
    serverCpuMs: of((r) => r.serverCpuMs),
    postgresCpuMs: of((r) => r.postgresCpuMs),
    loadCpuMs: of((r) => r.loadCpuMs),
    perSecond: of((r) => r.perSecond),
    p50: of((r) => r.p50),
    p99: of((r) => r.p99),
    p99Range: results.length > 1 ? [Math.min(...p99s), Math.max(...p99s)] : undefined,
    errors: results.reduce((sum, r) => sum + r.errors, 0),
  };
}

function printTable(results: Result[]): void {
  // CPU ms per request of the server, Postgres and the load generator: their sum over the machine's cores bounds the
  // requests/s, and at C connections latency is C / requests/s.
  console.log('| request | connections | requests | req/s | p50 ms | p99 ms | p99 over the rounds | server CPU ms/request | Postgres CPU ms/request | load generator CPU ms/request | non-200 |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of results) {
    const range = r.p99Range ? `${r.p99Range[0].toFixed(1)}–${r.p99Range[1].toFixed(1)}` : '—';
    console.log(
      `| \`${r.scenario}\` | ${r.connections} | ${r.requests} | ${r.perSecond.toFixed(0)} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${range} | ` +
        `${r.serverCpuMs.toFixed(2)} | ${r.postgresCpuMs.toFixed(2)} | ${r.loadCpuMs.toFixed(2)} | ${r.errors} |`,
    );
  }
}

async function main(): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // Room for the 1M runs (375 MB) and 1M row errors (354 MB) with their indexes, as a production database's buffer
  // cache holds its working set: at 512 MB a detail lookup went outside the buffers often enough to double its cost.
  const database = await startBenchDatabase('bench_api', { sharedBuffers: '1GB' });
  const url = database.url;
  let serve: Awaited<ReturnType<typeof startServe>> | undefined;
  try {
    const db = new pg.Client({ connectionString: url });
    await db.connect();
    const { csvJob, maxId } = await seed(db);
    const operator = (await createApiKey(db, { name: 'bench-ops', role: 'operator' })).key;
    const tenant = (await createApiKey(db, { name: 'bench-t7', role: 'tenant', tenantId: 't7' })).key;
    const idCursor = (id: number) => Buffer.from(JSON.stringify({ id })).toString('base64url');
    const deep = idCursor(Math.floor(maxId / 3));
    if (args.explain) {
      await explain(db, csvJob, maxId);
      await db.end();
      return;
    }
    await db.end();
    if (generator === 'wrk' && !(await ensureWrk((line) => console.log(line)))) generator = 'node';
    serve = await startServe(url);
    console.log(`Node ${process.version}; load generator ${generator}; ${JSON.stringify(settings)}; serve pid ${serve.pid} at ${serve.url}`);
    const base = serve.url;
    const random = (n: number) => 1 + Math.floor(Math.random() * n);
    const scenarios: Array<[string, string, string, () => string]> = [
      ['list', 'GET /v1/jobs?state=failed (operator)', operator, () => '/v1/jobs?state=failed'],
      ['tenant', 'GET /v1/jobs?state=succeeded (tenant key)', tenant, () => '/v1/jobs?state=succeeded'],
      ['tenant-all', 'GET /v1/jobs (tenant key)', tenant, () => '/v1/jobs'],
      ['page', 'GET /v1/jobs?state=succeeded&cursor=<id/3>', operator, () => `/v1/jobs?state=succeeded&cursor=${deep}`],
      ['cold', 'GET /v1/jobs?state=succeeded&cursor=<random>', operator, () => `/v1/jobs?state=succeeded&cursor=${idCursor(random(maxId))}`],
      ['detail', 'GET /v1/jobs/{id}', operator, () => `/v1/jobs/${random(maxId)}`],
      [
        'errors',
        'GET /v1/jobs/{csv}/errors?limit=100&cursor=<random>',
        operator,
        () => `/v1/jobs/${csvJob}/errors?limit=100&cursor=${Buffer.from(JSON.stringify({ row: random(settings.errors) })).toString('base64url')}`,
      ],
    ];
    // Rounds go through every scenario in turn, so that a slow spell of the machine falls on all of them; the table
    // gives each figure's median over the rounds (each on its own: p99 and req/s may come from different rounds) and
    // the range of the p99s.
    const chosen = scenarios.filter(([short]) => settings.only.length === 0 || settings.only.includes(short));
    const rounds = new Map<string, Result[]>(chosen.map(([, name]) => [name, []]));
    // A fresh server's first seconds under load cost it more CPU per request than later ones, and a server in
    // production runs for days: every scenario first runs --warmup seconds unmeasured.
    if (settings.warmup > 0) {
      for (const [, name, key, pathFor] of chosen) await load(name, key, pathFor, base, serve.pid, settings.connections, settings.warmup);
    }
    for (let round = 1; round <= settings.rounds; round += 1) {
      for (const [, name, key, pathFor] of chosen) rounds.get(name)!.push(await load(name, key, pathFor, base, serve.pid));
      if (settings.rounds > 1) {
        const line = chosen.map(([short, name]) => {
          const r = rounds.get(name)!.at(-1)!;
          return `${short} ${r.perSecond.toFixed(0)}/s p99 ${r.p99.toFixed(1)} server ${r.serverCpuMs.toFixed(2)}`;
        });
        console.log(`round ${round} of ${settings.rounds}: ${line.join('; ')}`);
      }
    }
    console.log(`\n${settings.connections} connections, ${settings.seconds} s per scenario, median of ${settings.rounds} round(s)`);
    printTable([...rounds.values()].map(medianRound));
    if (settings.sweep.length > 0) {
      // Closed-loop load: each connection sends its next request when the last one answers, so at C connections the
      // mean latency is C / throughput (Little's law). The sweep shows latency from one caller up to saturation.
      const sweep: Result[] = [];
      const swept = scenarios.filter(([short]) => short === 'tenant' || short === 'detail');
      for (const connections of settings.sweep) {
        for (const [, name, key, pathFor] of swept) sweep.push(await load(name, key, pathFor, base, serve.pid, connections, Math.min(settings.seconds, 5)));
      }
      console.log(`\nlatency by connections (${Math.min(settings.seconds, 5)} s each)`);
      printTable(sweep);
    }
    console.log(`\nCSV export of ${settings.errors.toLocaleString('en-US')} row errors (GET /v1/jobs/{id}/errors?format=csv)`);
    console.log('| connections | seconds | MB sent | MB/s (all) | lines per export | server RSS before / peak / after (MB) |');
    console.log('|---|---|---|---|---|---|');
    for (const connections of settings.exportConnections) {
      const e = await exportCsv(base, operator, csvJob, serve.pid, connections);
      if (e.status.some((s) => s !== 200)) throw new Error(`export answered ${e.status.join(',')}`);
      console.log(
        `| ${connections} | ${e.seconds.toFixed(1)} | ${(e.bytes / 1e6).toFixed(0)} | ${e.mbPerSecond.toFixed(1)} | ${e.lines.toLocaleString('en-US')} | ${(e.before / 1024).toFixed(0)} / ${(e.peak / 1024).toFixed(0)} / ${(e.after / 1024).toFixed(0)} |`,
      );
    }
  } finally {
    await serve?.stop();
    await database.stop();
  }
}

await main();
