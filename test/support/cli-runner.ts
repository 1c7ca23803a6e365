// Runs the real `bulk-import` CLI (`node bin/bulk-import.js …`) against a test environment's database and bucket.
import { execFile, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TestEnvironment } from '../harness.js';
import { CLI_ENTRY } from './worker-processes.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function cliEnv(testEnv: TestEnvironment, extraEnv: Record<string, string>): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '/tmp',
    AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    ...testEnv.processEnv,
    ...extraEnv,
  };
}

export function runCli(testEnv: TestEnvironment, args: string[], extraEnv: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI_ENTRY, ...args],
      {
        cwd: ROOT,
        env: cliEnv(testEnv, extraEnv),
        timeout: 60_000,
        maxBuffer: 16 * 1024 * 1024,
      },
      (error, stdout, stderr) => {
        const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/**
 * Runs a command whose reader has gone before it prints (`bulk-import jobs | head -0`): its stdout is a pipe closed at
 * once. Resolves with its exit code and stderr.
 */
export function runCliIntoClosedPipe(testEnv: TestEnvironment, args: string[]): Promise<{ code: number | null; signal: string | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI_ENTRY, ...args], { cwd: ROOT, env: cliEnv(testEnv, {}), stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stderr })));
}

/** Runs a command with --json and parses its output (throws with the output when it is not JSON). */
export async function runCliJson<T = unknown>(testEnv: TestEnvironment, args: string[], expectedCode = 0): Promise<T> {
  const result = await runCli(testEnv, [...args, '--json']);
  if (result.code !== expectedCode) {
    throw new Error(`bulk-import ${args.join(' ')} --json exited ${result.code}: ${result.stderr || result.stdout}`);
  }
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`bulk-import ${args.join(' ')} --json printed no JSON: ${result.stdout}`);
  }
}

export interface RunningCli {
  /** Resolves once stdout so far matches. */
  waitForOutput(match: RegExp, timeoutMs?: number): Promise<void>;
  /** Sends the command a signal (as an operator's Ctrl-C does). */
  kill(signal: NodeJS.Signals): void;
  done: Promise<CliResult>;
}

/** Starts a long-running command (watch) whose output the test follows while it runs. */
export function spawnCli(testEnv: TestEnvironment, args: string[], extraEnv: Record<string, string> = {}): RunningCli {
  const child = spawn(process.execPath, [CLI_ENTRY, ...args], { cwd: ROOT, env: cliEnv(testEnv, extraEnv), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
    for (const listener of [...listeners]) listener();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const done = new Promise<CliResult>((resolve) => child.once('close', (code) => resolve({ code: code ?? 1, stdout, stderr })));
  return {
    done,
    kill: (signal) => void child.kill(signal),
    waitForOutput(match, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!match.test(stdout)) return;
          listeners.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`no output matching ${match} within ${timeoutMs} ms; stdout: ${stdout} stderr: ${stderr}`));
        }, timeoutMs);
        listeners.add(check);
        void done.then(() => {
          if (listeners.has(check)) {
            listeners.delete(check);
            clearTimeout(timer);
            reject(new Error(`command ended before output matched ${match}; stdout: ${stdout} stderr: ${stderr}`));
          }
        });
        check();
      });
    },
  };
}

/**
 * Runs the CLI with its output on a terminal (a pseudo-terminal made by util-linux `script`), as an operator sees it.
 * The terminal turns each \n into \r\n.
 */
export function runCliOnTerminal(testEnv: TestEnvironment, args: string[]): Promise<CliResult> {
  const command = [process.execPath, CLI_ENTRY, ...args].map((word) => `'${word.replace(/'/g, `'\\''`)}'`).join(' ');
  return new Promise((resolve) => {
    execFile('script', ['-qec', command, '/dev/null'], { cwd: ROOT, env: cliEnv(testEnv, {}), timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}
