// npm run bench:mass-import — the mass import against `aws s3 cp --recursive` (Debian awscli), side by side in one
// run, into the same local S3 server: a tree of 1,607 files spread like a document share (a few hundred MB). Ours
// runs as a separate worker process (`bulk-import worker --exit-when-idle`) and, unlike the copy, also hashes every
// file (SHA-256) and records it in Postgres (one documents row + the item, per file, in a fenced transaction).
// Prints MB/s and files/s for both, the ratio, the worker's peak RSS, and the peak RSS importing one big file (RSS
// must be flat in file size).
//
//   BENCH_FILES=1607 BENCH_ROUNDS=1 BENCH_BIG_FILE_MIB=512 npm run bench:mass-import
import { createReadStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { submitJob } from '../worker/api.js';
import { createPool } from '../worker/db/pool.js';
import { migrate } from '../worker/db/migrate.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../worker/dev/embedded-postgres.js';
import { ensureBucket, LOCAL_S3_CREDENTIALS, startLocalS3, type LocalS3 } from '../worker/dev/local-s3.js';
import { ensureSampleTree, sampleTreeLayout } from '../worker/dev/sample-tree.js';
import { listObjectPages } from '../worker/audit/bucket-listing.js';
import { createS3Client } from '../worker/storage/s3-client.js';
import { MASS_IMPORT_KIND } from '../worker/handlers/kinds.js';
import { ensureAwsCli, type AwsCli } from './mass-import/aws-cli.js';
import { runMeasured } from './mass-import/measured-process.js';
import { printMassImportResults, type ToolResult } from './mass-import/report.js';
import { writeBigFileTree } from './mass-import/big-file.js';
import { buildCompiledWorker } from './support/compiled-worker.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

const REGION = 'us-east-1';

const settings = {
  files: Number(process.env.BENCH_FILES ?? 1607),
  rounds: Number(process.env.BENCH_ROUNDS ?? 1),
  bigFileMiB: Number(process.env.BENCH_BIG_FILE_MIB ?? 512),
  seed: process.env.BENCH_SEED ?? 'bench-mass-import',
};

const log = (line: string) => process.stdout.write(`${line}\n`);

async function warmPageCache(directory: string): Promise<void> {
  // Both tools then read the tree from memory: the comparison is about uploading, not about the disk.
  for (const entry of await readdir(directory, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    await new Promise<void>((done, fail) => {
      createReadStream(join(entry.parentPath, entry.name)).on('data', () => {}).on('end', done).on('error', fail);
    });
  }
}

async function bucketContents(s3: ReturnType<typeof createS3Client>, bucket: string): Promise<{ objects: number; bytes: number }> {
  let objects = 0;
  let bytes = 0;
  for await (const page of listObjectPages(s3, bucket, '')) {
    objects += page.length;
    for (const object of page) bytes += object.sizeBytes;
  }
  return { objects, bytes };
}

interface Servers {
  /** The compiled CLI entry point the worker process runs. */
  workerEntry: string;
  postgres: EmbeddedPostgres;
  s3: LocalS3;
  client: ReturnType<typeof createS3Client>;
  runDir: string;
}

const s3Env = (endpoint: string) => ({
  AWS_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
  AWS_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
  AWS_REGION: REGION,
  AWS_DEFAULT_REGION: REGION,
  S3_ENDPOINT: endpoint,
});

async function runAws(aws: AwsCli, servers: Servers, tree: string, round: number): Promise<ToolResult> {
  const bucket = `bench-aws-${round}`;
  await ensureBucket(servers.client, bucket);
  const run = await runMeasured(
    aws.path,
    ['s3', 'cp', '--recursive', '--only-show-errors', '--no-progress', '--endpoint-url', servers.s3.endpoint, tree, `s3://${bucket}/`],
    {
      PATH: process.env.PATH ?? '',
      HOME: servers.runDir,
      ...s3Env(servers.s3.endpoint),
      // No operator config file may change the defaults (10 concurrent requests, 8 MB multipart threshold and parts).
      AWS_CONFIG_FILE: join(servers.runDir, 'no-aws-config'),
      AWS_SHARED_CREDENTIALS_FILE: join(servers.runDir, 'no-aws-credentials'),
    },
  );
  if (run.code !== 0) throw new Error(`aws s3 cp failed (${run.code}): ${run.stderr.slice(-2000)}`);
  const stored = await bucketContents(servers.client, bucket);
  return { tool: `aws s3 cp --recursive (${aws.version})`, ours: false, round, wallMs: run.wallMs, peakRssBytes: run.peakRssBytes, ...stored };
}

async function runOurs(servers: Servers, importRoot: string, round: number, label = 'bulk-import mass-import'): Promise<ToolResult> {
  const database = `bench_ours_${round}`;
  const admin = new pg.Client({ connectionString: servers.postgres.adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${database}`);
  await admin.query(`CREATE DATABASE ${database}`);
  await admin.end();
  const databaseUrl = servers.postgres.databaseUrl(database);
  await migrate(databaseUrl);
  const bucket = `bench-ours-${round}`;
  await ensureBucket(servers.client, bucket);
  const pool = createPool(databaseUrl, { max: 2, applicationName: 'bench-mass-import' });
  try {
    const { job } = await submitJob(pool, { kind: MASS_IMPORT_KIND, tenantId: 'bench', payload: { prefix: 'bench' } });
    const run = await runMeasured(process.execPath, [servers.workerEntry, 'worker', '--exit-when-idle'], {
      PATH: process.env.PATH ?? '',
      HOME: servers.runDir,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      ...s3Env(servers.s3.endpoint),
      DATABASE_URL: databaseUrl,
      S3_BUCKET: bucket,
      IMPORT_ROOT: importRoot,
      IMPORT_ROOT_REQUIRE_MOUNT: 'false',
      HEALTH_HEARTBEAT_FILE: join(servers.runDir, `worker-${round}.heartbeat`),
      LOG_LEVEL: 'warn',
      LOG_FORMAT: 'json',
      ...(process.env.MASS_IMPORT_CONCURRENCY ? { MASS_IMPORT_CONCURRENCY: process.env.MASS_IMPORT_CONCURRENCY } : {}),
      // Tracing on for the worker when the bench runs with the standard OTEL_* variables (bench/otlp-sink.ts).
      ...Object.fromEntries(Object.entries(process.env).filter(([name]) => name.startsWith('OTEL_'))),
    });
    if (run.code !== 0) throw new Error(`the worker failed (${run.code}): ${run.stderr.slice(-2000)}`);
    const { rows } = await pool.query(
      `SELECT state, result, extract(epoch FROM finished_at - started_at) * 1000 AS job_ms,
              extract(epoch FROM finished_at) * 1000 AS finished_at_ms,
              (SELECT count(*)::int FROM documents) AS documents FROM jobs WHERE id = $1`,
      [job.id],
    );
    const row = rows[0] as { state: string; result: Record<string, unknown>; job_ms: number; finished_at_ms: number; documents: number };
    if (row.state !== 'succeeded') throw new Error(`the mass import ended ${row.state}: ${JSON.stringify(row.result)}`);
    const stored = await bucketContents(servers.client, bucket);
    return {
      tool: label,
      ours: true,
      round,
      // Until the data is there: spawn → the run recorded finished (the worker then idles until its poll notices the
      // queue is empty and exits, which --exit-when-idle adds and a deployed worker never does).
      wallMs: Number(row.finished_at_ms) - run.spawnedAt,
      processMs: run.wallMs,
      jobMs: Number(row.job_ms),
      peakRssBytes: run.peakRssBytes,
      documents: row.documents,
      ...stored,
    };
  } finally {
    await pool.end();
  }
}

async function main(): Promise<void> {
  // The pinned SDK warns that its future releases need Node 22 (see bin/bulk-import.js): noise here too.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const work = resolve(ROOT, '.bench/mass-import');
  await mkdir(work, { recursive: true });
  await chmod(work, 0o755);
  const spec = { seed: settings.seed, files: settings.files, profile: 'document-share' as const };
  const layout = sampleTreeLayout(spec);
  log(`Tree: ${layout.length} files (document-share spread), generating once under ${work}/tree …`);
  const tree = await ensureSampleTree(join(work, 'tree'), spec, (written, total) => {
    if (written % 400 === 0 || written === total) log(`  ${written}/${total}`);
  });
  const aws = await ensureAwsCli(log);
  log('Compiling the worker (as the production image runs it) …');
  // With the standard OTEL_* variables set, its bin/ starts the trace SDK as in production: the tracing overhead run.
  const workerEntry = await buildCompiledWorker(join(work, 'layout'), log);

  const runDir = await mkdtemp(join(work, 'run-'));
  await chmod(runDir, 0o755);
  const postgres = await startEmbeddedPostgres({ baseDir: join(runDir, 'pg'), persistent: false });
  const s3 = await startLocalS3(join(runDir, 's3'));
  const client = createS3Client({ region: REGION, endpoint: s3.endpoint, credentials: LOCAL_S3_CREDENTIALS });
  const servers: Servers = { workerEntry, postgres, s3, client, runDir };
  const results: ToolResult[] = [];
  let bigFile: ToolResult | undefined;
  try {
    log('Warming the page cache (both tools read the tree from memory) …');
    await warmPageCache(tree.directory);
    for (let round = 1; round <= settings.rounds; round += 1) {
      const runs: Array<() => Promise<ToolResult>> = [() => runOurs(servers, tree.directory, round)];
      if (aws) runs.push(() => runAws(aws, servers, tree.directory, round));
      if (round % 2 === 0) runs.reverse();
      for (const run of runs) {
        const result = await run();
        log(`  round ${round}: ${result.tool}: ${(result.wallMs / 1000).toFixed(1)} s, ${result.objects} objects`);
        results.push(result);
      }
    }
    if (settings.bigFileMiB > 0) {
      const bigTree = await writeBigFileTree(join(work, 'big-file'), settings.bigFileMiB, settings.seed);
      await warmPageCache(bigTree);
      bigFile = await runOurs(servers, bigTree, 99, `bulk-import mass-import, one ${settings.bigFileMiB} MiB file`);
      log(`  one ${settings.bigFileMiB} MiB file: ${(bigFile.wallMs / 1000).toFixed(1)} s`);
    }
  } finally {
    client.destroy();
    await s3.stop();
    await postgres.stop();
    await rm(runDir, { recursive: true, force: true });
  }
  printMassImportResults({ files: tree.files, bytes: tree.bytes, largest: Math.max(...layout.map((file) => file.size)), results, bigFile, awsAvailable: aws !== undefined });
}

await main();
