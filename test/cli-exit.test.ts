// Output through a pipe arrives whole: into a pipe stdout's writes are asynchronous, and an exit right after a large
// print cut it short (the CLI once exited after every command; now only the worker asks to, worker/cli/process-exit.ts,
// and its exit waits for stdout and stderr too).
import { describe, expect, it } from 'vitest';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';

const env = useTestEnvironment();

describe('the CLI exit', () => {
  it('a listing far larger than a pipe holds arrives whole through the pipe', async () => {
    await env.pool.query(
      `INSERT INTO jobs (kind, tenant_id, payload, state, attempts, finished_at, last_error)
       SELECT 'noop', 'tenant-' || g, '{}', 'failed', 1, now(),
         jsonb_build_object('code', 'X', 'class', 'permanent', 'message', repeat('a long failure message ', 40))
       FROM generate_series(1, 500) g`,
    );
    const result = await runCli(env, ['jobs', '--limit', '500', '--json']);
    expect(result.code).toBe(0);
    // Several times the 64 KiB a pipe buffers, printed in one write just before the command returns.
    expect(result.stdout.length).toBeGreaterThan(4 * 65_536);
    const runs = JSON.parse(result.stdout) as unknown[];
    expect(runs).toHaveLength(500);
  });
});
