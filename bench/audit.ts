// npm run bench:audit — the `audit` job run by a real worker process over N
// imported `products` rows (default 10,000,000) in keyset batches, while a writer updates random products the whole
// time: the audit's time, the worker's peak RSS (VmHWM), the writer's worst and p99 latency during the audit against
// its latency before, and the planted findings found. Embedded Postgres (fsync off), on this machine.
//
//   npm run bench:audit                                    # 10M products, batch 10,000
//   npm run bench:audit -- --rows 1000000 --batch-size 20000
import { spawn } from 'node:child_process';
import { chmod, readFile } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { submitJob } from '../worker/api.js';
import { migrate } from '../worker/db/migrate.js';
import { startEmbeddedPostgres } from '../worker/dev/embedded-postgres.js';
import { AUDIT_KIND, CSV_FINALIZE_KIND } from '../worker/handlers/kinds.js';
import { withClient } from './support/pg-client.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const TENANTS = 10;
const REFERENCES_PER_TENANT = 50;
const RUNS = 20;
/** Every this many products points at a category id that does not exist. */
const DANGLING_EVERY = 100_000;

const { values: args } = parseArgs({ options: { rows: { type: 'string', default: '10000000' }, 'batch-size': { type: 'string', default: '10000' } } });
const rows = Number(args.rows);
const batchSize = Number(args['batch-size']);

/**
 * Reference rows (ids 1…500 in each table, 50 per tenant), 20 finished CSV runs (one of them claims 5 rows more than
 * carry its id; runs finished "yesterday", so no later import explains it), N products.
 */
async function load(url: string): Promise<void> {
  await withClient(url, async (client) => {
    for (const table of ['categories', 'suppliers', 'locations']) {
      await client.query(
        `INSERT INTO ${table} (tenant_id, name) SELECT 'tenant-' || t, '${table} ' || n FROM generate_series(0, $1) t, generate_series(1, $2) n`,
        [TENANTS - 1, REFERENCES_PER_TENANT],
      );
    }
    const { rows: runs } = await client.query<{ id: string }>(
      `INSERT INTO jobs (kind, state, tenant_id, finished_at) SELECT '${CSV_FINALIZE_KIND}', 'succeeded', 'tenant-' || (g % ${TENANTS}), now()
       FROM generate_series(0, ${RUNS - 1}) g RETURNING id`,
    );
    const firstRun = Number(runs[0]!.id);
    // Products: run r = firstRun + (g % RUNS) wrote row g; tenant follows the run; ids of the tenant's references.
    await client.query(
      `INSERT INTO products (tenant_id, sku, name, price, quantity, status, category_id, supplier_id, location_id, last_import_job_id)
       SELECT 'tenant-' || ((g % ${RUNS}) % ${TENANTS}), 'SKU-' || g, 'Product ' || g, (g % 1000) + 0.99, g % 250, 'active',
              CASE WHEN g % ${DANGLING_EVERY} = 0 THEN -g
                   ELSE ((g % ${RUNS}) % ${TENANTS}) * ${REFERENCES_PER_TENANT} + 1 + g % ${REFERENCES_PER_TENANT} END,
              ((g % ${RUNS}) % ${TENANTS}) * ${REFERENCES_PER_TENANT} + 1 + (g / 7) % ${REFERENCES_PER_TENANT},
              ((g % ${RUNS}) % ${TENANTS}) * ${REFERENCES_PER_TENANT} + 1 + (g / 13) % ${REFERENCES_PER_TENANT},
              ${firstRun} + g % ${RUNS}
       FROM generate_series(1, $1::int) g`,
      [rows],
    );
    await client.query(
      `INSERT INTO csv_import_runs (job_id, profile, tenant_id, bucket, object_key, delimiter, header, columns, validated_at, finalized_at)
       SELECT j.id, 'products', j.tenant_id, 'bench', 'imports/' || j.tenant_id || '/run-' || j.id || '.csv', ',', '{sku}', '{sku}', now() - interval '1 day', now() - interval '1 day'
       FROM jobs j WHERE j.kind = '${CSV_FINALIZE_KIND}'`,
    );
    await client.query(
      `INSERT INTO csv_import_batches (job_id, batch_number, first_row, last_row, row_count, rows_inserted, finalized_at)
       SELECT p.job, 1, 2, p.n + 1, p.n, p.n + CASE WHEN p.job = ${firstRun} THEN 5 ELSE 0 END, now()
       FROM (SELECT last_import_job_id AS job, count(*)::int AS n FROM products GROUP BY 1) p`,
    );
    await client.query('VACUUM (ANALYZE) products');
  });
}

