// The embedded Postgres of a benchmark: a throw-away cluster in a temporary folder with one migrated database.
// stop() ends the server and removes the folder.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { migrate } from '../../worker/db/migrate.js';
import { startEmbeddedPostgres } from '../../worker/dev/embedded-postgres.js';
import { withClient } from './pg-client.js';

export interface BenchDatabase {
  /** The migrated database's URL. */
  url: string;
  /** Another migrated database on the same server; its URL. */
  addDatabase(name: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startBenchDatabase(
  name: string,
  options: { sharedBuffers?: string; settings?: Record<string, string> } = {},
): Promise<BenchDatabase> {
  const stateDir = await mkdtemp(join(tmpdir(), `${name.replace(/_/g, '-')}-`));
  // Traversable by the embedded server's own user.
  await chmod(stateDir, 0o755);
  const postgres = await startEmbeddedPostgres({ baseDir: join(stateDir, 'pg'), persistent: false, fast: true, ...options });
  const stop = async () => {
    await postgres.stop();
    await rm(stateDir, { recursive: true, force: true });
  };
  const addDatabase = async (database: string) => {
    await withClient(postgres.adminUrl, (admin) => admin.query(`CREATE DATABASE ${database}`));
    const url = postgres.databaseUrl(database);
    await migrate(url);
    return url;
  };
  try {
    return { url: await addDatabase(name), addDatabase, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}
