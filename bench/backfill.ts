// npm run bench:backfill — the `backfill` job run by a real worker process over N `documents` rows (default
// 5,000,000) against the physical limit: the same fill done as one plain `UPDATE … WHERE file_extension IS NULL`, on
// a fresh copy of the same data, on the same embedded Postgres (fsync off). Prints rows/s, total time and the ratio.
//
//   npm run bench:backfill                                  # 5M rows, the backfill's default batch size and parallelism
//   npm run bench:backfill -- --rows 1000000 --batch-sizes 5000,20000 --parallelism 1,2
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { submitJob } from '../worker/api.js';
import { documentsFileExtension } from '../worker/backfills/documents-file-extension.js';
import { compileBackfill } from '../worker/backfills/compile.js';
import { migrate } from '../worker/db/migrate.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../worker/dev/embedded-postgres.js';
import { BACKFILL_KIND } from '../worker/handlers/kinds.js';
import { withClient } from './support/pg-client.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SOURCE_DB = 'bench_backfill_source';
const GOAL_SECONDS = 120;
const GOAL_RATIO = 0.5;

const { values: args } = parseArgs({
  options: {
    rows: { type: 'string', default: '5000000' },
    'batch-sizes': { type: 'string' },
    parallelism: { type: 'string' },
  },
});
const rows = Number(args.rows);
const defaults = compileBackfill(documentsFileExtension);
const batchSizes = (args['batch-sizes'] ?? String(defaults.batchSize)).split(',').map(Number);
const parallelisms = (args.parallelism ?? String(defaults.parallelism)).split(',').map(Number);
if (!Number.isSafeInteger(rows) || rows < 1 || [...batchSizes, ...parallelisms].some((n) => !Number.isSafeInteger(n) || n < 1)) {
  throw new Error('usage: bench/backfill.ts [--rows N] [--batch-sizes N,N,…] [--parallelism N,N,…]');
}

interface Measurement {
  name: string;
  rows: number;
  seconds: number;
  remaining: number;
  note: string;
}

/** Documents as the mass import writes them, imported before file_extension existed (the trigger is off). */
async function loadDocuments(url: string): Promise<void> {
  await withClient(url, async (client) => {
    await client.query('ALTER TABLE documents DISABLE TRIGGER documents_file_extension_on_write');
    await client.query(
      `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
       SELECT 'tenant-' || (g % 7), path, md5(g::text) || md5((-g)::text), (g::bigint * 7919) % 50000000,
              'application/octet-stream', 'bench-bucket', 'documents/tenant-' || (g % 7) || '/' || path
       FROM generate_series(1, $1::int) AS g,
            LATERAL (SELECT 'campaign-' || (g % 13) || '/folder ' || (g % 997) || '/Scan ' || lpad(g::text, 8, '0') ||
                     (ARRAY['.pdf', '.PDF', '.jpg', '.tar.gz', '', '.docx', '.eml', '.TIFF'])[1 + g % 8] AS path) AS p`,
      [rows],
    );
    await client.query('ALTER TABLE documents ENABLE TRIGGER documents_file_extension_on_write');
    await client.query('VACUUM (FREEZE, ANALYZE) documents');
  });
}

