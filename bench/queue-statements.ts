// The queue's two hot statements on their own, against the embedded Postgres (Linux: reads the backend's CPU time
// from /proc):
//   1. claim + completion in batches: the database's CPU per job, with the kind CHECK as migrated and with the regular
//      expression it replaced (migration 20261206213000), alternating;
//   2. a completion batch among runs held by other workers: wall time per job of the shipped completion (completeJobs:
//      id = ANY, nested loops off) against the statement before it, with 0 and 20,000 runs running elsewhere.
//   npm run bench:queue-statements [-- --jobs 50000 --batch 500 --rounds 3 --others 20000]
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { integerArrayLiteral, wordArrayLiteral } from '../worker/db/array-literal.js';
import { createPool } from '../worker/db/pool.js';
import { claimJobs } from '../worker/queue/claim.js';
import { completeJobs, type Completion } from '../worker/queue/finish.js';
import { startBenchDatabase } from './support/bench-database.js';
import { processCpuMs } from './support/process-cpu.js';

const option = (name: string, fallback: number): number => {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? Number(process.argv[index + 1]) : fallback;
};
const settings = { jobs: option('jobs', 50_000), batch: option('batch', 500), rounds: option('rounds', 3), others: option('others', 20_000) };

const REGEX_CHECK = `CHECK (kind ~ '^[a-z0-9][a-z0-9-]{0,63}$')`;
const PLAIN_CHECK = `CHECK (octet_length(kind) BETWEEN 1 AND 64 AND left(kind, 1) <> '-' AND ltrim(kind, 'abcdefghijklmnopqrstuvwxyz0123456789-') = '') NOT VALID`;

/** The completion as it was before fa80343: joined to the worker's running runs, planned as the planner liked. */
function completionBefore(workerId: string, completions: Completion[]): { text: string; values: unknown[] } {
  return {
    text: `UPDATE jobs SET state = done.state, result = coalesce(done.result, jobs.result), progress = coalesce(done.progress, jobs.progress),
       lease_owner = NULL, lease_expires_at = NULL, outage_started_at = NULL, outage_dependency = NULL,
       finished_at = CASE WHEN done.state = 'review_ready' THEN NULL ELSE now() END, updated_at = now()
     FROM unnest($2::bigint[], $3::int[], $4::text[], $5::jsonb[], $6::jsonb[]) AS done(id, attempt, state, result, progress)
     WHERE jobs.id = done.id AND jobs.attempts = done.attempt AND jobs.lease_owner = $1 AND jobs.state = 'running' AND jobs.archived = false
     RETURNING jobs.id`,
    values: [workerId, integerArrayLiteral(completions.map((c) => c.jobId)), integerArrayLiteral(completions.map((c) => c.attempt)),
      wordArrayLiteral(completions.map((c) => c.state)), completions.map(() => null), completions.map(() => null)],
  };
}

/** CPU time (ms) of the backend serving `client`, as a function to call before and after. */
async function backendCpuMs(client: pg.Client): Promise<() => number> {
  const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  return () => processCpuMs(pid);
}

async function seedQueued(client: pg.Client, count: number): Promise<void> {
  await client.query(`INSERT INTO jobs (kind, payload) SELECT 'noop', '{}'::jsonb FROM generate_series(1, $1)`, [count]);
}

async function claimAndComplete(url: string): Promise<void> {
  console.log(`\n1. claim + completion, batches of ${settings.batch}, ${settings.jobs} runs: database CPU per job (µs)\n`);
  console.log('| round | kind check | claim | completion | total |\n|---|---|---|---|---|');
  const client = new pg.Client(url);
  await client.connect();
  try {
    const cpu = await backendCpuMs(client);
    for (let round = 1; round <= settings.rounds; round += 1) {
      for (const [name, check] of [['regex (before)', REGEX_CHECK], ['no regex (as migrated)', PLAIN_CHECK]] as const) {
        await client.query(`ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check; ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check ${check}`);
        await client.query('TRUNCATE jobs');
        await seedQueued(client, settings.jobs);
        await client.query('VACUUM ANALYZE jobs_live');
        let claimMs = 0;
        let completeMs = 0;
        for (;;) {
          let started = cpu();
          const jobs = await claimJobs(client, { workerId: 'bench', limit: settings.batch, leaseMs: 60_000, kinds: ['noop'] });
          claimMs += cpu() - started;
          if (jobs.length === 0) break;
          started = cpu();
          // A client, not a pool: the statement runs on this backend, whose CPU is measured (no SET LOCAL; on a fresh
          // table the plan is the hash join either way).
          await completeJobs(client, 'bench', jobs.map((job) => ({ jobId: job.id, attempt: job.attempt, state: 'succeeded' as const })));
          completeMs += cpu() - started;
        }
        const perJob = (ms: number) => ((ms * 1000) / settings.jobs).toFixed(1);
        console.log(`| ${round} | ${name} | ${perJob(claimMs)} | ${perJob(completeMs)} | ${perJob(claimMs + completeMs)} |`);
      }
    }
    await client.query(`ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check; ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check ${PLAIN_CHECK}`);
  } finally {
    await client.end();
  }
}

async function completionAmongOthers(url: string): Promise<void> {
  console.log(`\n2. a completion batch of ${settings.batch} among runs held by other workers: wall time per job (µs), 20 batches\n`);
  console.log('| runs held by others | before fa80343 | shipped (id = ANY, nested loops off) |\n|---|---|---|');
  const pool = createPool(url, { max: 1 });
  const client = new pg.Client(url);
  await client.connect();
  await pool.query('SELECT 1'); // its connection made (and authenticated) before anything is timed
  try {
    for (const others of [0, settings.others]) {
      const cells: string[] = [];
      for (const shipped of [false, true]) {
        await client.query('TRUNCATE jobs');
        await client.query(`INSERT INTO jobs (kind, payload, state, lease_owner, lease_expires_at, attempts)
          SELECT 'noop', '{}', 'running', 'other-worker', now() + interval '1 hour', 1 FROM generate_series(1, $1)`, [others]);
        await seedQueued(client, 20 * settings.batch);
        // Analyzed before this worker claims: a worker's id is never in the statistics.
        await client.query('VACUUM ANALYZE jobs_live');
        let elapsed = 0;
        for (let batch = 0; batch < 20; batch += 1) {
          const jobs = await claimJobs(client, { workerId: 'bench', limit: settings.batch, leaseMs: 60_000, kinds: ['noop'] });
          const completions = jobs.map((job) => ({ jobId: job.id, attempt: job.attempt, state: 'succeeded' as const }));
          const started = performance.now();
          if (shipped) await completeJobs(pool, 'bench', completions);
          else await client.query(completionBefore('bench', completions));
          elapsed += performance.now() - started;
        }
        cells.push(((elapsed * 1000) / (20 * settings.batch)).toFixed(1));
      }
      console.log(`| ${others} | ${cells[0]} | ${cells[1]} |`);
    }
  } finally {
    await client.end();
    await pool.end();
  }
}

const database = await startBenchDatabase('bench_queue_statements');
try {
  console.log(`Node ${process.version}; settings: ${JSON.stringify(settings)}`);
  await claimAndComplete(database.url);
  await completionAmongOthers(database.url);
} finally {
  await database.stop();
}
