// `bulk-import serve` as the real process, on the test environment's configuration: resolves once it logs where it
// listens, with its log lines as they come and its exit.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { TestEnvironment } from '../harness.js';
import { CLI_ENTRY } from './worker-processes.js';

export interface ServeProcess {
  child: ChildProcess;
  /** The base URL it listens on. */
  address: string;
  /** Its stdout lines (JSON log lines). */
  lines: string[];
  stderr: string[];
  exited: Promise<number | null>;
}

export async function startServeProcess(env: TestEnvironment): Promise<ServeProcess> {
  const child = spawn(process.execPath, [CLI_ENTRY, 'serve', '--port', '0', '--host', '127.0.0.1'], {
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true', ...env.processEnv, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const lines: string[] = [];
  const stderr: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  const address = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line);
      const parsed = JSON.parse(line) as { msg: string; address?: string };
      if (parsed.msg === 'API listening') resolve(parsed.address!);
    });
    void exited.then((code) => reject(new Error(`serve exited ${code}: ${lines.join('\n')}`)));
  });
  return { child, address, lines, stderr, exited };
}
