// What a test file needs to talk to the real servers: `const env = await useTestEnvironment()` at the top of a
// describe block gives it its own freshly migrated database (a clone of the template), its own bucket, a pool, an S3
// client, and the environment variables to hand to a worker process it spawns.
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, inject } from 'vitest';
import { createPool, type Pool } from '../worker/db/pool.js';
import { createS3Client } from '../worker/storage/s3-client.js';
import { ensureBucket } from '../worker/dev/local-s3.js';
import { startEmbeddedPostgres, type EmbeddedPostgres, type EmbeddedPostgresOptions } from '../worker/dev/embedded-postgres.js';
import { migrate } from '../worker/db/migrate.js';
import { connectionConfig } from '../worker/db/connection.js';

export interface TestEnvironment {
  databaseUrl: string;
  pool: Pool;
  s3: S3Client;
  bucket: string;
  s3Endpoint: string;
  /** Environment for a child process (worker, CLI) that should use this test's database and bucket. */
  processEnv: Record<string, string>;
  /** With `ownPostgres`: the file's own server, which its tests may restart, pause or stop. */
  postgres?: EmbeddedPostgres;
}

export interface TestEnvironmentOptions {
  /**
   * A Postgres server of this file's own instead of the shared one: for tests that restart, pause or reconfigure the
   * server (the other files' databases live on the shared server and must not see that).
   */
  ownPostgres?: boolean | OwnPostgresOptions | (() => Promise<OwnPostgresOptions>);
}

export interface OwnPostgresOptions extends Pick<EmbeddedPostgresOptions, 'settings' | 'hba'> {
  /** Query parameters for every URL the harness uses (e.g. `sslmode=require` for a server that requires TLS). */
  urlParams?: string;
}

export function useTestEnvironment(options: TestEnvironmentOptions = {}): TestEnvironment {
  const env = {} as TestEnvironment;
  let databaseName = '';
  let ownDir: string | undefined;
  beforeAll(async () => {
    const suffix = randomBytes(5).toString('hex');
    databaseName = `test_${suffix}`;
    let adminUrl = inject('adminDatabaseUrl');
    if (options.ownPostgres) {
      ownDir = await mkdtemp(join(tmpdir(), 'bulk-import-own-pg-'));
      await chmod(ownDir, 0o755);
      const own =
        typeof options.ownPostgres === 'function' ? await options.ownPostgres() : typeof options.ownPostgres === 'object' ? options.ownPostgres : {};
      const { urlParams, ...extra } = own;
      env.postgres = await startEmbeddedPostgres({ baseDir: ownDir, persistent: false, fast: true, ...extra });
      adminUrl = urlParams ? `${env.postgres.adminUrl}?${urlParams}` : env.postgres.adminUrl;
      await withAdmin(adminUrl, (admin) => admin.query(`CREATE DATABASE ${databaseName}`));
      const databaseUrl = env.postgres.databaseUrl(databaseName);
      await migrate(urlParams ? `${databaseUrl}?${urlParams}` : databaseUrl);
    } else {
      await withAdmin(adminUrl, (admin) =>
        admin.query(`CREATE DATABASE ${databaseName} TEMPLATE ${inject('templateDatabase')}`),
      );
    }
    const url = new URL(adminUrl);
    url.pathname = `/${databaseName}`;
    env.databaseUrl = url.toString();
    env.pool = createPool(env.databaseUrl, { max: 10, applicationName: 'bulk-import-test' });
    env.s3Endpoint = inject('s3Endpoint');
    const credentials = inject('s3Credentials');
    const region = inject('s3Region');
    env.s3 = createS3Client({ region, endpoint: env.s3Endpoint, credentials });
    env.bucket = `test-${suffix}`;
    await ensureBucket(env.s3, env.bucket);
    env.processEnv = {
      DATABASE_URL: env.databaseUrl,
      S3_ENDPOINT: env.s3Endpoint,
      S3_BUCKET: env.bucket,
      AWS_REGION: region,
      AWS_ACCESS_KEY_ID: credentials.accessKeyId,
      AWS_SECRET_ACCESS_KEY: credentials.secretAccessKey,
      LOG_LEVEL: process.env.TEST_WORKER_LOG_LEVEL ?? 'warn',
      LOG_FORMAT: 'json',
    };
  });
  afterAll(async () => {
    env.s3?.destroy();
    await env.pool?.end();
    if (env.postgres) {
      await env.postgres.resume().catch(() => {});
      await env.postgres.stop().catch(() => {});
      if (ownDir) await rm(ownDir, { recursive: true, force: true });
    } else if (databaseName) {
      await withAdmin(inject('adminDatabaseUrl'), (admin) =>
        admin.query(`DROP DATABASE IF EXISTS ${databaseName} WITH (FORCE)`),
      );
    }
  });
  return env;
}

async function withAdmin<T>(adminUrl: string, work: (admin: pg.Client) => Promise<T>): Promise<T> {
  const admin = new pg.Client(connectionConfig(adminUrl));
  await admin.connect();
  try {
    return await work(admin);
  } finally {
    await admin.end();
  }
}
