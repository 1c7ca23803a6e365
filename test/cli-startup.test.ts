// What every start of the CLI loads: the command tree registers every command (a worker's start and an operator's
// `bulk-import show` included), so a command's heavy dependencies are imported when it runs, not when it registers.
// Fastify with its plugins and node-pg-migrate were a fifth of the start-up of every command.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../', import.meta.url));

// A module resolution hook that appends every package the process imports (bare specifiers only) to the file named
// by IMPORTS_FILE. Written synchronously: the hooks run on a thread of their own, whose stderr a process that exits at
// once (commander's --help) can leave unwritten.
const HOOKS = `import { appendFileSync } from 'node:fs';
export async function resolve(specifier, context, next) {
  if (/^(@[^/.][^/]*\\/)?[^./][^/]*/.test(specifier) && !specifier.startsWith('node:')) appendFileSync(process.env.IMPORTS_FILE, specifier + '\\n');
  return next(specifier, context);
}`;
const REGISTER = `import { register } from 'node:module'; register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(HOOKS)}));`;

const dir = mkdtempSync(join(tmpdir(), 'cli-startup-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The packages `bulk-import <args>` imports. */
function packagesImported(args: string[]): Set<string> {
  const file = join(dir, `${args.join('-')}.txt`);
  const run = spawnSync(process.execPath, ['--import', `data:text/javascript,${encodeURIComponent(REGISTER)}`, 'bin/bulk-import.js', ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', IMPORTS_FILE: file },
    timeout: 60_000,
  });
  expect(run.status, run.stderr).toBe(0);
  return new Set(readFileSync(file, 'utf8').split('\n').filter(Boolean));
}

describe('CLI start-up', () => {
  it('loads neither the HTTP server (Fastify) nor the migration runner to start a command', () => {
    for (const args of [['--help'], ['serve', '--help'], ['migrate', '--help']]) {
      const imported = packagesImported(args);
      // The hook sees the packages every command needs: it works.
      expect(imported, args.join(' ')).toContain('commander');
      expect(imported, args.join(' ')).toContain('pg');
      const heavy = [...imported].filter((name) => /^(fastify|@fastify\/|node-pg-migrate)/.test(name));
      expect(heavy, args.join(' ')).toEqual([]);
    }
  });
});
