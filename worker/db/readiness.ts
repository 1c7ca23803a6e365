// The check a worker makes before it claims anything: it can log in, and the schema has every migration this build
// ships. A worker that can never work (wrong password, refused port, migrations not applied) exits with one clear
// line instead of looking healthy while it logs errors: the deployment's health check then fails and ECS rolls the
// deployment back. A database that is only away for a moment (the task started during a failover) is waited for, up
// to DATABASE_STARTUP_TIMEOUT_MS.
import { readdirSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Queryable } from './pool.js';
import { describeDatabaseError } from './database-errors.js';
import { DatabaseConfigurationError, DatabaseUnavailableError, isConfigurationError, isConnectionError } from './database-status.js';
import { MIGRATIONS_DIR } from './migrate.js';
import { sqlState } from './sql-state.js';

/** Migration names this build expects (file names without extension, as node-pg-migrate records them). */
export function expectedMigrations(dir: string = MIGRATIONS_DIR): string[] {
  return readdirSync(dir)
    .filter((file) => /^\d+_.+\.(sql|js|ts)$/.test(file))
    .map((file) => file.replace(/\.(sql|js|ts)$/, ''))
    .sort();
}

/** Throws a DatabaseConfigurationError naming what is missing when the schema is behind this build. */
export async function checkSchema(db: Queryable, expected: readonly string[] = expectedMigrations()): Promise<void> {
  let applied: Set<string>;
  try {
    const { rows } = await db.query<{ name: string }>('SELECT name FROM pgmigrations');
    applied = new Set(rows.map((row) => row.name));
  } catch (error) {
    if (sqlState(error) === '42P01') {
      throw new DatabaseConfigurationError('the database has no bulk-import schema (no pgmigrations table): run `bulk-import migrate`');
    }
    throw error;
  }
  const missing = expected.filter((name) => !applied.has(name));
  if (missing.length > 0) {
    throw new DatabaseConfigurationError(
      `the database schema is behind this build: ${missing.length} migration(s) not applied (first ${missing[0]}): run \`bulk-import migrate\``,
    );
  }
}

export interface ReadinessOptions {
  /** How long to wait for a database that is unreachable (connection refused, timed out, shutting down). */
  timeoutMs: number;
  onWaiting?: (message: string) => void;
}

/**
 * Resolves once the database answers and its schema is current. Rejects at once with a DatabaseConfigurationError (or
 * the server's error for authentication and similar), or with a DatabaseUnavailableError after the wait.
 */
export async function waitForDatabase(db: Queryable, options: ReadinessOptions): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  let delayMs = 250;
  let told = false;
  for (;;) {
    try {
      await checkSchema(db);
      return;
    } catch (error) {
      if (isConfigurationError(error) || !isConnectionError(error)) throw error;
      if (Date.now() + delayMs > deadline) {
        throw new DatabaseUnavailableError(
          `the database did not answer within ${Math.round(options.timeoutMs / 1000)} s (DATABASE_STARTUP_TIMEOUT_MS): ${describeDatabaseError(error)}`,
        );
      }
      if (!told) options.onWaiting?.(describeDatabaseError(error));
      told = true;
      await sleep(delayMs);
      delayMs = Math.min(delayMs * 2, 5_000);
    }
  }
}