async function peakRss(pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = /VmHWM:\s+(\d+) kB/.exec(status);
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Single-row updates of random products, one after another, until stopped; returns the latencies (ms). */
function startWriter(url: string): { stop(): Promise<number[]> } {
  const latencies: number[] = [];
  let running = true;
  const done = withClient(url, async (client) => {
    while (running) {
      const id = 1 + Math.floor(Math.random() * rows);
      const started = performance.now();
      await client.query('UPDATE products SET quantity = quantity + 1, updated_at = now() WHERE id = $1', [id]);
      latencies.push(performance.now() - started);
    }
  });
  return {
    async stop() {
      running = false;
      await done;
      return latencies;
    },
  };
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;
}

async function main(): Promise<void> {
  const stateDir = await mkdtemp(join(tmpdir(), 'bench-audit-'));
  await chmod(stateDir, 0o755);
  const postgres = await startEmbeddedPostgres({ baseDir: join(stateDir, 'pg'), persistent: false, fast: true, sharedBuffers: process.env.BENCH_SHARED_BUFFERS ?? '1GB' });
  try {
    await withClient(postgres.adminUrl, (admin) => admin.query('CREATE DATABASE bench_audit'));
    const url = postgres.databaseUrl('bench_audit');
    await migrate(url);
    const version = await withClient(url, async (client) => (await client.query('SHOW server_version')).rows[0].server_version);
    console.log(`Postgres ${version} (embedded, fsync off), Node ${process.version}, ${rows.toLocaleString('en-US')} products, batch ${batchSize}`);
    let started = performance.now();
    await load(url);
    console.log(`loaded in ${((performance.now() - started) / 1000).toFixed(1)} s`);

    const idle = startWriter(url);
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    const before = await idle.stop();

    const { job } = await withClient(url, (client) => submitJob(client, { kind: AUDIT_KIND, payload: { checks: ['references', 'csv-runs'], batchSize } }));
    const writer = startWriter(url);
    started = performance.now();
    const worker = spawn(process.execPath, [join(ROOT, 'bin/bulk-import.js'), 'worker', '--exit-when-idle', '--kinds', AUDIT_KIND], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATABASE_URL: url, LOG_LEVEL: 'warn', LOG_FORMAT: 'json' },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    let peak = 0;
    const sampler = setInterval(() => {
      void peakRss(worker.pid!).then((value) => {
        if (value !== undefined) peak = Math.max(peak, value);
      });
    }, 200);
    const code = await new Promise<number | null>((resolve) => worker.once('exit', resolve));
    clearInterval(sampler);
    const during = await writer.stop();
    if (code !== 0) throw new Error(`worker exited with ${code}`);
    const finished = await withClient(url, async (client) => {
      const { rows: result } = await client.query(
        `SELECT state, result, extract(epoch FROM finished_at - started_at)::float8 AS seconds FROM jobs WHERE id = $1`,
        [job.id],
      );
      return result[0] as { state: string; result: Record<string, unknown>; seconds: number };
    });
    if (finished.state !== 'succeeded') throw new Error(`audit ended ${finished.state}`);
    const planted = Math.floor(rows / DANGLING_EVERY);
    console.log('');
    console.log(`| audit of ${rows.toLocaleString('en-US')} products | value |`);
    console.log('|---|---|');
    console.log(`| audit run (job timestamps) | ${finished.seconds.toFixed(1)} s (${Math.round(rows / finished.seconds).toLocaleString('en-US')} rows/s), ${String(finished.result.batches)} batches |`);
    console.log(`| worker process peak RSS (VmHWM) | ${(peak / 1024 / 1024).toFixed(0)} MiB |`);
    console.log(`| findings | ${JSON.stringify(finished.result.byCheck)} (planted: ${planted} missing-reference, 1 csv-run-count) |`);
    console.log(`| writer latency before the audit | p99 ${percentile(before, 99).toFixed(1)} ms, max ${Math.max(...before).toFixed(1)} ms (${before.length} updates) |`);
    console.log(`| writer latency during the audit | p99 ${percentile(during, 99).toFixed(1)} ms, max ${Math.max(...during).toFixed(1)} ms (${during.length} updates) |`);
    console.log(`| wall time incl. worker start | ${((performance.now() - started) / 1000).toFixed(1)} s |`);
  } finally {
    await postgres.stop();
  }
}

await main();
