// `bulk-import local [DIR]` (`npm run local`): the whole flow on the embedded default. Starts the embedded Postgres
// and S3 server (state under .local/, kept between runs), migrates, imports DIR — or a generated sample tree of a few
// hundred files — with a worker running in this process, shows live progress, and prints a summary. A second run
// imports nothing and says so. `--serve` only starts the servers and the HTTP API, and prints how to reach them.
// Each directory is a run of its own: an interrupted run is resumed by the same command with the same DIR, and left
// alone (its worker runs only its own run) by a run of another DIR, whose files its plan does not name.
import { createHash } from 'node:crypto';
import { realpath, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { submitJob } from '../../api.js';
import { createApiKey, revokeApiKey } from '../../auth/api-keys.js';
import { loadConfig } from '../../config.js';
import { migrate } from '../../db/migrate.js';
import { createPool } from '../../db/pool.js';
import type * as LocalEnvironmentModule from '../../dev/local-environment.js';
import type { LocalEnvironment } from '../../dev/local-environment.js';
import type * as SampleTreeModule from '../../dev/sample-tree.js';
import { MASS_IMPORT_KIND } from '../../handlers/kinds.js';
import { DEFAULT_PREFIX, massImportHandler } from '../../handlers/mass-import.js';
import { plannedRoots } from '../../imports/mass-import/plan-root.js';
import { isValidPrefix, keyPrefixFor } from '../../imports/object-key.js';
import { isValidTenant } from '../../imports/tenant.js';
import { createLogger } from '../../logger.js';
import { ENQUEUE_LIMITS } from '../../queue/enqueue.js';
import { listJobs, requireJob } from '../../queue/operator.js';
import { TERMINAL_STATES, type JobRow } from '../../queue/types.js';
import { startWorkerProcess, type RunningWorker } from '../../runner/worker-process.js';
import { createS3Client } from '../../storage/s3-client.js';
import { createImportProgressView } from '../import-progress-view.js';
import { formatLocalImportSummary, summarizeLocalImport } from '../local-import-summary.js';
import { formatBytes, printJson, printLine } from '../output.js';
import { integerIn } from '../parse.js';
import { startApiServer } from './serve.js';

export const LOCAL_BUCKET = 'bulk-import-local';
export const LOCAL_DATABASE = 'postgres';
const SAMPLE_SEED = 'bulk-import-local';
const SAMPLE_PREFIX = 'sample';

interface LocalOptions {
  stateDir: string;
  serve?: boolean;
  tenant: string;
  prefix?: string;
  sampleFiles: number;
  concurrency?: number;
  verbose?: boolean;
  json?: boolean;
}

/**
 * worker/dev/ (embedded Postgres, S3 server, sample tree) is development code: `npm run build` leaves it out of dist/,
 * so the image has none of it. It is loaded when `local` runs, through variable specifiers that the production
 * dependency check does not follow; from an image the command says what it needs instead of failing on start-up.
 */
async function loadDevModule<T>(name: 'local-environment' | 'sample-tree'): Promise<T> {
  const specifier = `../../dev/${name}.js`;
  try {
    return (await import(specifier)) as T;
  } catch (error) {
    if ((error as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw error;
    throw new Error('`bulk-import local` needs a source checkout with its development dependencies (npm ci; npm run local)', {
      cause: error,
    });
  }
}

function parseTenant(value: string): string {
  if (!isValidTenant(value)) throw new InvalidArgumentError('expected 1-128 letters, digits, ".", "_" or "-"');
  return value;
}

function parsePrefix(value: string): string {
  if (!isValidPrefix(value)) throw new InvalidArgumentError('expected segments of letters, digits, ".", "_" or "-" joined by "/"');
  return value;
}

export function registerLocalCommand(program: Command): void {
  program
    .command('local [dir]')
    .description(
      'the main job on the embedded default: start Postgres + S3 (state under .local/), migrate, import DIR (default: a ' +
        'generated sample tree) with a worker in this process, show progress, print a summary',
    )
    .option('--state-dir <dir>', 'where the embedded servers keep their data between runs', '.local')
    .option('--serve', 'only start the servers and the HTTP API, print how to reach them and a local operator key, and wait for Ctrl-C')
    .option('--tenant <id>', 'tenant of the imported documents', parseTenant, 'local')
    .option('--prefix <prefix>', `first segment(s) of the object keys (default "${SAMPLE_PREFIX}" for the sample, "${DEFAULT_PREFIX}" for DIR)`, parsePrefix)
    .option('--sample-files <n>', 'files in the generated sample tree (1-100000)', integerIn(1, 100_000), 300)
    .option('--concurrency <n>', 'files uploaded at once, 1-256 (default MASS_IMPORT_CONCURRENCY)', integerIn(1, 256))
    .option('--verbose', "show the worker's log lines (on stderr)")
    .option('--json', 'print the summary as JSON only')
    .action(async (dir: string | undefined, options: LocalOptions) => {
      const stateDir = resolve(options.stateDir);
      if (options.serve) return serve(stateDir, options.json ?? false);
      const say = (line: string) => (options.json ? process.stderr.write(`${line}\n`) : printLine(line));
      const importRoot = dir === undefined ? undefined : await requireDirectory(dir);
      say(`Starting the embedded Postgres and S3 server (state in ${stateDir}) …`);
      const { startLocalEnvironment } = await loadDevModule<typeof LocalEnvironmentModule>('local-environment');
      const environment = await startLocalEnvironment({ stateDir, persistent: true, buckets: [LOCAL_BUCKET] });
      try {
        await runLocalImport(environment, stateDir, importRoot, options, say);
      } finally {
        await environment.stop();
      }
    });
}

/** DIR's real path: `local ./docs` and `local /home/me/docs` (or a link to it) are the same directory, one run. */
async function requireDirectory(dir: string): Promise<string> {
  const path = resolve(dir);
  const stats = await stat(path).catch(() => undefined);
  if (!stats?.isDirectory()) throw new Error(`${path} is not a directory: give the folder to import (or nothing, for the sample tree)`);
  return realpath(path);
}

/**
 * The dedupe key of a directory's run: the kind's own (tenant, prefix, source) and the directory, so that two
 * directories are two runs. Without it `local B` resumed the run `local A` left unfinished and read B's files under
 * the names A's plan holds. A path too long for the key is given by its SHA-256.
 */
function localDedupeKey(tenant: string, prefix: string, directory: string): string {
  const kindKey = massImportHandler.defaultDedupeKey!(massImportHandler.parsePayload({ prefix }), tenant);
  const key = `${kindKey}${DIRECTORY_MARK}${directory}`;
  if (Buffer.byteLength(key) <= ENQUEUE_LIMITS.dedupeKeyBytes) return key;
  return `${kindKey}${DIRECTORY_HASH_MARK}${createHash('sha256').update(directory).digest('hex')}`;
}

const DIRECTORY_MARK = ':dir=';
const DIRECTORY_HASH_MARK = ':dir-sha256=';

/** Whether a run was submitted by `local DIR` (its dedupe key names the directory): `local` resumes only those. */
function isLocalRun(job: Pick<JobRow, 'kind' | 'dedupeKey'>): boolean {
  const key = job.dedupeKey ?? '';
  return job.kind === MASS_IMPORT_KIND && (key.includes(DIRECTORY_MARK) || key.includes(DIRECTORY_HASH_MARK));
}

/**
 * Says which other runs are unfinished in this state dir: this command's worker does not run them (a mass import of
 * another directory would read this one's files under its plan's names).
 */
async function noteOtherUnfinishedRuns(pool: ReturnType<typeof createPool>, ownId: number, say: (line: string) => void): Promise<void> {
  const others = (await listJobs(pool, { states: ['queued', 'running'], oldestFirst: true, limit: 20 })).filter((job) => job.id !== ownId);
  if (others.length === 0) return;
  const roots = await plannedRoots(pool, others.map((job) => job.id));
  for (const job of others) {
    const root = roots.get(job.id);
    const what = job.kind === MASS_IMPORT_KIND ? `a mass-import${root ? ` of ${root.path}` : ''}` : `a ${job.kind} run`;
    const how = isLocalRun(job)
      ? `\`bulk-import local ${root?.path ?? 'DIR'}\` (its directory) resumes it`
      : `no \`local\` command runs it (not submitted by one): \`bulk-import cancel ${job.id}\` ends it, or a worker of your own runs it`;
    say(`Job ${job.id} (${job.state}), ${what}, is unfinished in this state dir and stays as it is (this command runs only its own job); ${how}.`);
  }
}

async function runLocalImport(
  environment: LocalEnvironment,
  stateDir: string,
  givenRoot: string | undefined,
  options: LocalOptions,
  say: (line: string) => void,
): Promise<void> {
  const databaseUrl = environment.postgres.databaseUrl(LOCAL_DATABASE);
  const applied = await migrate(databaseUrl);
  if (applied.length > 0) say(`Applied ${applied.length} migration(s).`);

  let importRoot = givenRoot;
  if (importRoot === undefined) {
    const { ensureSampleTree } = await loadDevModule<typeof SampleTreeModule>('sample-tree');
    const tree = await ensureSampleTree(
      join(stateDir, 'sample-import'),
      { seed: SAMPLE_SEED, files: options.sampleFiles, profile: 'sample' },
      (written, total) => say(`  writing the sample tree: ${written}/${total} files`),
    );
    importRoot = tree.directory;
    say(`${tree.created ? 'Generated' : 'Using'} the sample tree ${importRoot}: ${tree.files} files, ${formatBytes(tree.bytes)}.`);
  }
  const prefix = options.prefix ?? (givenRoot === undefined ? SAMPLE_PREFIX : DEFAULT_PREFIX);
  const keyPrefix = keyPrefixFor(prefix, options.tenant);

  // The embedded S3 server's credentials, for the SDK's default credential chain in this process only.
  process.env.AWS_ACCESS_KEY_ID = environment.credentials.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = environment.credentials.secretAccessKey;
  const config = loadConfig({
    ...process.env,
    DATABASE_URL: databaseUrl,
    S3_ENDPOINT: environment.s3.endpoint,
    S3_BUCKET: LOCAL_BUCKET,
    AWS_REGION: environment.region,
    IMPORT_ROOT: importRoot,
    // The local tree is a plain folder, not a campaign mount.
    IMPORT_ROOT_REQUIRE_MOUNT: 'false',
    WORKER_ID: `local:${process.pid}`,
    // Short leases: if this run is killed, the next one resumes its job within seconds.
    WORKER_LEASE_MS: '10000',
    // The worker claims only this command's run (onlyJobs below), which no tenant ceiling applies to.
    TENANT_KIND_CONCURRENCY: undefined,
    WORKER_HEARTBEAT_MS: '3000',
    WORKER_RESCUE_INTERVAL_MS: '2000',
    HEALTH_HEARTBEAT_FILE: join(stateDir, 'worker.heartbeat'),
    ...(options.concurrency !== undefined ? { MASS_IMPORT_CONCURRENCY: String(options.concurrency) } : {}),
  });
  const log = createLogger({
    level: options.verbose ? 'info' : 'error',
    format: config.logFormat,
    destination: process.stderr,
  });
  const pool = createPool(databaseUrl, { max: 2, applicationName: 'bulk-import-local' });
  const s3 = createS3Client({ region: environment.region, endpoint: environment.s3.endpoint, credentials: environment.credentials });
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  // A crashed S3 server would leave the run waiting out an "S3 outage" for an hour: the command stops instead.
  let s3Exit: { code: number | null } | undefined;
  void environment.s3.stoppedByItself.then((code) => {
    s3Exit = { code };
  });
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let running: RunningWorker | undefined;
  try {
    const { job, reused } = await submitJob(
      pool,
      { kind: MASS_IMPORT_KIND, tenantId: options.tenant, payload: { prefix }, dedupeKey: localDedupeKey(options.tenant, prefix, importRoot) },
      { defaultMaxAttempts: config.worker.defaultMaxAttempts },
    );
    say(
      reused
        ? `Resuming job ${job.id} (${job.state}), left unfinished by an earlier run of ${importRoot}: files already imported are not imported again.`
        : `Enqueued job ${job.id}: mass-import of ${importRoot} into s3://${LOCAL_BUCKET}/${keyPrefix}`,
    );
    await noteOtherUnfinishedRuns(pool, job.id, say);
    running = await startWorkerProcess({ config, log, onlyJobs: [job.id] });
    const finished = await followJob(pool, job.id, options.json ?? false, () => interrupted || s3Exit !== undefined);
    if (!finished && s3Exit) {
      throw new Error(
        `the embedded S3 server stopped (exit code ${s3Exit.code}; its error is above). ${LOCAL_S3_LIMIT}. The job goes ` +
          'back to the queue; run the same command again to resume it once the cause is dealt with',
      );
    }
    if (!finished) {
      say('Interrupted: the worker gives the job back to the queue; run the same command again to resume it.');
      process.exitCode = 130;
      return;
    }
    const summary = await summarizeLocalImport(pool, s3, finished, { directory: importRoot, bucket: LOCAL_BUCKET, keyPrefix });
    if (options.json) printJson(summary);
    else for (const line of formatLocalImportSummary(summary)) printLine(line);
    process.exitCode = finished.state === 'succeeded' ? 0 : finished.state === 'partial' ? 2 : 1;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await running?.stop();
    s3.destroy();
    await pool.end();
  }
}

/** Shows the run's progress until it ends (returns it) or the user interrupts (returns undefined). */
async function followJob(
  pool: ReturnType<typeof createPool>,
  jobId: number,
  quiet: boolean,
  interrupted: () => boolean,
): Promise<JobRow | undefined> {
  const view = quiet ? undefined : createImportProgressView();
  let waitingNoted = false;
  try {
    for (;;) {
      if (interrupted()) return undefined;
      const job = await requireJob(pool, jobId);
      if (TERMINAL_STATES.includes(job.state)) {
        view?.update(job);
        return job;
      }
      if (job.state === 'running' && job.leaseOwner !== null && !job.leaseOwner.startsWith(`local:${process.pid}`) && !waitingNoted) {
        view?.note(`Job ${jobId} is still leased by ${job.leaseOwner} (an earlier run); it resumes here once that lease expires.`);
        waitingNoted = true;
      }
      view?.update(job);
      await new Promise((resolveWait) => setTimeout(resolveWait, 200));
    }
  } finally {
    view?.stop();
  }
}

/**
 * `local --serve`: start the servers and the HTTP API (docs/API.md) on them, print how to reach them and a fresh
 * local operator key, and wait for Ctrl-C.
 */
async function serve(stateDir: string, json: boolean): Promise<void> {
  const { startLocalEnvironment } = await loadDevModule<typeof LocalEnvironmentModule>('local-environment');
  const environment = await startLocalEnvironment({ stateDir, persistent: true, buckets: [LOCAL_BUCKET] });
  const databaseUrl = environment.postgres.databaseUrl(LOCAL_DATABASE);
  await migrate(databaseUrl);
  const reach = {
    DATABASE_URL: databaseUrl,
    S3_ENDPOINT: environment.s3.endpoint,
    S3_BUCKET: LOCAL_BUCKET,
    AWS_ACCESS_KEY_ID: environment.credentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: environment.credentials.secretAccessKey,
  };
  // The API reads the same configuration as every command: this process's environment, pointed at the servers.
  Object.assign(process.env, reach, { AWS_REGION: environment.region, LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn' });
  const api = await startApiServer({ port: LOCAL_API_PORT, host: '127.0.0.1' }).catch((error: unknown) =>
    (error as { code?: string }).code === 'EADDRINUSE' ? startApiServer({ port: 0, host: '127.0.0.1' }) : Promise.reject(error),
  );
  const operatorKey = await localOperatorKey(databaseUrl);
  if (json) printJson({ ...reach, API_URL: api.url, API_KEY: operatorKey });
  else {
    printLine('Embedded environment is up and migrated. In another shell:');
    for (const [name, value] of Object.entries(reach)) printLine(`  export ${name}=${value}`);
    printLine(`HTTP API: ${api.url} (docs/API.md); local operator key (shown once):`);
    printLine(`  export API_URL=${api.url} API_KEY=${operatorKey}`);
    printLine('  curl -H "Authorization: Bearer $API_KEY" $API_URL/v1/jobs');
    printLine('Press Ctrl-C to stop.');
  }
  // Until Ctrl-C, or until the S3 server crashes: then everything stops and says so, rather than an API whose uploads
  // and imports all fail.
  const s3Exit = await new Promise<number | null | undefined>((resolveStop) => {
    process.once('SIGINT', () => resolveStop(undefined));
    process.once('SIGTERM', () => resolveStop(undefined));
    void environment.s3.stoppedByItself.then(resolveStop);
  });
  await api.close();
  await environment.stop();
  if (s3Exit !== undefined) {
    throw new Error(`the embedded S3 server stopped (exit code ${s3Exit}; its error is above): stopped the API and Postgres too. ${LOCAL_S3_LIMIT}`);
  }
}

const LOCAL_API_PORT = 8080;

/** Why the embedded S3 server (s3rver) most likely stopped by itself. */
const LOCAL_S3_LIMIT = 'It keeps each object as a file: a file name longer than about 240 bytes is one it cannot store (real S3 can)';

/** A new operator key named `local` (the previous one is revoked: keys are shown once, so each run makes its own). */
async function localOperatorKey(databaseUrl: string): Promise<string> {
  const pool = createPool(databaseUrl, { max: 1, applicationName: 'bulk-import-local' });
  try {
    await revokeApiKey(pool, 'local').catch(() => {});
    return (await createApiKey(pool, { name: 'local', role: 'operator' })).key;
  } finally {
    await pool.end();
  }
}
