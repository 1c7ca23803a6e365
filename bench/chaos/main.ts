// `npm run chaos`: rounds of real worker processes under injected faults (worker kill -9, Postgres restart, pause and
// pg_terminate_backend, S3 server restart, S3 errors/resets/stalls through a proxy), each round's invariants checked;
// prints a table and exits non-zero on any violation or unexpected worker death. Loopback only.
//
//   npm run chaos -- [--rounds N] [--kinds noop,mass-import,csv,backfill] [--seed S] [--quick] [--pause-ms MS]
//                    [--faults kill-worker,pg-restart,…] [--max-minutes M] [--keep]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { CSV_FINALIZE_KIND, CSV_IMPORT_KIND } from '../../worker/handlers/kinds.js';
import { randomSeed } from './rng.js';
import {
  FAULT_TYPES, formatTable, KINDS, runRound, startChaosEnvironment, type KindName, type RoundResult,
} from './suite.js';

const USAGE = `usage: npm run chaos -- [--rounds N] [--kinds ${KINDS.join(',')}] [--seed S] [--quick] [--pause-ms MS]
                     [--faults ${FAULT_TYPES.join(',')}] [--max-minutes M] [--keep]`;

function list<T extends string>(value: string | undefined, allowed: readonly T[], what: string, aliases: Record<string, T> = {}): T[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((item) => item.trim()).filter(Boolean).map((item) => aliases[item] ?? item);
  for (const item of items) {
    if (!allowed.includes(item as T)) throw new Error(`unknown ${what} "${item}" (one of ${allowed.join(', ')})`);
  }
  return items as T[];
}

function integer(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 0) throw new Error(`--${name} must be a non-negative integer, got ${value}`);
  return parsed;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string' },
      kinds: { type: 'string' },
      seed: { type: 'string' },
      quick: { type: 'boolean', default: false },
      'pause-ms': { type: 'string' },
      faults: { type: 'string' },
      'max-minutes': { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const quick = values.quick ?? false;
  const kinds = list(values.kinds, KINDS, 'kind', { [CSV_IMPORT_KIND]: 'csv', [CSV_FINALIZE_KIND]: 'csv' }) ?? [...KINDS];
  const faultTypes = list(values.faults, FAULT_TYPES, 'fault');
  const rounds = integer(values.rounds, 'rounds', quick ? kinds.length : 8);
  const seed = integer(values.seed, 'seed', randomSeed());
  const pauseMs = integer(values['pause-ms'], 'pause-ms', quick ? 2_000 : 10_000);
  const maxMinutes = integer(values['max-minutes'], 'max-minutes', 25);
  const stopAt = Date.now() + maxMinutes * 60_000;

  const dir = await mkdtemp(join(tmpdir(), 'bulk-import-chaos-'));
  console.log(`chaos: seed ${seed} (--seed ${seed} repeats the choices), ${rounds} rounds of ${kinds.join(', ')}` +
    `${quick ? ', quick' : ''}, pg-pause ${pauseMs} ms, faults ${(faultTypes ?? FAULT_TYPES).join(', ')}; scratch ${dir}`);
  const env = await startChaosEnvironment({ dir });
  const results: RoundResult[] = [];
  const started = Date.now();
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    console.log('interrupted: finishing the current round');
  };
  process.once('SIGINT', onSignal);
  try {
    for (let round = 1; round <= rounds && !interrupted; round += 1) {
      if (Date.now() > stopAt) {
        console.log(`time bound of ${maxMinutes} min reached after ${round - 1} rounds`);
        break;
      }
      const kind: KindName = kinds[(round - 1) % kinds.length]!;
      const result = await runRound(env, { round, kind, seed, quick, pauseMs, faultTypes, log: (line) => console.log(line) });
      results.push(result);
      const injected = result.faultLog.length;
      console.log(
        `round ${round} ${kind}: ${result.jobs} jobs, ${injected} faults, ${result.extraAttempts} retries, ` +
          `${result.violations.length} violations, ${(result.durationMs / 1000).toFixed(1)} s`,
      );
      for (const violation of result.violations) console.log(`  VIOLATION: ${violation}`);
    }
  } finally {
    process.removeListener('SIGINT', onSignal);
    await env.close();
  }
  const violations = results.flatMap((result) => result.violations.map((violation) => `round ${result.round} ${result.kind}: ${violation}`));
  const deaths = results.reduce((sum, result) => sum + result.unexpectedDeaths, 0);
  console.log('');
  console.log(`seed ${seed}, ${results.length} rounds, ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(formatTable(results));
  if (violations.length) {
    console.log('');
    console.log(`${violations.length} invariant violations (worker logs under ${dir}/rounds):`);
    for (const violation of violations) console.log(`- ${violation}`);
  }
  const failed = violations.length > 0 || deaths > 0;
  if (!failed && !values.keep) await rm(dir, { recursive: true, force: true });
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error instanceof Error ? error.message : error);
    console.error(USAGE);
    process.exit(2);
  },
);
