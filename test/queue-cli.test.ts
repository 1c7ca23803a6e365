// The queue commands of the `bulk-import` CLI, run as real processes: enqueue (with reuse), worker, and their errors.
import { describe, expect, it } from 'vitest';
import { freePort } from '../worker/dev/free-port.js';
import { requireJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { runCli, runCliJson } from './support/cli-runner.js';

const env = useTestEnvironment();

describe('bulk-import enqueue and worker', () => {
  it('enqueues, reuses the active run for the same dedupe key, and a worker runs it until idle', async () => {
    const first = await runCliJson<{ id: number; state: string; reused: boolean }>(env, [
      'enqueue', 'noop', '--payload', '{"sleepMs": 5}', '--dedupe-key', 'smoke-1', '--tenant', 'acme', '--max-attempts', '2',
    ]);
    expect(first).toMatchObject({ state: 'queued', reused: false });
    // The key is the tenant's: the same tenant reuses the run (without --tenant it is another scope, a new run).
    const again = await runCli(env, ['enqueue', 'noop', '--payload', '{"sleepMs": 5}', '--dedupe-key', 'smoke-1', '--tenant', 'acme']);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(new RegExp(`^Job ${first.id} \\(noop\\) is already queued with dedupe key smoke-1: reusing it`));

    const worker = await runCli(env, ['worker', '--exit-when-idle', '--concurrency', '2', '--kinds', 'noop']);
    expect(worker.code).toBe(0);
    const job = await requireJob(env.pool, first.id);
    expect(job).toMatchObject({ state: 'succeeded', tenantId: 'acme', maxAttempts: 2, result: { sleptMs: 5 } });

    const after = await runCliJson<{ id: number; reused: boolean }>(env, ['enqueue', 'noop', '--dedupe-key', 'smoke-1', '--tenant', 'acme']);
    expect(after.reused).toBe(false);
    expect(after.id).not.toBe(first.id);
  });

  it('refuses bad input with a one-line error and a non-zero exit, writing nothing', async () => {
    const before = (await env.pool.query('SELECT count(*)::int AS n FROM jobs')).rows[0].n;
    const badPayload = await runCli(env, ['enqueue', 'noop', '--payload', '{"sleepMs": -1}', '--json']);
    expect(badPayload.code).not.toBe(0);
    expect(badPayload.stdout).toBe('');
    expect(badPayload.stderr.trim()).toBe(
      'bulk-import: invalid noop payload: "sleepMs" must be a whole number from 0 to 3600000, got -1',
    );
    const notJson = await runCli(env, ['enqueue', 'noop', '--payload', '{sleepMs: 1}']);
    expect(notJson.code).not.toBe(0);
    expect(notJson.stderr).toMatch(/--payload.*not valid JSON/);
    const unknownKind = await runCli(env, ['enqueue', 'no-such-kind']);
    expect(unknownKind.code).not.toBe(0);
    expect(unknownKind.stderr).toMatch(/unknown job kind "no-such-kind"; known kinds: .*noop/);
    const unknownWorkerKind = await runCli(env, ['worker', '--kinds', 'nope', '--exit-when-idle']);
    // A configuration error, as any wrong variable: exit 78, naming the setting.
    expect(unknownWorkerKind.code).toBe(78);
    expect(unknownWorkerKind.stderr).toMatch(/WORKER_KINDS \(or --kinds\) names unknown job kind\(s\) nope/);
    // Said before the worker waits for its database: with none listening and a long startup wait, it still fails at
    // once (a wait would outlast the runner's 60 s timeout and end without this line).
    const noDatabase = await runCli(env, ['worker', '--kinds', 'nope', '--exit-when-idle'], {
      DATABASE_URL: `postgres://nobody:secret@127.0.0.1:${await freePort()}/none`,
      DATABASE_STARTUP_TIMEOUT_MS: '300000',
    });
    expect(noDatabase.code).toBe(78);
    expect(noDatabase.stderr.trim()).toMatch(/^bulk-import: WORKER_KINDS \(or --kinds\) names unknown job kind\(s\) nope; known: /);
    const typoCeiling = await runCli(env, ['worker', '--exit-when-idle'], { WORKER_KIND_CONCURRENCY: 'csv-validate=2' });
    expect(typoCeiling.code).toBe(78);
    expect(typoCeiling.stderr).toMatch(/WORKER_KIND_CONCURRENCY names unknown job kind\(s\) csv-validate; known: .*csv-import/);
    const badConfig = await runCli(env, ['worker', '--exit-when-idle'], { WORKER_CONCURRENCY: 'many' });
    expect(badConfig.code).toBe(78);
    expect(badConfig.stderr).toMatch(/WORKER_CONCURRENCY="many" is invalid: expected a whole number from 1 to 1000/);
    expect((await env.pool.query('SELECT count(*)::int AS n FROM jobs')).rows[0].n).toBe(before);
  });
});
