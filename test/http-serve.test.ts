// `bulk-import serve` as the real process: it starts on the worker's configuration, logs where it listens, answers
// with a key made by the CLI, and stops cleanly on SIGTERM.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { useTestEnvironment } from './harness.js';
import { runCliJson } from './support/cli-runner.js';
import { CLI_ENTRY } from './support/worker-processes.js';

const env = useTestEnvironment();

describe('bulk-import serve', () => {
  it('serves the API on the configured database and stops on SIGTERM', async () => {
    const { key } = await runCliJson<{ key: string }>(env, ['api-keys', 'create', '--name', 'ops', '--role', 'operator']);
    const child = spawn(process.execPath, [CLI_ENTRY, 'serve', '--port', '0', '--host', '127.0.0.1'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...env.processEnv, LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const lines: string[] = [];
    const address = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        lines.push(line);
        const parsed = JSON.parse(line) as { msg: string; address?: string };
        if (parsed.msg === 'API listening') resolve(parsed.address!);
      });
      void exited.then((code) => reject(new Error(`serve exited ${code}: ${lines.join('\n')}`)));
    });
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
