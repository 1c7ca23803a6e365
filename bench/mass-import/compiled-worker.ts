// The worker as the production image runs it: compiled JavaScript (tsc, tsconfig.build.json), not the TypeScript
// sources through tsx (whose on-the-fly compilation at start-up is a development convenience). Built once per run.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { DEFAULTS } from '../../infra/bulk-import-worker-props.js';

const exec = promisify(execFile);

/** Compiles worker/ into `outDir`, puts migrations/ beside it as the image does, and returns the CLI entry point (outDir/worker/cli/main.js). */
export async function buildCompiledWorker(root: string, outDir: string, log: (line: string) => void): Promise<string> {
  await rm(outDir, { recursive: true, force: true });
  const tsc = join(root, 'node_modules/typescript/bin/tsc');
  try {
    await exec(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json'), '--outDir', outDir, '--sourceMap', 'false'], {
      cwd: root,
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (error) {
    // tsc still emits JavaScript when some file of the tree has a type error; the worker only needs what it imports.
    const output = String((error as { stdout?: string }).stdout ?? '').split('\n').filter(Boolean);
    log(`  note: tsc reported ${output.length} type error line(s) in the tree; using the JavaScript it emitted anyway`);
  }
  const entry = join(outDir, 'worker/cli/main.js');
  if (!existsSync(entry)) throw new Error(`compiling the worker produced no ${entry}`);
  // The image keeps migrations/ beside dist/; the worker reads it at start to check the schema is up to date.
  await cp(join(root, 'migrations'), join(dirname(outDir), 'migrations'), { recursive: true });
  return entry;
}

/** The node flags the production worker runs with (the task definition's default command), for benchmarks to match. */
export function productionNodeFlags(): string[] {
  const [, ...args] = DEFAULTS.workerCommand;
  return args.filter((arg) => arg.startsWith('--'));
}
