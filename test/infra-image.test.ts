// The Dockerfile and .dockerignore, read as text (no Docker engine needed): a multi-stage build from the lockfile, a
// runtime stage with the layout and user the task definition relies on, and a build context that carries every file
// the Dockerfile copies and nothing private.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULTS, HEALTHCHECK_COMMAND, WORKER_GID, WORKER_UID } from '../infra/bulk-import-worker-props.js';
import { REPO_ROOT } from './fixtures/infra/synth.js';

interface Instruction {
  keyword: string;
  args: string;
}

/** Dockerfile instructions, with continuation lines joined and comments dropped. */
function instructions(text: string): Instruction[] {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => {
      const [keyword, ...rest] = line.split(/\s+/);
      return { keyword: keyword!.toUpperCase(), args: rest.join(' ') };
    });
}

/** Instructions grouped by stage (each FROM starts one), keyed by the stage name. */
function stages(all: Instruction[]): Array<{ name: string; from: string; steps: Instruction[] }> {
  const result: Array<{ name: string; from: string; steps: Instruction[] }> = [];
  for (const instruction of all) {
    if (instruction.keyword === 'FROM') {
      const [from, , name] = instruction.args.split(/\s+/);
      result.push({ name: name ?? `stage${result.length}`, from: from!, steps: [] });
    } else {
      result.at(-1)?.steps.push(instruction);
    }
  }
  return result;
}

/** Docker's .dockerignore semantics: the last matching line wins; a pattern matching a parent folder matches. */
function isInBuildContext(ignoreText: string, path: string): boolean {
  const rules = ignoreText
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'))
    .map((line) => ({ include: line.startsWith('!'), pattern: line.replace(/^!/, '').replace(/^\/+/, '') }));
  const toRegExp = (pattern: string) =>
    new RegExp(
      `^${pattern
        .split('**')
        .map((part) => part.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'))
        .join('.*')}$`,
    );
  const segments = path.split('/');
  const candidates = segments.map((_, index) => segments.slice(0, index + 1).join('/'));
  let included = true;
  for (const rule of rules) {
    const regExp = toRegExp(rule.pattern);
    if (candidates.some((candidate) => regExp.test(candidate))) included = rule.include;
  }
  return included;
}

const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const dockerignore = readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8');
const all = instructions(dockerfile);
const allStages = stages(all);
const runtime = allStages.at(-1)!;

describe('Dockerfile', () => {
  it('is multi-stage and installs only from the lockfile', () => {
    expect(allStages.length).toBeGreaterThanOrEqual(2);
    const runs = all.filter((instruction) => instruction.keyword === 'RUN').map((instruction) => instruction.args);
    expect(runs.some((run) => /\bnpm install\b|\bnpm i\b/.test(run))).toBe(false);
    for (const stage of allStages.filter((candidate) => candidate.steps.some((step) => /\bnpm ci\b/.test(step.args)))) {
      const lockfileCopy = stage.steps.findIndex((step) => step.keyword === 'COPY' && step.args.includes('package-lock.json'));
      const install = stage.steps.findIndex((step) => /\bnpm ci\b/.test(step.args));
      expect(lockfileCopy, `stage ${stage.name} copies the lockfile before npm ci`).toBeGreaterThanOrEqual(0);
      expect(lockfileCopy).toBeLessThan(install);
    }
    expect(runs.filter((run) => /\bnpm ci\b.*--omit=dev/.test(run))).toHaveLength(1);
  });

  it('ships the contract layout in /app: production node_modules, dist/, migrations/, bin/', () => {
    const workdir = runtime.steps.filter((step) => step.keyword === 'WORKDIR').at(-1);
    expect(workdir?.args).toBe('/app');
    const copies = runtime.steps.filter((step) => step.keyword === 'COPY').map((step) => step.args);
    const productionStage = allStages.find((stage) => stage.steps.some((step) => /--omit=dev/.test(step.args)))!;
    const buildStage = allStages.find((stage) => stage.steps.some((step) => /npm run build/.test(step.args)))!;
    expect(copies).toContain(`--from=${productionStage.name} /app/node_modules ./node_modules`);
    expect(copies).toContain(`--from=${buildStage.name} /app/dist ./dist`);
    expect(copies).toEqual(expect.arrayContaining(['package.json package-lock.json ./', 'migrations ./migrations', 'bin ./bin']));
    // No sources or dev dependencies: the bin shim then runs dist/ (bin/bulk-import.js).
    expect(copies.some((copy) => /^worker\b|^scripts\b/.test(copy))).toBe(false);
  });

  it('runs as the non-root uid the task definition uses, with the worker command and health check', () => {
    const user = runtime.steps.filter((step) => step.keyword === 'USER').at(-1)?.args;
    expect(user).toBe(`${WORKER_UID}:${WORKER_GID}`);
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    const cmd = runtime.steps.filter((step) => step.keyword === 'CMD').at(-1)?.args;
    expect(JSON.parse(cmd!)).toEqual(DEFAULTS.command);
    const healthcheck = runtime.steps.filter((step) => step.keyword === 'HEALTHCHECK').at(-1)?.args ?? '';
    expect(JSON.parse(healthcheck.replace(/^.*\bCMD\s+/, ''))).toEqual(HEALTHCHECK_COMMAND);
  });
});

describe('.dockerignore', () => {
  it('lets every path the Dockerfile copies from the context through', () => {
    const sources = all
      .filter((instruction) => instruction.keyword === 'COPY' && !instruction.args.includes('--from='))
      .flatMap((instruction) => instruction.args.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(0);
    for (const source of sources) {
      expect(existsSync(join(REPO_ROOT, source)), `${source} exists`).toBe(true);
      expect(isInBuildContext(dockerignore, source), `${source} is in the build context`).toBe(true);
    }
    expect(isInBuildContext(dockerignore, 'worker/config.ts')).toBe(true);
    expect(isInBuildContext(dockerignore, 'bin/bulk-import.js')).toBe(true);
  });

  it('keeps out the repository, host dependencies, local state and secrets', () => {
    for (const path of ['.git/config', 'node_modules/pg/package.json', 'dist/worker/cli/main.js', '.local/postgres', 'cdk.out/manifest.json', '.env', 'infra/app.ts', 'test/harness.ts', 'scripts/deploy.sh', 'worker/config.test.ts']) {
      expect(isInBuildContext(dockerignore, path), path).toBe(false);
    }
  });
});
