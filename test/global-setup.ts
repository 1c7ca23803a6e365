// Starts the real servers the tests talk to, once per run and project (test/projects.ts): an embedded Postgres
// (unless DATABASE_URL is set), or Debian's for the project that runs on it, and the local S3 server (unless
// S3_ENDPOINT is set). Migrates a template database that every test file clones. Builds the compiled CLI the tests
// spawn (worker/dev/compiled-layout.ts) meanwhile, and again before a rerun in watch mode.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { buildCompiledLayout } from '../worker/dev/compiled-layout.js';
import { startEmbeddedPostgres } from '../worker/dev/embedded-postgres.js';
import { LOCAL_S3_CREDENTIALS, startLocalS3 } from '../worker/dev/local-s3.js';
import { migrate } from '../worker/db/migrate.js';
import { DEBIAN_POSTGRES_PROJECT } from './projects.js';
import { startDebianPostgres } from './support/debian-postgres.js';

export const TEMPLATE_DATABASE = 'bulk_import_test_template';
const COMPILED_CLI_DIR = fileURLToPath(new URL('../node_modules/.cache/bulk-import-test-cli/', import.meta.url));
/** The fixtures the tests start as processes of their own, compiled with the CLI (test/support/worker-processes.ts). */
const COMPILED_FIXTURES = ['test/fixtures/test-worker.ts', 'test/fixtures/submit-at-signal.ts'];

declare module 'vitest' {
  export interface ProvidedContext {
    adminDatabaseUrl: string;
    templateDatabase: string;
    s3Endpoint: string;
    s3Region: string;
    s3Credentials: { accessKeyId: string; secretAccessKey: string };
    /** bin/bulk-import.js of the compiled layout: the CLI the tests spawn. */
    cliEntry: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const stateDir = await mkdtemp(join(tmpdir(), 'bulk-import-test-'));
  // mkdtemp makes a 0700 folder; as root, Postgres runs as another user who must traverse it.
  await chmod(stateDir, 0o755);
  // The project that runs the queue's tests again on Debian's (older) PostgreSQL (vitest.config.ts).
  const debianProject = project.name === DEBIAN_POSTGRES_PROJECT;
  const stops: Array<() => Promise<void>> = [];
  const teardown = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await rm(stateDir, { recursive: true, force: true });
  };
  // Incremental, in a directory that outlives the run: a run after a small change compiles only that change.
  const buildCli = async (): Promise<string> => {
    const layout = await buildCompiledLayout({ dir: COMPILED_CLI_DIR, incremental: true, alsoCompile: COMPILED_FIXTURES });
    // Type errors do not stop the tests (`npm run typecheck` is the check); the JavaScript was emitted all the same.
    if (layout.diagnostics) console.warn(`type errors in the compiled CLI the tests spawn:\n${layout.diagnostics}`);
    return layout.cliEntry;
  };
  const cliBuilt = buildCli();
  cliBuilt.catch(() => {}); // awaited below; a failure is reported there, after the servers are stopped
  try {
    let adminUrl = debianProject ? undefined : process.env.DATABASE_URL;
    if (debianProject) {
      const postgres = await startDebianPostgres(join(stateDir, 'debian-postgres'));
      stops.push(() => postgres.stop());
      adminUrl = postgres.adminUrl;
      console.log(`${DEBIAN_POSTGRES_PROJECT}: PostgreSQL ${postgres.major} from Debian's packages`);
    } else if (!adminUrl) {
      const postgres = await startEmbeddedPostgres({ baseDir: join(stateDir, 'postgres'), persistent: false, fast: true });
      stops.push(() => postgres.stop());
      adminUrl = postgres.adminUrl;
    }
    let s3Endpoint = process.env.S3_ENDPOINT;
    if (!s3Endpoint) {
      const s3 = await startLocalS3(join(stateDir, 's3'));
      stops.push(() => s3.stop());
      s3Endpoint = s3.endpoint;
    }
    const templateUrl = await createTemplateDatabase(adminUrl);
    await migrate(templateUrl);
    project.provide('adminDatabaseUrl', adminUrl);
    project.provide('templateDatabase', TEMPLATE_DATABASE);
    project.provide('s3Endpoint', s3Endpoint);
    project.provide('s3Region', process.env.AWS_REGION ?? 'us-east-1');
    project.provide('s3Credentials', {
      accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? LOCAL_S3_CREDENTIALS.accessKeyId,
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? LOCAL_S3_CREDENTIALS.secretAccessKey,
    });
    stops.push(() => dropTemplateDatabase(adminUrl));
    project.provide('cliEntry', await cliBuilt);
    // A rerun after an edit spawns the edited code. A build that fails keeps the last one (and says why): a throw here
    // would end watch mode without stopping the servers.
    project.onTestsRerun(async () => {
      await buildCli().then(
        (cliEntry) => project.provide('cliEntry', cliEntry),
        (error: unknown) => console.error(`the compiled CLI was not rebuilt; the tests spawn the last build: ${String(error)}`),
      );
    });
  } catch (error) {
    await teardown();
    throw error;
  }
  return teardown;
}

async function createTemplateDatabase(adminUrl: string): Promise<string> {
  await dropTemplateDatabase(adminUrl);
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${TEMPLATE_DATABASE}`);
  } finally {
    await admin.end();
  }
  const url = new URL(adminUrl);
  url.pathname = `/${TEMPLATE_DATABASE}`;
  return url.toString();
}

async function dropTemplateDatabase(adminUrl: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DATABASE} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}
