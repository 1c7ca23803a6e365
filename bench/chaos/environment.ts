// The servers one chaos run owns: an embedded Postgres of its own (restartable, pausable), an s3rver process of its
// own (stopped and started again on the same port and directory), and the fault-injecting proxy the workers reach S3
// through. Every round gets a fresh database (a clone of a migrated template) and a fresh bucket on them.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { createPool, type Pool } from '../../worker/db/pool.js';
import { migrate } from '../../worker/db/migrate.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../worker/dev/embedded-postgres.js';
import { ensureBucket, LOCAL_S3_CREDENTIALS, startLocalS3, type LocalS3 } from '../../worker/dev/local-s3.js';
import { createS3Client } from '../../worker/storage/s3-client.js';
import { startFaultyS3Proxy, type FaultyS3Proxy } from '../../test/support/faulty-s3-proxy.js';
import { withClient } from '../support/pg-client.js';

const TEMPLATE = 'chaos_template';
export const REGION = 'us-east-1';

/** The S3 server process, which a fault may stop and start again on the same port and directory. */
export interface RestartableS3 {
  readonly endpoint: string;
  readonly running: boolean;
  stop(): Promise<void>;
  start(): Promise<void>;
}

export interface ChaosEnvironment {
  /** Scratch folder of the run: Postgres data, S3 data, worker logs, the mass-import tree. */
  dir: string;
  postgres: EmbeddedPostgres;
  s3Server: RestartableS3;
  /** The workers' S3 endpoint: a proxy in front of the S3 server that injects faults on demand. */
  proxy: FaultyS3Proxy;
  /** Straight to the S3 server (uploads of test data, checks). */
  s3: S3Client;
  close(): Promise<void>;
}

export interface RoundResources {
  database: string;
  databaseUrl: string;
  bucket: string;
  /** The harness's own pool (application_name chaos-harness: never a target of pg_terminate_backend). */
  pool: Pool;
  /** Environment for a worker process: this round's database, bucket and the proxy. */
  processEnv: Record<string, string>;
  dispose(): Promise<void>;
}

export async function startChaosEnvironment(options: { dir?: string } = {}): Promise<ChaosEnvironment> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'bulk-import-chaos-')));
  // As root, Postgres runs as another user who must traverse the folder (mkdtemp makes it 0700).
  await chmod(dir, 0o755);
  const stops: Array<() => Promise<void>> = [];
  try {
    const postgres = await startEmbeddedPostgres({ baseDir: join(dir, 'postgres'), persistent: false, fast: true });
    stops.push(async () => {
      await postgres.resume().catch(() => {});
      await postgres.stop();
    });
    await withClient(postgres.adminUrl, (admin) => admin.query(`CREATE DATABASE ${TEMPLATE}`));
    await migrate(postgres.databaseUrl(TEMPLATE));

    const s3Server = await startRestartableS3(join(dir, 's3'));
    stops.push(() => s3Server.stop());
    const proxy = await startFaultyS3Proxy(s3Server.endpoint);
    stops.push(() => proxy.close());
    const s3 = createS3Client({ region: REGION, endpoint: s3Server.endpoint, credentials: LOCAL_S3_CREDENTIALS });
    stops.push(async () => s3.destroy());
    return {
      dir,
      postgres,
      s3Server,
      proxy,
      s3,
      close: async () => {
        for (const stop of stops.reverse()) await stop().catch(() => {});
        if (!options.dir) await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    throw error;
  }
}

async function startRestartableS3(directory: string): Promise<RestartableS3> {
  let server: LocalS3 | undefined = await startLocalS3(directory);
  const endpoint = server.endpoint;
  const port = Number(new URL(endpoint).port);
  return {
    endpoint,
    get running() {
      return server !== undefined;
    },
    async stop() {
      const current = server;
      server = undefined;
      await current?.stop();
    },
    async start() {
      if (server) return;
      // The port was just released; a start that races its release is tried again.
      for (let attempt = 1; ; attempt += 1) {
        try {
          server = await startLocalS3(directory, port);
          return;
        } catch (error) {
          if (attempt >= 20) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
    },
  };
}

/** A fresh database and bucket for one round. */
export async function prepareRound(env: ChaosEnvironment, name: string): Promise<RoundResources> {
  const database = `chaos_${name.replace(/[^a-z0-9_]/g, '_')}`;
  const bucket = `chaos-${name.replace(/[^a-z0-9-]/g, '-')}`;
  await withClient(env.postgres.adminUrl, async (admin) => {
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.query(`CREATE DATABASE ${database} TEMPLATE ${TEMPLATE}`);
  });
  await ensureBucket(env.s3, bucket);
  const databaseUrl = env.postgres.databaseUrl(database);
  // Migrations added to the checkout since the template was made (a long run in a shared checkout) go in too: a
  // worker refuses a schema behind its build.
  await migrate(databaseUrl);
  // A client-side bound on every statement: while the server is frozen the harness's reads fail and are tried again.
  const pool = createPool(databaseUrl, { max: 6, applicationName: 'chaos-harness', queryTimeoutMs: 5_000 });
  return {
    database,
    databaseUrl,
    bucket,
    pool,
    processEnv: {
      DATABASE_URL: databaseUrl,
      S3_ENDPOINT: env.proxy.endpoint,
      S3_BUCKET: bucket,
      AWS_REGION: REGION,
      AWS_ACCESS_KEY_ID: LOCAL_S3_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: LOCAL_S3_CREDENTIALS.secretAccessKey,
    },
    dispose: async () => {
      await pool.end().catch(() => {});
      await withClient(env.postgres.adminUrl, (admin) => admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`)).catch(() => {});
      // s3rver keeps a bucket as a folder of its directory; nobody uses this one any more.
      await rm(join(env.dir, 's3', bucket), { recursive: true, force: true });
    },
  };
}

