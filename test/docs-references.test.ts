// The docs name only what exists: every repository path they quote, every setting, error code and constant they put
// in backticks, and every `bulk-import` command and subcommand. And every variable worker/config.ts reads is in the
// README's configuration table. A rename that forgets the docs fails here instead of misleading an operator at 3 a.m.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const DOCS = ['README.md', ...readdirSync(join(ROOT, 'docs')).filter((file) => file.endsWith('.md')).map((file) => `docs/${file}`)];

function read(file: string): string {
  return readFileSync(join(ROOT, file), 'utf8');
}

/** Every file's text under the folders that hold code, for "is this name used anywhere". */
function codeText(): string {
  const texts: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      if (entry === 'node_modules' || entry.startsWith('.') || entry === 'cdk.out' || entry === 'dist') continue;
      const path = join(dir, entry);
      if (statSync(path).isDirectory()) walk(path);
      else if (/\.(ts|js|sql|sh|json)$/.test(entry) || entry === 'Dockerfile') texts.push(readFileSync(path, 'utf8'));
    }
  };
  for (const dir of ['worker', 'infra', 'scripts', 'bench', 'migrations', 'bin']) walk(join(ROOT, dir));
  texts.push(read('Dockerfile'), read('package.json'), read('cdk.json'));
  return texts.join('\n');
}

