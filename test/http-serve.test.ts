// `bulk-import serve` as the real process: it starts on the worker's configuration, logs where it listens, answers
// with a key made by the CLI, and stops cleanly on SIGTERM.
import { describe, expect, it } from 'vitest';
import { useTestEnvironment } from './harness.js';
import { runCliJson } from './support/cli-runner.js';
import { startServeProcess } from './support/serve-process.js';

const env = useTestEnvironment();

describe('bulk-import serve', () => {
  it('serves the API on the configured database and stops on SIGTERM', async () => {
    const { key } = await runCliJson<{ key: string }>(env, ['api-keys', 'create', '--name', 'ops', '--role', 'operator']);
    const { child, address, lines, exited } = await startServeProcess(env);
    expect((await fetch(`${address}/readyz`)).status).toBe(200);
    const submitted = await fetch(`${address}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'noop' }),
    });
    expect(submitted.status).toBe(201);
    expect(((await submitted.json()) as { job: { startedBy: string } }).job.startedBy).toBe('ops');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(lines.join('\n')).not.toContain(key);
  });
});
