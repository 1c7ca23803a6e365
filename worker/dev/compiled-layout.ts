// The CLI as the image runs it, built from this checkout: dist/ from `tsc -p tsconfig.build.json`, bin/, package.json,
// and migrations/ and node_modules linked to the checkout's. bin/bulk-import.js finds no sources beside it and runs
// dist/, so nothing is compiled when a process starts. The tests spawn the CLI from such a layout (a TypeScript
// loader at every start cost a third of a second of CPU per process, hundreds of processes per run); the black-box
// bench measures the worker from one.
import { spawn } from 'node:child_process';
import { cp, mkdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface CompiledLayoutOptions {
  /** Where the layout goes (made if missing; its dist/ is compiled over). */
  dir: string;
  /** Leave out dist/worker/dev (as the image's worker has no use for it); kept by default (`bulk-import local`). */
  withoutDev?: boolean;
  /**
   * Keep tsc's incremental state in the layout, so that building the same directory again compiles only what changed
   * (the tests' layout under node_modules/.cache). Files of deleted sources stay in dist/; nothing imports them.
   */
  incremental?: boolean;
  /**
   * More entry points to compile beside worker/ and scripts/ (paths from the checkout's root), for processes the tests
   * start from fixtures of their own; they land under dist/ at the same path (`test/fixtures/x.ts` → dist/test/fixtures/x.js).
   */
  alsoCompile?: readonly string[];
}

export interface CompiledLayout {
  /** bin/bulk-import.js of the layout. */
  cliEntry: string;
  /** tsc's type errors when it emitted the JavaScript all the same (tsc exit 2): worth a warning, not a failure. */
  diagnostics: string | undefined;
}

/**
 * Builds (or brings up to date) the compiled layout in `dir`. One build of a directory at a time, across processes
 * (two test runs at once share the tests' layout): a lock file beside it, taken over from a process that died.
 */
export async function buildCompiledLayout(options: CompiledLayoutOptions): Promise<CompiledLayout> {
  const { dir } = options;
  await mkdir(dir, { recursive: true });
  return withLock(`${dir.replace(/\/+$/, '')}.lock`, () => build(options));
}

async function build(options: CompiledLayoutOptions): Promise<CompiledLayout> {
  const { dir } = options;
  let project = join(ROOT, 'tsconfig.build.json');
  if (options.alsoCompile?.length) {
    // tsc takes no files beside a project: a project of the layout's own, the build's plus these.
    project = join(dir, 'tsconfig.layout.json');
    const build = JSON.parse(await readFile(join(ROOT, 'tsconfig.build.json'), 'utf8')) as { include: string[] };
    const include = [...build.include, ...options.alsoCompile].map((path) => join(ROOT, path));
    await writeFile(project, `${JSON.stringify({ extends: join(ROOT, 'tsconfig.build.json'), compilerOptions: { rootDir: ROOT }, include }, null, 2)}\n`);
  }
  const args = [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', project, '--outDir', join(dir, 'dist')];
  if (options.incremental) args.push('--incremental', '--tsBuildInfoFile', join(dir, 'tsconfig.build.tsbuildinfo'));
  const output = await run(process.execPath, args);
  // 2: type errors, the JavaScript emitted anyway (what tsx would run too); 1: nothing emitted.
  if (output.code !== 0 && output.code !== 2) throw new Error(`the build of the compiled layout failed (tsc exit ${output.code}):\n${output.text}`);
  if (options.withoutDev) await rm(join(dir, 'dist/worker/dev'), { recursive: true, force: true });
  // Copied over, and linked once: a layout in use by another run's processes never loses its bin/ or its links.
  await cp(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true, force: true });
  await cp(join(ROOT, 'package.json'), join(dir, 'package.json'));
  for (const name of ['migrations', 'node_modules']) {
    const link = join(dir, name);
    const target = join(ROOT, name);
    if ((await readlink(link).catch(() => undefined)) === target) continue;
    await rm(link, { recursive: true, force: true });
    await symlink(target, link);
  }
  return { cliEntry: join(dir, 'bin/bulk-import.js'), diagnostics: output.code === 2 ? output.text : undefined };
}

async function withLock<T>(lockFile: string, work: () => Promise<T>): Promise<T> {
  for (const startedAt = Date.now(); ; ) {
    try {
      await writeFile(lockFile, String(process.pid), { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      const holder = Number(await readFile(lockFile, 'utf8').catch(() => ''));
      if (!isAlive(holder)) {
        await rm(lockFile, { force: true });
        continue;
      }
      if (Date.now() - startedAt > 10 * 60_000) throw new Error(`${lockFile} is held by process ${holder} for over 10 minutes`);
      await sleep(200);
    }
  }
  try {
    return await work();
  } finally {
    await rm(lockFile, { force: true });
  }
}

function isAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function run(command: string, args: string[]): Promise<{ code: number | null; text: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (text += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, text }));
  });
}
