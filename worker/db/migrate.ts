// Applies the SQL migrations in migrations/ with node-pg-migrate. Each file holds an `-- Up Migration` and a
// `-- Down Migration` section, so the same files work from the sources and from the built image.
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { backoffCeilingMs } from '../queue/backoff.js';
import { CONNECT_TIMEOUT_MS, connectionConfig, type DatabaseTarget } from './connection.js';
import { sqlState } from './sql-state.js';

// worker/db/ in a source checkout, dist/worker/db/ in the built image: the migrations folder is at the package root.
export const MIGRATIONS_DIR = ['../../migrations', '../../../migrations']
  .map((relative) => fileURLToPath(new URL(relative, import.meta.url)))
  .find((dir) => existsSync(dir)) as string;

export interface MigrateOptions {
  direction?: 'up' | 'down';
  /** How many migrations to apply or revert; default all for up, 1 for down. */
  count?: number;
  log?: (message: string) => void;
  /**
   * How long one statement of a migration waits for a lock (lock_timeout) before the attempt is rolled back and tried
   * again later; default MIGRATION_LOCK_TIMEOUT_MS.
   */
  lockTimeoutMs?: number;
  /** Attempts in all before the migration fails for want of a lock; default MIGRATION_LOCK_ATTEMPTS. */
  lockAttempts?: number;
  /** How long connecting may take; default CONNECT_TIMEOUT_MS (a deploy's migration task must not hang on a silent host). */
  connectTimeoutMs?: number;
  /** Pause before the next attempt, from the attempt just failed (1, 2, …); default migrationRetryDelayMs. */
  retryDelayMs?: (attempt: number) => number;
  /** Told of each attempt given up for a lock, before the pause. */
  onLockRetry?: (retry: LockRetry) => void;
}

export interface LockRetry {
  /** The attempt that gave up (1, 2, …) and how many there may be. */
  attempt: number;
  attempts: number;
  lockTimeoutMs: number;
  delayMs: number;
}

// Why migrations give up waiting for a lock: a statement that waits for a lock on jobs (an ALTER TABLE waiting for a
// long transaction to end) is queued ahead of every later request for that table, so every claim, heartbeat and
// completion of the fleet would wait behind it, for as long as the transaction it waits for lasts, and leases would
// run out. With a lock timeout the queue waits at most that long per attempt; the attempt's transaction is rolled
// back whole (the migrations run in one), and the next attempt starts from the same schema.
export const MIGRATION_LOCK_TIMEOUT_MS = 5_000;
export const MIGRATION_LOCK_ATTEMPTS = 20;
const LOCK_NOT_AVAILABLE = '55P03';

/** 1, 2, 4 … up to 15 s, with jitter: the transaction in the way gets time to end, and the queue time to catch up. */
function migrationRetryDelayMs(attempt: number): number {
  const ceiling = backoffCeilingMs({ baseMs: 1_000, maxMs: 15_000 }, attempt);
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export async function migrate(database: DatabaseTarget, options: MigrateOptions = {}): Promise<string[]> {
  const direction = options.direction ?? 'up';
  const lockTimeoutMs = options.lockTimeoutMs ?? MIGRATION_LOCK_TIMEOUT_MS;
  const attempts = options.lockAttempts ?? MIGRATION_LOCK_ATTEMPTS;
  for (const [name, value] of [['lockTimeoutMs', lockTimeoutMs], ['lockAttempts', attempts]] as const) {
    // lock_timeout is an int of milliseconds in Postgres.
    if (!Number.isSafeInteger(value) || value < 1 || value > 2_147_483_647) {
      throw new Error(`migrate: ${name} must be a whole number from 1 to 2147483647, not ${value}`);
    }
  }
  // Our own client, ended (and awaited) by us: the runner's own client may still be closing when it returns, and a
  // server-side termination at that moment would surface as an unhandled error.
  const client = new pg.Client(
    connectionConfig(database, { application_name: 'bulk-import-migrate', connectionTimeoutMillis: options.connectTimeoutMs ?? CONNECT_TIMEOUT_MS }),
  );
  client.on('error', () => {});
  await client.connect();
  try {
    await client.query(`SET lock_timeout = ${lockTimeoutMs}`);
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await applyMigrations(client, direction, options);
      } catch (error) {
        if (sqlState(error) !== LOCK_NOT_AVAILABLE) throw error;
        if (attempt >= attempts) {
          throw new Error(
            `migrations not applied: ${attempts} attempts each waited ${lockTimeoutMs} ms for a lock and gave up, so as not to ` +
              'hold the queue behind them. A session keeps a lock on a table they change (a long transaction? see ' +
              'pg_stat_activity); end it, or try again when the queue is quieter. Nothing was changed.',
            { cause: error },
          );
        }
        const delay = (options.retryDelayMs ?? migrationRetryDelayMs)(attempt);
        options.onLockRetry?.({ attempt, attempts, lockTimeoutMs, delayMs: delay });
        await sleep(delay);
      }
    }
  } finally {
    await client.end().catch(() => {});
  }
}

async function applyMigrations(client: pg.Client, direction: 'up' | 'down', options: MigrateOptions): Promise<string[]> {
  // Loaded when migrations run: MIGRATIONS_DIR above is read at every worker's start (db/readiness.ts), the runner
  // (and the loaders it brings) is not needed there.
  const { runner } = await import('node-pg-migrate');
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
