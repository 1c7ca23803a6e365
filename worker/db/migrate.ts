// Applies the SQL migrations in migrations/ with node-pg-migrate. Each file holds an `-- Up Migration` and a
// `-- Down Migration` section, so the same files work from the sources and from the built image.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runner } from 'node-pg-migrate';
import pg from 'pg';
import { connectionConfig, type DatabaseTarget } from './connection.js';

// worker/db/ in a source checkout, dist/worker/db/ in the built image: the migrations folder is at the package root.
export const MIGRATIONS_DIR = ['../../migrations', '../../../migrations']
  .map((relative) => fileURLToPath(new URL(relative, import.meta.url)))
  .find((dir) => existsSync(dir)) as string;

export interface MigrateOptions {
  direction?: 'up' | 'down';
  /** How many migrations to apply or revert; default all for up, 1 for down. */
  count?: number;
  log?: (message: string) => void;
}

export async function migrate(database: DatabaseTarget, options: MigrateOptions = {}): Promise<string[]> {
  const direction = options.direction ?? 'up';
  // Our own client, ended (and awaited) by us: the runner's own client may still be closing when it returns, and a
  // server-side termination at that moment would surface as an unhandled error.
  const client = new pg.Client(connectionConfig(database, { application_name: 'bulk-import-migrate' }));
  client.on('error', () => {});
  await client.connect();
  try {
    return await applyMigrations(client, direction, options);
  } finally {
    await client.end().catch(() => {});
  }
}

async function applyMigrations(client: pg.Client, direction: 'up' | 'down', options: MigrateOptions): Promise<string[]> {
  const applied = await runner({
    dbClient: client,
    dir: MIGRATIONS_DIR,
    direction,
    count: options.count ?? (direction === 'up' ? Infinity : 1),
    migrationsTable: 'pgmigrations',
    checkOrder: true,
    singleTransaction: true,
    log: options.log ?? (() => {}),
  });
  return applied.map((migration) => migration.name);
}
