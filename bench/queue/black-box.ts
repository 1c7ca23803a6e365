// The queue measured from outside, as deployed: `bulk-import worker` from the compiled build (`npm run build`, the
// image's dist/, no TypeScript loader), default settings but WORKER_CONCURRENCY, logs at info appended to a file,
// against graphile-worker 0.18 batched in its own process (bench/queue/graphile-process.ts) on the same Postgres.
// Each round pre-inserts N no-op jobs, starts the process(es), and times from the first spawn until the table holds
// no unfinished job (both read the same way: an EXISTS probe every POLL_MS; a count(*) over our table of 50,000 runs
// cost a quarter of the run's database time and was charged to us). Postgres's CPU time over the run (summed from
// /proc over its processes) divided by N is the database's cost per job, the figure that sizes a database for a
// given job rate. Rounds are paired and alternate which system goes first. Throughput is printed over the processing
// window (first job taken to last outcome stored: our jobs table's started_at/finished_at, graphile-worker's job:start
// and job:complete events), the issue's "first start to last finish", and from the spawn (start-up included: about
// 0.5 s for our CLI's modules against 0.2 s for graphile-worker's, a sixth of a 50,000-job round).
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { makeWorkerUtils } from 'graphile-worker';
import pg from 'pg';
import { createPool } from '../../worker/db/pool.js';
import { NOOP_KIND } from '../../worker/handlers/kinds.js';
import { enqueueJobs } from '../../worker/queue/enqueue.js';
import { median } from '../support/median.js';
import { buildCompiledWorker } from '../support/compiled-worker.js';
import { withClient } from '../support/pg-client.js';
import { CpuMeter, postgresCpuMeter } from '../support/process-cpu.js';
import { printStatements, resetStatements } from '../support/statements.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const POLL_MS = 50;
/** BENCH_WORKER_PROFILE=<dir>: our worker processes write V8 CPU profiles there (to look into where the time goes). */
const profileFlags = process.env.BENCH_WORKER_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_WORKER_PROFILE}`] : [];
const CHUNK = 5_000;
/**
 * BENCH_WORKER_SETTINGS="NAME=value …": settings of our worker processes beyond the defaults, to see what a feature
 * costs (e.g. JOB_STATE_NOTIFICATIONS=false); printed above the results. The issue's goal is with the defaults.
 */
const workerSettings = parseWorkerSettings(process.env.BENCH_WORKER_SETTINGS ?? '');

function parseWorkerSettings(text: string): Record<string, string> {
  const settings: Record<string, string> = {};
  for (const pair of text.split(/\s+/).filter(Boolean)) {
    const match = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(pair);
    if (!match) throw new Error(`BENCH_WORKER_SETTINGS: expected NAME=value pairs separated by spaces, got ${JSON.stringify(pair)}`);
    settings[match[1]!] = match[2]!;
  }
  return settings;
}

export interface BlackBoxSettings {
  jobs: number;
  concurrency: number;
  rounds: number;
  /** Numbers of our worker processes for the scale-out table. */
  scaleOut: number[];
}

interface Run {
  system: string;
  processes: number;
  /** From the first spawn until the table is drained: start-up included. */
  seconds: number;
  jobsPerSecond: number;
  /** The processing window: first job taken to last outcome stored (the issue's "first start to last finish"). */
  windowSeconds: number;
  windowJobsPerSecond: number;
  /** Milliseconds of Postgres CPU per job. */
  dbCpuMsPerJob: number;
  /** Milliseconds of the worker processes' CPU per job. */
  workerCpuMsPerJob: number;
  logLines: number;
}

async function unfinished(db: pg.Client, sql: string): Promise<number> {
  const { rows } = await db.query<{ n: number }>(sql);
  return rows[0]!.n;
}

async function timeRun(
  db: pg.Client,
  system: string,
  unfinishedSql: string,
  jobs: number,
  start: () => ChildProcess[],
  logFiles: string[],
  readWindow: () => Promise<{ firstStart: number; lastFinish: number }>,
): Promise<Run> {
  const postgres = postgresCpuMeter();
  // Made before the spawn, when none of its processes exists: each counts all its CPU, start-up included.
  const pids = new Set<number>();
  const workers = new CpuMeter((_cmdline, pid) => pids.has(pid));
  const started = performance.now();
  const children = start();
  for (const child of children) pids.add(child.pid!);
  // A process that exits before the table is drained (a start-up error) ends the run at once, not after 10 minutes.
  let exited: string | undefined;
  for (const child of children) child.once('exit', (code, signal) => (exited ??= `${system}: a process exited early (${signal ?? `code ${code}`})`));
  while ((await unfinished(db, unfinishedSql)) > 0) {
    if (exited) throw new Error(exited);
    workers.sample();
    postgres.sample();
    await sleep(POLL_MS);
    if (performance.now() - started > 600_000) throw new Error(`${system}: not done after 10 minutes`);
  }
  const seconds = (performance.now() - started) / 1000;
  const workerCpu = workers.elapsedMs();
  const pgCpu = postgres.elapsedMs();
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
        }),
    ),
  );
  const logLines = logFiles.reduce((sum, file) => sum + readFileSync(file, 'utf8').split('\n').filter(Boolean).length, 0);
  const { firstStart, lastFinish } = await readWindow();
  const windowSeconds = (lastFinish - firstStart) / 1000;
  return {
    system,
    processes: children.length,
    seconds,
    jobsPerSecond: jobs / seconds,
    windowSeconds,
    windowJobsPerSecond: jobs / windowSeconds,
    dbCpuMsPerJob: pgCpu / jobs,
    workerCpuMsPerJob: workerCpu / jobs,
    logLines,
  };
}

function spawnLogged(command: string[], env: Record<string, string>, logFile: string, cwd: string): ChildProcess {
  const out = openSync(logFile, 'a');
  const child = spawn(command[0]!, command.slice(1), {
    cwd,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', out, 'inherit'],
  });
  closeSync(out);
  return child;
}

async function runOurs(layout: string, databaseUrl: string, settings: BlackBoxSettings, processes: number, round: string): Promise<Run> {
  const pool = createPool(databaseUrl, { max: 4 });
  await pool.query('TRUNCATE jobs CASCADE');
  for (let offset = 0; offset < settings.jobs; offset += CHUNK) {
    const count = Math.min(CHUNK, settings.jobs - offset);
    await enqueueJobs(pool, NOOP_KIND, Array.from({ length: count }, (_, i) => ({ seq: offset + i })));
  }
  await pool.query('VACUUM ANALYZE jobs');
  await pool.end();
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  const statements = await resetStatements(db);
  const logFiles = Array.from({ length: processes }, (_, i) => join(layout, `ours-${round}-${processes}-${i}.log`));
  const env = {
    DATABASE_URL: databaseUrl,
    WORKER_CONCURRENCY: String(settings.concurrency),
    LOG_LEVEL: 'info',
    LOG_FORMAT: 'json',
    // The campaign mount does not exist here; only no-op jobs run.
    IMPORT_ROOT: layout,
    IMPORT_ROOT_REQUIRE_MOUNT: 'false',
    ...workerSettings,
  };
  try {
    const run = await timeRun(
      db,
      'bulk-import worker',
      `SELECT (EXISTS (SELECT 1 FROM jobs WHERE state = 'queued') OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running'))::int AS n`,
      settings.jobs,
      () => logFiles.map((file) => spawnLogged([process.execPath, ...profileFlags, 'bin/bulk-import.js', 'worker'], env, file, layout)),
      logFiles,
      async () => {
        const { rows } = await db.query<{ first_start: number; last_finish: number }>(
          `SELECT extract(epoch FROM min(started_at)) * 1000 AS first_start, extract(epoch FROM max(finished_at)) * 1000 AS last_finish FROM jobs`,
        );
        return { firstStart: Number(rows[0]!.first_start), lastFinish: Number(rows[0]!.last_finish) };
      },
    );
    const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM jobs WHERE state = 'succeeded'`);
    if (rows[0]!.n !== settings.jobs) throw new Error(`ours: ${rows[0]!.n} of ${settings.jobs} jobs succeeded`);
    if (statements) await printStatements(db, settings.jobs);
    return run;
  } finally {
    await db.end();
  }
}

async function runGraphile(layout: string, databaseUrl: string, settings: BlackBoxSettings, round: string): Promise<Run> {
  const utils = await makeWorkerUtils({ connectionString: databaseUrl });
  await utils.migrate();
  const db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
  try {
    await db.query('DELETE FROM graphile_worker._private_jobs');
    for (let offset = 0; offset < settings.jobs; offset += CHUNK) {
      const count = Math.min(CHUNK, settings.jobs - offset);
      await utils.addJobs(Array.from({ length: count }, (_, i) => ({ identifier: 'noop', payload: { seq: offset + i } })));
    }
    await db.query('VACUUM ANALYZE graphile_worker._private_jobs');
    const logFile = join(layout, `graphile-${round}.log`);
    const windowFile = join(layout, `graphile-${round}.window.json`);
    return await timeRun(
      db,
      'graphile-worker',
      'SELECT (EXISTS (SELECT 1 FROM graphile_worker._private_jobs))::int AS n',
      settings.jobs,
      () => [
        spawnLogged(
          [process.execPath, join(ROOT, 'bench/queue/graphile-process.ts')],
          { DATABASE_URL: databaseUrl, CONCURRENCY: String(settings.concurrency), LOG_FILE: logFile, WINDOW_FILE: windowFile },
          '/dev/null',
          ROOT,
        ),
      ],
      [logFile],
      async () => JSON.parse(readFileSync(windowFile, 'utf8')) as { firstStart: number; lastFinish: number },
    );
  } finally {
    await db.end();
    await utils.release();
  }
}

/**
 * Before each timed run: vacuum both databases and checkpoint, so no autovacuum of the previous run's dead rows (our
 * 100,000 old row versions, graphile-worker's 50,000 deleted rows) and no timed checkpoint lands inside the next run.
 * Without it one round in three ran at half speed with twice the database CPU.
 */
async function settle(urls: { ours: string; graphile: string }): Promise<void> {
  for (const url of [urls.ours, urls.graphile]) await withClient(url, (db) => db.query('VACUUM ANALYZE'));
  await withClient(urls.ours, (db) => db.query('CHECKPOINT'));
}

/** The paired rounds and the scale-out table; `urls` are two migrated, empty databases on one server. */
export async function runBlackBox(urls: { ours: string; graphile: string }, settings: BlackBoxSettings): Promise<void> {
  // graphile-process.ts runs without a loader, on Node's own type stripping (Node 24, as in .ci/run and the image).
  if (!(process.features as { typescript?: unknown }).typescript) throw new Error(`the black box needs Node.js 24 (this is ${process.version})`);
  // The image's layout in a temporary directory (worker/dev/compiled-layout.ts), without the dev tooling as in the image.
  const layout = mkdtempSync(join(tmpdir(), 'bench-black-box-'));
  await buildCompiledWorker(layout, (line) => console.warn(line));
  try {
    console.log(`\nblack box: the built \`bulk-import worker\` process vs graphile-worker batched in its own process`);
    console.log(`${settings.jobs} pre-inserted no-op jobs per round, concurrency ${settings.concurrency}, logs at info to a file, ${settings.rounds} paired rounds`);
    const changed = Object.entries(workerSettings).map(([name, value]) => `${name}=${value}`);
    console.log(changed.length > 0 ? `our worker NOT at its defaults: ${changed.join(' ')} (BENCH_WORKER_SETTINGS)\n` : 'our worker at its defaults\n');
    const pairs: Array<{ ours: Run; graphile: Run }> = [];
    for (let round = 1; round <= settings.rounds; round += 1) {
      const order = round % 2 === 1 ? (['ours', 'graphile'] as const) : (['graphile', 'ours'] as const);
      const pair: Partial<{ ours: Run; graphile: Run }> = {};
      for (const system of order) {
        await settle(urls);
        pair[system] = system === 'ours' ? await runOurs(layout, urls.ours, settings, 1, String(round)) : await runGraphile(layout, urls.graphile, settings, String(round));
        await sleep(500);
      }
      pairs.push(pair as { ours: Run; graphile: Run });
      console.log(
        `  round ${round}: ours ${pair.ours!.windowJobsPerSecond.toFixed(0)} jobs/s (${pair.ours!.jobsPerSecond.toFixed(0)} with start-up), ` +
          `graphile-worker ${pair.graphile!.windowJobsPerSecond.toFixed(0)} jobs/s (${pair.graphile!.jobsPerSecond.toFixed(0)})`,
      );
    }
    console.log('\njobs/s over the processing window (first job taken to last outcome stored) and, in brackets, from the spawn of the process:');
    console.log('| round | ours jobs/s | graphile-worker jobs/s | ratio | ours DB CPU ms/job | graphile DB CPU ms/job | ours worker CPU ms/job | graphile worker CPU ms/job | ours log lines |');
    console.log('|---|---|---|---|---|---|---|---|---|');
    pairs.forEach(({ ours, graphile }, index) => {
      console.log(
        `| ${index + 1} | ${ours.windowJobsPerSecond.toFixed(0)} (${ours.jobsPerSecond.toFixed(0)}) | ${graphile.windowJobsPerSecond.toFixed(0)} (${graphile.jobsPerSecond.toFixed(0)}) | ` +
          `${(ours.windowJobsPerSecond / graphile.windowJobsPerSecond).toFixed(2)}× (${(ours.jobsPerSecond / graphile.jobsPerSecond).toFixed(2)}×) | ` +
          `${ours.dbCpuMsPerJob.toFixed(3)} | ${graphile.dbCpuMsPerJob.toFixed(3)} | ${ours.workerCpuMsPerJob.toFixed(3)} | ${graphile.workerCpuMsPerJob.toFixed(3)} | ${ours.logLines} |`,
      );
    });
    const windowRatios = pairs.map(({ ours, graphile }) => ours.windowJobsPerSecond / graphile.windowJobsPerSecond);
    const spawnRatios = pairs.map(({ ours, graphile }) => ours.jobsPerSecond / graphile.jobsPerSecond);
    console.log(`\nmedian ratio of the paired rounds: ${median(windowRatios).toFixed(2)}× over the processing window (goal ≥ 1.3×), ${median(spawnRatios).toFixed(2)}× from spawn`);

    if (settings.scaleOut.length > 0) {
      console.log('\nscale-out: our worker processes on one Postgres (each at the concurrency above)');
      console.log('| processes | jobs/s (processing window) | jobs/s (from spawn) | Postgres CPU ms/job | worker CPU ms/job |');
      console.log('|---|---|---|---|---|');
      for (const processes of settings.scaleOut) {
        await settle(urls);
        const run = await runOurs(layout, urls.ours, settings, processes, `scale-${processes}`);
        console.log(`| ${processes} | ${run.windowJobsPerSecond.toFixed(0)} | ${run.jobsPerSecond.toFixed(0)} | ${run.dbCpuMsPerJob.toFixed(3)} | ${run.workerCpuMsPerJob.toFixed(3)} |`);
        await sleep(500);
      }
    }
  } finally {
    if (process.env.BENCH_KEEP_LAYOUT) console.log(`layout kept: ${layout}`);
    else rmSync(layout, { recursive: true, force: true });
  }
}
