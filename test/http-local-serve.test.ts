// `bulk-import local --serve`: the embedded servers and the HTTP API on them, with a local operator key printed once.
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CLI_ENTRY } from './support/worker-processes.js';

describe('bulk-import local --serve', () => {
  it('starts the API on the embedded servers and prints its URL and a working operator key', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'bulk-import-local-serve-'));
    await chmod(stateDir, 0o755); // the embedded Postgres runs as another user when the tests run as root
    const child = spawn(process.execPath, [CLI_ENTRY, 'local', '--serve', '--state-dir', stateDir, '--json'], {
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      let stdout = '';
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const printed = await new Promise<{ API_URL: string; API_KEY: string }>((resolve, reject) => {
        child.stdout.on('data', (chunk: Buffer) => {
          stdout += chunk.toString();
          try {
            resolve(JSON.parse(stdout) as { API_URL: string; API_KEY: string });
          } catch {
            // not the whole JSON yet
          }
        });
        void exited.then((code) => reject(new Error(`local --serve exited ${code}: ${stdout} ${stderr}`)));
      });
      expect(printed.API_URL).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const jobs = await fetch(`${printed.API_URL}/v1/jobs`, { headers: { authorization: `Bearer ${printed.API_KEY}` } });
      expect(jobs.status).toBe(200);

      // A second `local` on the same state directory refuses to take its database from the running one.
      const second = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        execFile(
          process.execPath,
          [CLI_ENTRY, 'local', '--state-dir', stateDir, '--sample-files', '1'],
          { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp' }, timeout: 60_000 },
          (error, _stdout, stderr) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stderr }),
        );
      });
      expect(second.code).not.toBe(0);
      expect(second.stderr).toMatch(/is in use by another running bulk-import \(pid \d+/);
      const still = await fetch(`${printed.API_URL}/v1/jobs`, { headers: { authorization: `Bearer ${printed.API_KEY}` } });
      expect(still.status).toBe(200);
      child.kill('SIGTERM');
      // It stops on SIGTERM (the embedded servers' own signal handling may end it with 143 first).
      expect([0, 143]).toContain(await exited);
    } finally {
      child.kill('SIGKILL');
      await rm(stateDir, { recursive: true, force: true });
    }
  });
});
