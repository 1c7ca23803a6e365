// The embedded default environment: a real Postgres and a real S3-compatible server on loopback, started by the
// project itself. Used by `bulk-import local` and the test harness; production never touches this module.
import { join } from 'node:path';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres.js';
import { ensureBucket, LOCAL_S3_CREDENTIALS, startLocalS3, type LocalS3 } from './local-s3.js';
import { createS3Client } from '../storage/s3-client.js';

export interface LocalEnvironment {
  postgres: EmbeddedPostgres;
  s3: LocalS3;
  region: string;
  credentials: typeof LOCAL_S3_CREDENTIALS;
  stop(): Promise<void>;
}

export interface LocalEnvironmentOptions {
  /** Folder for the database cluster and the S3 server's files. */
  stateDir: string;
  persistent: boolean;
  fast?: boolean;
  buckets?: string[];
}

export async function startLocalEnvironment(options: LocalEnvironmentOptions): Promise<LocalEnvironment> {
  const [startedPostgres, startedS3] = await Promise.allSettled([
    startEmbeddedPostgres({ baseDir: join(options.stateDir, 'postgres'), persistent: options.persistent, fast: options.fast ?? false }),
    startLocalS3(join(options.stateDir, 's3')),
  ]);
  // One that failed to start: the other is stopped again, or its process would keep this one alive after the error.
  if (startedPostgres.status === 'rejected' || startedS3.status === 'rejected') {
    await Promise.allSettled([
      startedPostgres.status === 'fulfilled' ? startedPostgres.value.stop() : undefined,
      startedS3.status === 'fulfilled' ? startedS3.value.stop() : undefined,
    ]);
    throw startedPostgres.status === 'rejected' ? startedPostgres.reason : (startedS3 as PromiseRejectedResult).reason;
  }
  const [postgres, s3] = [startedPostgres.value, startedS3.value];
  const region = 'us-east-1';
  const client = createS3Client({ region, endpoint: s3.endpoint, credentials: LOCAL_S3_CREDENTIALS });
  try {
    for (const bucket of options.buckets ?? []) await ensureBucket(client, bucket);
  } finally {
    client.destroy();
  }
  return {
    postgres,
    s3,
    region,
    credentials: LOCAL_S3_CREDENTIALS,
    stop: async () => {
      await Promise.allSettled([postgres.stop(), s3.stop()]);
    },
  };
}
