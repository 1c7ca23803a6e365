// Real worker processes for tests: spawn `bulk-import worker` (or a fixture entry point with test handlers) against
// the test's database, read its JSON log lines, kill it with any signal.
import { spawn, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, inject } from 'vitest';
import type { TestEnvironment } from '../harness.js';
import { waitFor } from './in-process-worker.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** bin/bulk-import.js of the compiled layout global-setup.ts built from this checkout: what the image runs. */
export const CLI_ENTRY = inject('cliEntry');
/** A fixture of test/fixtures/ as compiled into that layout (global-setup.ts lists which). */
export function compiledFixture(name: string): string {
  return join(dirname(CLI_ENTRY), '..', 'dist', 'test', 'fixtures', `${name}.js`);
}
export const TEST_WORKER_ENTRY = compiledFixture('test-worker');

export interface LogLine {
  level: number;
  msg: string;
  [key: string]: unknown;
}

export interface WorkerProcess {
  child: ChildProcess;
  pid: number;
  logs: LogLine[];
  stderr: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first log line (past or future) that matches. */
  waitForLog(match: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  kill(signal?: NodeJS.Signals): void;
}

export interface SpawnOptions {
  /** `cli` runs `bin/bulk-import.js worker`; `test` runs test/fixtures/test-worker.ts, compiled (default + test handlers). */
  entry?: 'cli' | 'test';
  args?: string[];
  env?: Record<string, string>;
  /** Run the worker as this user and group (e.g. nobody, to test unreadable files when the tests run as root). */
  uid?: number;
  gid?: number;
}

export function spawnWorker(testEnv: TestEnvironment, options: SpawnOptions = {}): WorkerProcess {
  const entry = options.entry ?? 'cli';
  const args =
    entry === 'cli'
      ? [CLI_ENTRY, 'worker', ...(options.args ?? [])]
      : [TEST_WORKER_ENTRY, ...(options.args ?? [])];
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      ...testEnv.processEnv,
      LOG_LEVEL: 'info',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
  });
  const logs: LogLine[] = [];
  const stderr: string[] = [];
  const waiters: Array<{ match: (line: LogLine) => boolean; resolve: (line: LogLine) => void }> = [];
  createInterface({ input: child.stdout! }).on('line', (text) => {
    let line: LogLine;
    try {
      line = JSON.parse(text) as LogLine;
    } catch {
      stderr.push(text);
      return;
    }
    logs.push(line);
    for (const waiter of [...waiters]) {
      if (waiter.match(line)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve(line);
      }
    }
  });
  createInterface({ input: child.stderr! }).on('line', (text) => stderr.push(text));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  return {
    child,
    pid: child.pid!,
    logs,
    stderr,
    exited,
    kill: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    },
    waitForLog(match, timeoutMs = 30_000) {
      const seen = logs.find(match);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          // Where the process stood: its last lines (message and run), so a failure on a loaded machine says what it waited behind.
          const last = logs.slice(-8).map((line) => `${String(line.msg)}${line.job_id === undefined ? '' : ` (job ${String(line.job_id)})`}`);
          reject(new Error(`no matching log line within ${timeoutMs} ms; last lines: ${last.join(' | ') || 'none'}; stderr: ${stderr.slice(-5).join(' | ')}`));
        }, timeoutMs);
        waiters.push({
          match,
          resolve: (line) => {
            clearTimeout(timer);
            resolve(line);
          },
        });
        void exited.then(({ code, signal }) => {
          clearTimeout(timer);
          reject(new Error(`worker exited (${code ?? signal}) before the log line; stderr: ${stderr.slice(-5).join(' | ')}`));
        });
      });
    },
  };
}

/** Kills every process still running (afterAll / afterEach safety net). */
export async function killAll(processes: WorkerProcess[]): Promise<void> {
  for (const worker of processes) worker.kill('SIGKILL');
  await Promise.all(processes.map((worker) => worker.exited));
}

/**
 * Resolves once no worker session is left in the test's database (sessions named `bulk-import-…`, the test's own pool
 * aside): after a kill -9 of the only worker running, its backends are gone. One that had received a COMMIT just
 * before the kill still commits it, so two reads taken before it ends (a run's ledger, then the rows it counts) could
 * each see a different side of that commit. Another worker still running would keep it waiting: call it with none.
 */
export async function killedSessionsEnded(testEnv: TestEnvironment): Promise<void> {
  await waitFor(async () => {
    const { rows } = await testEnv.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE datname = current_database() AND backend_type = 'client backend'
         AND application_name LIKE 'bulk-import-%' AND application_name <> 'bulk-import-test'`,
    );
    return rows[0]!.n === 0;
  }, 30_000);
}

/**
 * The worker processes and scratch folders of a test file, killed and removed after its last test: push what a test
 * spawns or creates onto `spawned` and `cleanup`.
 */
export function useSpawnedWorkers(): { spawned: WorkerProcess[]; cleanup: string[] } {
  const spawned: WorkerProcess[] = [];
  const cleanup: string[] = [];
  afterAll(async () => {
    await killAll(spawned);
    for (const path of cleanup) await rm(path, { recursive: true, force: true });
  });
  return { spawned, cleanup };
}