/** Backticked spans of a Markdown text, outside fenced code blocks too (fences hold commands worth checking). */
function spans(text: string): string[] {
  return [...text.matchAll(/`([^`\n]+)`/g)].map((match) => match[1]!);
}

/** The variables worker/config.ts reads (every `read.<kind>('NAME'`). */
function configVariables(): Set<string> {
  const text = read('worker/config.ts');
  return new Set([...text.matchAll(/\b(?:read\.\w+|this\.raw)\('([A-Z][A-Z0-9_]+)'/g)].map((match) => match[1]!));
}

/** Variables the docs may name that are read by the AWS SDK, ECS, Node or the shell, not by our config. */
const EXTERNAL_VARIABLES = new Set([
  'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'NODE_OPTIONS', 'NODE_ENV', 'CI',
  'DEPLOY_TAG', 'HOME', 'PATH', 'TEST_WORKER_LOG_LEVEL', 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED',
]);

describe('docs name only what exists', () => {
  it('every repository path in backticks or in a relative link exists', () => {
    const missing: string[] = [];
    // Files of the root, and two files of a dependency that DEPLOYMENT.md names.
    const basenames = new Set<string>([...readdirSync(ROOT), 'proxies.js', 'defaults.js']);
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir)) {
        if (entry === 'node_modules' || entry.startsWith('.')) continue;
        const path = join(dir, entry);
        if (statSync(path).isDirectory()) walk(path);
        else basenames.add(entry);
      }
    };
    for (const dir of ['worker', 'infra', 'scripts', 'bench', 'migrations', 'bin', 'test', 'docs']) walk(join(ROOT, dir));
    for (const doc of DOCS) {
      const text = read(doc);
      const candidates = [
        ...spans(text).flatMap((span) => span.split(/\s+/)),
        ...[...text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)].map((match) => relative(ROOT, join(ROOT, doc, '..', match[1]!))),
      ];
      for (const raw of candidates) {
        const path = raw.replace(/[),.:;]+$/, '').replace(/^\.\//, '');
        if (!/^(worker|scripts|test|infra|bench|migrations|docs|bin|\.ci)\/[\w./-]*$/.test(path) && !/^[\w-]+\.(md|json|ts|js)$/.test(path)) continue;
        if (/^https?:/.test(raw) || path.includes('*')) continue;
        // A bare file name (`claim.ts`, in a paragraph about its folder) only has to exist somewhere in the code.
        if (!path.includes('/')) {
          if (!basenames.has(path) && !basenames.has(path.replace(/\.js$/, '.ts'))) missing.push(`${doc}: ${path}`);
          continue;
        }
        if (!existsSync(join(ROOT, path)) && !existsSync(join(ROOT, path.replace(/\.js$/, '.ts')))) missing.push(`${doc}: ${path}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('every setting the docs give a value to is one the config or a script reads (or one of AWS, ECS or Node)', () => {
    const variables = configVariables();
    for (const script of readdirSync(join(ROOT, 'scripts')).filter((file) => file.endsWith('.sh'))) {
      for (const match of read(`scripts/${script}`).matchAll(/\$\{?([A-Z][A-Z0-9_]+)/g)) variables.add(match[1]!);
    }
    // What the test harness reads (the README says how to run the tests), and the benchmarks' settings.
    const benches = readdirSync(join(ROOT, 'bench')).filter((file) => file.endsWith('.ts')).map((file) => `bench/${file}`);
    for (const file of ['test/projects.ts', 'test/global-setup.ts', 'test/harness.ts', ...benches]) {
      for (const match of read(file).matchAll(/process\.env\.([A-Z][A-Z0-9_]+)/g)) variables.add(match[1]!);
    }
    const unknown: string[] = [];
    for (const doc of DOCS) {
      for (const span of spans(read(doc))) {
        for (const match of span.matchAll(/(?:^|\s)([A-Z][A-Z0-9_]{3,})=/g)) {
          const name = match[1]!;
          if (!variables.has(name) && !EXTERNAL_VARIABLES.has(name) && !name.startsWith('OTEL_')) unknown.push(`${doc}: ${name}`);
        }
      }
    }
    expect(unknown).toEqual([]);
  });

  it('every variable the config reads is in the README configuration table, and the table names no other', () => {
    const variables = configVariables();
    const readme = read('README.md');
    const table = new Set(
      readme
        .split('\n')
        .filter((line) => line.startsWith('| `'))
        .flatMap((line) => [...line.split('|')[1]!.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((match) => match[1]!)),
    );
    // A row may name a family (`MASS_IMPORT_MAX_FILES` / `_MAX_TOTAL_BYTES`): expand the suffixes.
    for (const line of readme.split('\n').filter((row) => row.startsWith('| `'))) {
      const cell = line.split('|')[1]!;
      const head = /`([A-Z][A-Z0-9_]+)`/.exec(cell)?.[1];
      for (const suffix of cell.matchAll(/`(_[A-Z0-9_]+)`/g)) {
        const firstWord = /^_[A-Z0-9]+_/.exec(suffix[1]!)?.[0] ?? suffix[1]!;
        const at = head ? head.indexOf(firstWord) : -1;
        if (head && at > 0) table.add(head.slice(0, at) + suffix[1]);
      }
    }
    const undocumented = [...variables].filter((name) => !table.has(name));
    const stale = [...table].filter((name) => !variables.has(name) && !EXTERNAL_VARIABLES.has(name) && /^[A-Z0-9_]+$/.test(name));
    expect({ undocumented, stale }).toEqual({ undocumented: [], stale: [] });
  });

  it('every setting, error code or constant in backticks is a name the code uses', () => {
    const code = codeText();
    const unknown = new Set<string>();
    for (const doc of DOCS) {
      for (const span of spans(read(doc))) {
        if (!/^[A-Z][A-Z0-9]*_[A-Z0-9_]+$/.test(span)) continue;
        if (EXTERNAL_VARIABLES.has(span) || span.startsWith('OTEL_') || span.startsWith('AWS_')) continue;
        if (!code.includes(span)) unknown.add(`${doc}: ${span}`);
      }
    }
    expect([...unknown]).toEqual([]);
  });

  describe('bulk-import commands', () => {
    const commands = new Map<string, Set<string>>();
    beforeAll(async () => {
      // The command tree itself, read in-process (no CLI start per command).
      const { buildProgram } = await import('../worker/cli/program.js');
      for (const command of buildProgram().commands) {
        commands.set(command.name(), new Set(command.commands.map((sub) => sub.name())));
      }
    });

    it('every `bulk-import <command> [<subcommand>]` the docs quote exists', () => {
      const unknown: string[] = [];
      for (const doc of DOCS) {
        for (const match of read(doc).matchAll(/bulk-import ([a-z][\w-]*)(?: ([a-z][\w-]*))?/g)) {
          const [, command, sub] = match;
          if (command === 'worker' && doc.includes('ARCHITECTURE') && sub === undefined) continue;
          const subcommands = commands.get(command!);
          if (!subcommands) {
            // `bulk-import-worker` (the project's name) and prose such as "bulk-import worker process" are fine.
            if (!['worker', 'import'].includes(command!)) unknown.push(`${doc}: bulk-import ${command}`);
            continue;
          }
          if (subcommands.size > 0 && sub !== undefined && !subcommands.has(sub)) unknown.push(`${doc}: bulk-import ${command} ${sub}`);
        }
      }
      expect(commands.size).toBeGreaterThan(10);
      expect(unknown).toEqual([]);
    });
  });
});
