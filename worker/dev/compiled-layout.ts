// The CLI as the image runs it, built from this checkout: dist/ from `tsc -p tsconfig.build.json`, bin/, package.json,
// and migrations/ and node_modules linked to the checkout's. bin/bulk-import.js finds no sources beside it and runs
// dist/, so nothing is compiled when a process starts. The tests spawn the CLI from such a layout (a TypeScript
// loader at every start cost a third of a second of CPU per process, hundreds of processes per run); the black-box
// bench measures the worker from one.
import { spawn } from 'node:child_process';
import { cp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
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

/** Builds (or brings up to date) the compiled layout in `dir`; resolves with the path of its bin/bulk-import.js. */
export async function buildCompiledLayout(options: CompiledLayoutOptions): Promise<string> {
  const { dir } = options;
  await mkdir(dir, { recursive: true });
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
  if (output.code !== 0) throw new Error(`the build of the compiled layout failed (tsc exit ${output.code}):\n${output.text}`);
  if (options.withoutDev) await rm(join(dir, 'dist/worker/dev'), { recursive: true, force: true });
  await rm(join(dir, 'bin'), { recursive: true, force: true });
  await cp(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
  await cp(join(ROOT, 'package.json'), join(dir, 'package.json'));
  for (const name of ['migrations', 'node_modules']) {
    await rm(join(dir, name), { recursive: true, force: true });
    await symlink(join(ROOT, name), join(dir, name));
  }
  return join(dir, 'bin/bulk-import.js');
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
