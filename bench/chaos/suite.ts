// One chaos round: a fresh database and bucket, two `bulk-import worker` processes, one job kind's work, faults
// injected at random points of its progress (seeded), then the invariants. Used by `npm run chaos` (main.ts) and by
// test/chaos-quick.test.ts.
import { mkdir } from 'node:fs/promises';
import type { Pool } from '../../worker/db/pool.js';
import { prepareRound, type ChaosEnvironment } from './environment.js';
import { FAULT_TYPES, injectFault, type FaultType } from './faults.js';
import { createScenario, scratchOf, TERMINAL, type JobSnapshot, type KindName, type ScenarioContext } from './kinds.js';
import { createRng } from './rng.js';
import { WorkerFleet } from './workers.js';

export { startChaosEnvironment, type ChaosEnvironment } from './environment.js';
export { FAULT_TYPES, type FaultType } from './faults.js';
export { KINDS, type KindName } from './kinds.js';

export interface RoundOptions {
  /** Running number of the round (names its database, bucket, workers and logs). */
  round: number;
  kind: KindName;
  /** The run's seed; the round's own stream is derived from it and the round number. */
  seed: number;
  quick: boolean;
  /** How long a pg-pause freezes Postgres (default 10 s, 2 s quick). */
  pauseMs?: number;
  /** Only these fault types (default: every type that touches what the kind uses). */
  faultTypes?: readonly FaultType[];
  /** How many faults a round plans, [min, max] (default [2, 4], [1, 2] quick). */
  faultsPerRound?: readonly [number, number];
  /** A round whose jobs have not all ended by then is a violation (default 180 s, 90 s quick; a round takes 10-65 s). */
  deadlineMs?: number;
  log?: (line: string) => void;
}

export interface RoundResult {
  round: number;
  kind: KindName;
  faults: Record<FaultType, number>;
  /** What each injected fault did, in order. */
  faultLog: string[];
  violations: string[];
  unexpectedDeaths: number;
  jobs: number;
  /** Attempts beyond one per job (retries, rescues after kills). */
  extraAttempts: number;
  durationMs: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function emptyFaultCounts(): Record<FaultType, number> {
  return Object.fromEntries(FAULT_TYPES.map((type) => [type, 0])) as Record<FaultType, number>;
}

async function readJobs(pool: Pool, ids: number[]): Promise<JobSnapshot[]> {
  const { rows } = await pool.query<JobSnapshot>(
    `SELECT id, kind, tenant_id AS "tenantId", state, attempts, max_attempts AS "maxAttempts", progress, result,
            last_error AS "lastError"
     FROM jobs WHERE id = ANY($1) ORDER BY id`,
    [ids],
  );
  return rows;
}

/** Tries a read of the harness's again while the database is away (restarting, frozen). */
async function retrying<T>(work: () => Promise<T>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await work();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(200);
    }
  }
}