async function freshCopy(postgres: EmbeddedPostgres, name: string): Promise<string> {
  await withClient(postgres.adminUrl, async (admin) => {
    await admin.query(`DROP DATABASE IF EXISTS ${name}`);
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${SOURCE_DB} STRATEGY FILE_COPY`);
    await admin.query('CHECKPOINT');
  });
  return postgres.databaseUrl(name);
}

async function dropDatabase(postgres: EmbeddedPostgres, name: string): Promise<void> {
  await withClient(postgres.adminUrl, (admin) => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
}

async function missingRows(url: string): Promise<number> {
  return withClient(url, async (client) => {
    const { rows: result } = await client.query('SELECT count(*)::int AS n FROM documents WHERE file_extension IS NULL');
    return result[0].n as number;
  });
}

async function plainUpdate(url: string): Promise<Measurement> {
  const started = performance.now();
  const updated = await withClient(url, async (client) => {
    const result = await client.query(
      'UPDATE documents SET file_extension = documents_file_extension(source_path) WHERE file_extension IS NULL',
    );
    return result.rowCount ?? 0;
  });
  const seconds = (performance.now() - started) / 1000;
  return { name: 'single UPDATE … WHERE IS NULL', rows: updated, seconds, remaining: await missingRows(url), note: 'one transaction, no progress, not resumable' };
}

/** Enqueues the backfill, runs a real worker process until idle, and times the job from its own timestamps. */
async function backfillJob(url: string, batchSize: number, parallelism: number): Promise<Measurement> {
  const job = await withClient(url, async (client) => {
    const { job: enqueued } = await submitJob(client, {
      kind: BACKFILL_KIND,
      payload: { name: documentsFileExtension.name, batchSize, parallelism },
    });
    return enqueued;
  });
  const worker = spawn(process.execPath, [join(ROOT, 'bin/bulk-import.js'), 'worker', '--exit-when-idle', '--kinds', BACKFILL_KIND], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', DATABASE_URL: url, LOG_LEVEL: 'warn', LOG_FORMAT: 'json' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const exited = new Promise<number | null>((resolve) => worker.once('exit', (code) => resolve(code)));
  const ticker = setInterval(() => {
    void withClient(url, (client) => client.query('SELECT progress FROM jobs WHERE id = $1', [job.id]))
      .then(({ rows: result }) => {
        const progress = result[0]?.progress as { done?: number; total?: number; rate?: number; etaSeconds?: number; phase?: string } | null;
        if (progress?.total) {
          console.log(`    ${progress.phase} ${progress.done}/${progress.total}, ${progress.rate} rows/s, eta ${progress.etaSeconds ?? '-'} s`);
        }
      })
      .catch(() => {});
  }, 10_000);
  const code = await exited;
  clearInterval(ticker);
  if (code !== 0) throw new Error(`worker exited with ${code}`);
  const finished = await withClient(url, async (client) => {
    const { rows: result } = await client.query(
      `SELECT state, result, extract(epoch FROM finished_at - started_at)::float8 AS seconds FROM jobs WHERE id = $1`,
      [job.id],
    );
    return result[0] as { state: string; result: { rowsWritten: number; remaining: number; conflicts: number; batches: number }; seconds: number };
  });
  if (finished.state !== 'succeeded') throw new Error(`backfill job ended ${finished.state}: ${JSON.stringify(finished.result)}`);
  return {
    name: `backfill job, batch ${batchSize}, ${parallelism} stream${parallelism === 1 ? '' : 's'}`,
    rows: finished.result.rowsWritten,
    seconds: finished.seconds,
    remaining: await missingRows(url),
    note: `${finished.result.batches} batch transactions, pre-count and final count included`,
  };
}

function printTable(results: Measurement[], baseline: Measurement): void {
  const header = ['run', 'rows', 'time', 'rows/s', 'vs UPDATE', 'left', 'note'];
  const lines = results.map((result) => [
    result.name,
    result.rows.toLocaleString('en-US'),
    `${result.seconds.toFixed(1)} s`,
    Math.round(result.rows / result.seconds).toLocaleString('en-US'),
    `${(result.rows / result.seconds / (baseline.rows / baseline.seconds)).toFixed(2)}×`,
    String(result.remaining),
    result.note,
  ]);
  const widths = header.map((title, index) => Math.max(title.length, ...lines.map((line) => line[index]!.length)));
  const render = (cells: string[]) => `| ${cells.map((cell, index) => cell.padEnd(widths[index]!)).join(' | ')} |`;
  console.log(render(header));
  console.log(`|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`);
  for (const line of lines) console.log(render(line));
}

async function main(): Promise<void> {
  const stateDir = await mkdtemp(join(tmpdir(), 'bench-backfill-'));
  await chmod(stateDir, 0o755);
  // Buffers sized like a database server's for a multi-GB table, not the 128 MB default: both the job and the
  // single UPDATE run against the same server.
  const postgres = await startEmbeddedPostgres({
    baseDir: join(stateDir, 'pg'),
    persistent: false,
    fast: true,
    sharedBuffers: process.env.BENCH_SHARED_BUFFERS ?? '2GB',
  });
  try {
    const version = await withClient(postgres.adminUrl, async (client) => (await client.query('SHOW server_version')).rows[0].server_version);
    console.log(`Postgres ${version} (embedded, fsync off), Node ${process.version}, ${rows.toLocaleString('en-US')} documents rows`);
    await withClient(postgres.adminUrl, (admin) => admin.query(`CREATE DATABASE ${SOURCE_DB}`));
    const sourceUrl = postgres.databaseUrl(SOURCE_DB);
    await migrate(sourceUrl);
    let started = performance.now();
    await loadDocuments(sourceUrl);
    console.log(`loaded in ${((performance.now() - started) / 1000).toFixed(1)} s (trigger off: rows as imported before the column existed)`);

    console.log('single UPDATE on a fresh copy …');
    const baseline = await plainUpdate(await freshCopy(postgres, 'bench_backfill_plain'));
    await dropDatabase(postgres, 'bench_backfill_plain');
    const results = [baseline];
    for (const parallelism of parallelisms) {
      for (const batchSize of batchSizes) {
        console.log(`backfill job (batch ${batchSize}, parallelism ${parallelism}) on a fresh copy, run by a worker process …`);
        started = performance.now();
        const measurement = await backfillJob(await freshCopy(postgres, 'bench_backfill_job'), batchSize, parallelism);
        console.log(`  wall time incl. worker start and exit: ${((performance.now() - started) / 1000).toFixed(1)} s`);
        results.push(measurement);
        await dropDatabase(postgres, 'bench_backfill_job');
      }
    }
    console.log('');
    printTable(results, baseline);
    const best = results.slice(1).reduce((a, b) => (a.rows / a.seconds >= b.rows / b.seconds ? a : b));
    const ratio = best.rows / best.seconds / (baseline.rows / baseline.seconds);
    console.log(
      `\ngoals (best job, ${best.name}): ${rows.toLocaleString('en-US')} rows in ${best.seconds.toFixed(1)} s ` +
        `(< ${GOAL_SECONDS} s: ${best.seconds < GOAL_SECONDS ? 'met' : 'NOT met'}), ` +
        `${ratio.toFixed(2)}× the single UPDATE's rate (≥ ${GOAL_RATIO}×: ${ratio >= GOAL_RATIO ? 'met' : 'NOT met'})`,
    );
  } finally {
    await postgres.stop();
    await rm(stateDir, { recursive: true, force: true });
  }
}

await main();
