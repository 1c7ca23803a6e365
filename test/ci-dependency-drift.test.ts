// The dependency-drift guard of .ci/run (.ci/dependency-drift: knip in production and full mode, and the lockfile
// regenerated offline) on a copy of this project: it passes as committed, and fails — naming the package — when a
// dev-only tool is listed in `dependencies` (tsx, csv-parse), when shipped code imports a devDependency, and when the
// lockfile disagrees with package.json.
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { REPO_ROOT } from './fixtures/infra/synth.js';

const ROOT = REPO_ROOT.replace(/\/$/, '');
const COPIED = ['bin', 'worker', 'scripts', 'infra', 'bench', 'test', 'package.json', 'package-lock.json', 'knip.jsonc',
  'eslint.config.js', 'vitest.config.ts', 'tsconfig.json', 'tsconfig.build.json', 'cdk.json', '.gitignore'];

interface PackageJson {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
}

const copies: string[] = [];
afterEach(() => {
  for (const dir of copies.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function projectCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'deps-drift-'));
  copies.push(dir);
  for (const entry of COPIED) cpSync(join(ROOT, entry), join(dir, entry), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

function editPackageJson(dir: string, edit: (pkg: PackageJson) => void): void {
  const file = join(dir, 'package.json');
  const pkg = JSON.parse(readFileSync(file, 'utf8')) as PackageJson;
  edit(pkg);
  writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`);
}

function moveTo(pkg: PackageJson, name: string, to: 'dependencies' | 'devDependencies'): void {
  const from = to === 'dependencies' ? pkg.devDependencies : pkg.dependencies;
  const version = from[name];
  if (version === undefined) throw new Error(`${name} is not where the test expects it`);
  delete from[name];
  pkg[to][name] = version;
}

function check(dir: string): { status: number | null; output: string } {
  const run = spawnSync('bash', [join(ROOT, '.ci', 'dependency-drift'), dir], { encoding: 'utf8', timeout: 120_000 });
  return { status: run.status, output: `${run.stdout}${run.stderr}` };
}

describe('.ci/dependency-drift', { timeout: 180_000 }, () => {
  it('passes on the project as it is', () => {
    const result = check(projectCopy());
    expect(result.output).toContain('dependencies: no drift');
    expect(result.status).toBe(0);
  });

  it('fails when dev-only tools are listed in dependencies (tsx, csv-parse), and the lockfile then disagrees', () => {
    const dir = projectCopy();
    editPackageJson(dir, (pkg) => {
      moveTo(pkg, 'tsx', 'dependencies');
      moveTo(pkg, 'csv-parse', 'dependencies');
    });
    const result = check(dir);
    expect(result.status).toBe(1);
    expect(result.output).toMatch(/Unused dependencies \(2\)[\s\S]*\btsx\b[\s\S]*csv-parse|Unused dependencies \(2\)[\s\S]*csv-parse[\s\S]*\btsx\b/);
    expect(result.output).toContain('package-lock.json disagrees with package.json');
  });

  it('fails when code the image runs imports a devDependency, or no longer imports a dependency', () => {
    const dir = projectCopy();
    appendFileSync(join(dir, 'worker', 'config.ts'), "\nimport 'graphile-worker';\n");
    // pg-copy-streams is imported by worker/db/copy-from.ts alone; that file stops importing it.
    const file = join(dir, 'worker', 'db', 'copy-from.ts');
    const source = readFileSync(file, 'utf8');
    expect(source).toMatch(/^import .* from 'pg-copy-streams';$/m);
    writeFileSync(file, source.replace(/^import .* from 'pg-copy-streams';$/m, ''));
    const result = check(dir);
    expect(result.status).toBe(1);
    expect(result.output).toMatch(/Unused dependencies \(1\)\s+pg-copy-streams\b/);
    expect(result.output).toMatch(/Unlisted dependencies \(1\)\s+graphile-worker\s+worker\/config\.ts/);
    expect(result.output).not.toMatch(/package-lock\.json (disagrees|does not hold)/);
  });

  it('fails when package.json names a package the lockfile does not hold', () => {
    const dir = projectCopy();
    editPackageJson(dir, (pkg) => {
      pkg.devDependencies['left-pad'] = '1.3.0';
    });
    writeFileSync(join(dir, 'test', 'left-pad-user.test.ts'), "import 'left-pad';\n");
    const result = check(dir);
    expect(result.status).toBe(1);
    expect(result.output).toContain('package-lock.json does not hold what package.json asks for');
  });
});