export async function runRound(env: ChaosEnvironment, options: RoundOptions): Promise<RoundResult> {
  const started = Date.now();
  const { quick, kind } = options;
  const log = options.log ?? (() => {});
  const rng = createRng(options.seed).fork(options.round);
  const name = `r${options.round}_${kind.replace(/-/g, '_')}`;
  const pauseMs = options.pauseMs ?? (quick ? 2_000 : 10_000);
  const [minFaults, maxFaults] = options.faultsPerRound ?? (quick ? [1, 2] : [2, 4]);
  const deadlineMs = options.deadlineMs ?? (quick ? 90_000 : 180_000);
  const faults = emptyFaultCounts();
  const faultLog: string[] = [];
  const violations: string[] = [];
  let jobs: JobSnapshot[] = [];

  const resources = await prepareRound(env, name);
  const scratch = scratchOf(env, name);
  await mkdir(scratch, { recursive: true });
  const context: ScenarioContext = { env, round: resources, rng, quick, scratch };
  const scenario = createScenario(kind, quick);
  let fleet: WorkerFleet | undefined;
  try {
    await scenario.setup(context);
    fleet = new WorkerFleet({ env: { ...resources.processEnv, ...scenario.workerEnv(context) }, logDir: scratch, name });
    fleet.spawn();
    fleet.spawn();
    await fleet.waitStarted(60_000);
    const ids = await scenario.submit(context);

    const applicable = scenario.faults.filter((type) => !options.faultTypes || options.faultTypes.includes(type));
    const planned = applicable.length === 0 ? 0 : rng.int(minFaults, maxFaults);
    const plan = Array.from({ length: planned }, () => ({
      type: rng.pick(applicable),
      at: 0.05 + rng.next() * 0.8,
      jitterMs: rng.int(0, 400),
    })).sort((a, b) => a.at - b.at);
    log(`round ${options.round} ${kind}: ${ids.length} jobs, faults planned: ${plan.map((fault) => `${fault.type}@${Math.round(fault.at * 100)}%`).join(', ') || 'none'}`);

    // The watcher reads the jobs and moves the round on; it ends when every job has ended, or at the deadline.
    let finished = false;
    let timedOut = false;
    const watcher = (async () => {
      const deadline = Date.now() + deadlineMs;
      for (;;) {
        const current = await readJobs(resources.pool, ids).catch(() => undefined);
        if (current) {
          jobs = current;
          if (await scenario.advance(context, current).catch(() => false)) break;
        }
        if (Date.now() > deadline) {
          timedOut = true;
          break;
        }
        await sleep(150);
      }
      finished = true;
    })();

    const faultContext = { env, round: resources, fleet, rng, pauseMs, quick };
    const progress = () => {
      const value = jobs.length === 0 ? 0 : scenario.progress(jobs);
      return Number.isFinite(value) ? value : 0;
    };
    for (const fault of plan) {
      while (!finished && progress() < fault.at) await sleep(25);
      if (finished) break;
      await sleep(fault.jitterMs);
      if (finished || progress() >= 1) break;
      const at = Math.round(progress() * 100);
      try {
        const what = await injectFault(fault.type, faultContext);
        faults[fault.type] += 1;
        faultLog.push(what);
        log(`  ${fault.type} at ${at}%: ${what}`);
      } catch (error) {
        // The harness's own step failed (e.g. listing sessions while the database restarts): not the worker's fault.
        log(`  ${fault.type}: could not inject (${(error as Error).message})`);
      }
    }
    await watcher;

    if (timedOut) {
      const unfinished = jobs.filter((job) => !TERMINAL.has(job.state));
      const states = Object.entries(
        jobs.reduce<Record<string, number>>((counts, job) => ({ ...counts, [job.state]: (counts[job.state] ?? 0) + 1 }), {}),
      );
      const first = unfinished[0];
      violations.push(
        `${kind}: not every job ended within ${Math.round(deadlineMs / 1000)} s (${states.map(([state, n]) => `${state} ${n}`).join(', ')})` +
          (first ? `; e.g. job ${first.id} ${first.kind} ${first.state}, attempts ${first.attempts}, progress ${JSON.stringify(first.progress)}, last error ${JSON.stringify(first.lastError)?.slice(0, 300)}` : ''),
      );
    }
    await fleet.stopAll();
    if (!timedOut) {
      jobs = await retrying(() => readJobs(resources.pool, ids));
      violations.push(...(await retrying(() => scenario.check(context, jobs))));
    }
  } catch (error) {
    violations.push(`${kind}: the round could not run: ${(error as Error).stack ?? String(error)}`);
  } finally {
    // Whatever happened, leave the servers whole for the next round.
    await env.postgres.resume().catch(() => {});
    await env.s3Server.start().catch(() => {});
    env.proxy.decide = () => 'pass';
    if (fleet) {
      await fleet.dispose();
      violations.push(...fleet.violations);
    }
    await scenario.dispose(context).catch(() => {});
    await resources.dispose().catch(() => {});
  }
  return {
    round: options.round,
    kind,
    faults,
    faultLog,
    violations,
    unexpectedDeaths: fleet?.unexpectedDeaths ?? 0,
    jobs: jobs.length,
    extraAttempts: jobs.reduce((sum, job) => sum + Math.max(0, job.attempts - 1), 0),
    durationMs: Date.now() - started,
  };
}

/** The run's table: one line per kind and a total — rounds, faults by type, violations, unexpected deaths, time. */
export function formatTable(results: RoundResult[]): string {
  const kinds = [...new Set(results.map((result) => result.kind))];
  const header = ['kind', 'rounds', 'jobs', ...FAULT_TYPES, 'retries', 'violations', 'deaths', 'duration'];
  const line = (label: string, group: RoundResult[]) => {
    const sum = (pick: (result: RoundResult) => number) => group.reduce((total, result) => total + pick(result), 0);
    return [
      label,
      String(group.length),
      String(sum((result) => result.jobs)),
      ...FAULT_TYPES.map((type) => String(sum((result) => result.faults[type]))),
      String(sum((result) => result.extraAttempts)),
      String(sum((result) => result.violations.length)),
      String(sum((result) => result.unexpectedDeaths)),
      `${(sum((result) => result.durationMs) / 1000).toFixed(1)} s`,
    ];
  };
  const rows = [header, ...kinds.map((kind) => line(kind, results.filter((result) => result.kind === kind))), line('total', results)];
  const widths = header.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  const format = (row: string[]) => `| ${row.map((cell, column) => (column === 0 ? cell.padEnd(widths[column]!) : cell.padStart(widths[column]!))).join(' | ')} |`;
  const rule = `|${widths.map((width, column) => (column === 0 ? '-'.repeat(width + 2) : `${'-'.repeat(width + 1)}:`)).join('|')}|`;
  return [format(header), rule, ...rows.slice(1).map(format)].join('\n');
}
