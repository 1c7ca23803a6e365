// The short form of the chaos suite (`npm run chaos`, bench/chaos/): one quick round per job kind — real
// `bulk-import worker` processes against a Postgres and an S3 server of this file's own, with faults injected at
// random points of the work (worker kill -9, Postgres restart / pause / pg_terminate_backend, S3 restart, S3 errors,
// resets and stalls) — and every invariant checked after it: each job in its expected end state, its writes counted
// once, no worker dead but those the suite killed. The seed is random unless CHAOS_SEED is set; a failure names it,
// and `npm run chaos -- --quick --seed <seed>` replays the same choices.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomSeed } from '../bench/chaos/rng.js';
import { formatTable, KINDS, runRound, startChaosEnvironment, type ChaosEnvironment, type RoundResult } from '../bench/chaos/suite.js';

const seed = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : randomSeed();
let env: ChaosEnvironment | undefined;

beforeAll(async () => {
  env = await startChaosEnvironment();
}, 120_000);
afterAll(async () => {
  await env?.close();
}, 60_000);

describe('chaos, quick form', () => {
  it('one quick round per job kind under injected faults: no invariant violated, no worker died on its own', async () => {
    const results: RoundResult[] = [];
    for (const [index, kind] of KINDS.entries()) {
      results.push(await runRound(env!, { round: index + 1, kind, seed, quick: true }));
    }
    const violations = results.flatMap((result) => result.violations.map((violation) => `round ${result.round} ${result.kind}: ${violation}`));
    const report = `seed ${seed} (replay: npm run chaos -- --quick --seed ${seed})\n${formatTable(results)}\n` +
      results.map((result) => `${result.kind}: ${result.faultLog.join('; ') || 'no fault injected'}`).join('\n');
    expect(violations, report).toEqual([]);
    expect(results.reduce((sum, result) => sum + result.unexpectedDeaths, 0), report).toBe(0);
  }, 240_000);
});
