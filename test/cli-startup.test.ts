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

// A module resolution hook (in the process's own thread, synchronous) that appends every package the process imports
// to the file named by IMPORTS_FILE: bare specifiers, or a path into node_modules.
const REGISTER = `import { appendFileSync } from 'node:fs';
import { registerHooks } from 'node:module';
registerHooks({
  resolve(specifier, context, nextResolve) {
    const resolved = nextResolve(specifier, context);
    const name = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(resolved.url)?.[1];
    if (name && process.env.IMPORTS_FILE) appendFileSync(process.env.IMPORTS_FILE, name + '\\n');
    return resolved;
  },
});`;

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
