// The container health check against a real worker process: healthy while its poll loop turns, unhealthy once the
// process is frozen (SIGSTOP) past the threshold, unhealthy without a heartbeat file; --check-database and
// --database-only (the check by hand, without a worker).
import { execFile } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
let dir = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ops-health-'));
});
afterEach(async () => killAll(spawned.splice(0)));
afterAll(async () => {
  await killAll(spawned);
  await rm(dir, { recursive: true, force: true });
});

interface CheckResult {
  code: number;
  stdout: string;
}

function healthcheck(extraEnv: Record<string, string>, args: string[] = []): Promise<CheckResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'scripts/healthcheck.ts', ...args],
      { cwd: ROOT, env: { PATH: process.env.PATH ?? '', ...env.processEnv, ...extraEnv }, timeout: 30_000 },
      (error, stdout) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout }),
    );
  });
}

describe('healthcheck script', () => {
  it('exits 0 while the worker runs, non-zero once it is frozen past HEALTH_MAX_AGE_MS, 0 again when it resumes', async () => {
    const file = join(dir, 'frozen.heartbeat');
    // The check runs with the task's environment, as in ECS: a poll interval within a quarter of the limit. The limit
    // leaves a running worker on a busy machine a few seconds of stalled loop turns (touches come once a second).
    const limitMs = 4_000;
    const health = { HEALTH_HEARTBEAT_FILE: file, HEALTH_MAX_AGE_MS: String(limitMs), WORKER_POLL_INTERVAL_MS: '100' };
    const worker = spawnWorker(env, { env: health });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
    await waitFor(() => stat(file).then(() => true, () => false));

    const alive = await healthcheck(health);
    expect(alive.code).toBe(0);
    expect(alive.stdout).toMatch(/^healthy: heartbeat \d+ ms old \(limit 4000 ms\)\n$/);

    worker.kill('SIGSTOP');
    try {
      // The heartbeat ages past the threshold while the process cannot run: read from the file itself, whichever touch
      // was its last.
      await waitFor(async () => Date.now() - (await stat(file)).mtimeMs > limitMs + 100, 15_000, 100);
      const frozen = await healthcheck(health);
      expect(frozen.code).toBe(1);
      expect(frozen.stdout.trim().split('\n')).toHaveLength(1);
      expect(frozen.stdout).toMatch(/^unhealthy: heartbeat .* is \d+ ms old \(limit 4000 ms\): the poll loop has stopped turning/);
    } finally {
      worker.kill('SIGCONT');
    }
    await waitFor(async () => (await healthcheck(health)).code === 0, 10_000, 200);

    // A stopped worker removes its heartbeat: unhealthy at once.
    worker.kill('SIGTERM');
    expect((await worker.exited).code).toBe(0);
    expect((await healthcheck(health)).code).toBe(2);
  });

  it('exits 2 with one line when there is no heartbeat file', async () => {
    const result = await healthcheck({ HEALTH_HEARTBEAT_FILE: join(dir, 'never-written.heartbeat') });
    expect(result.code).toBe(2);
    expect(result.stdout).toMatch(/^unhealthy: no heartbeat file .*never-written\.heartbeat \(ENOENT\)/);
    expect(result.stdout.trim().split('\n')).toHaveLength(1);
  });

  it('--check-database: 0 when the database answers, 3 when it does not', async () => {
    const file = join(dir, 'fresh.heartbeat');
    const worker = spawnWorker(env, { env: { HEALTH_HEARTBEAT_FILE: file } });
    spawned.push(worker);
    await waitFor(() => stat(file).then(() => true, () => false));

    const ok = await healthcheck({ HEALTH_HEARTBEAT_FILE: file }, ['--check-database']);
    expect(ok).toMatchObject({ code: 0 });
    expect(ok.stdout).toMatch(/; database answered\n$/);

    const unreachable = await healthcheck(
      { HEALTH_HEARTBEAT_FILE: file, DATABASE_URL: 'postgres://nobody:secret@127.0.0.1:1/nothing' },
      ['--check-database', '--timeout-ms', '2000'],
    );
    expect(unreachable.code).toBe(3);
    expect(unreachable.stdout).toMatch(/^unhealthy: database check failed: .*ECONNREFUSED/);
  });

  it('--database-only: checks the database without a worker (no heartbeat file), 0 or 3', async () => {
    const none = join(dir, 'no-worker.heartbeat');
    expect((await healthcheck({ HEALTH_HEARTBEAT_FILE: none }, ['--check-database'])).code).toBe(2);
    const ok = await healthcheck({ HEALTH_HEARTBEAT_FILE: none }, ['--database-only']);
    expect(ok).toMatchObject({ code: 0, stdout: "healthy: the database answered and has this build's schema\n" });
    const unreachable = await healthcheck(
      { HEALTH_HEARTBEAT_FILE: none, DATABASE_URL: 'postgres://nobody:secret@127.0.0.1:1/nothing' },
      ['--database-only', '--timeout-ms', '2000'],
    );
    expect(unreachable.code).toBe(3);
    expect(unreachable.stdout).toMatch(/^unhealthy: database check failed: .*ECONNREFUSED/);
    expect(unreachable.stdout).not.toContain('secret');
  });

  it('exits 78 on a bad configuration value and 64 on an unknown argument', async () => {
    expect((await healthcheck({ HEALTH_MAX_AGE_MS: 'soon' })).code).toBe(78);
    const usage = await healthcheck({}, ['--bogus']);
    expect(usage.code).toBe(64);
    expect(usage.stdout).toContain('unknown argument "--bogus"');
  });
});
