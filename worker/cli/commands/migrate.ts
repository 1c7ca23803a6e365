import type { Command } from 'commander';
import { loadConfig, requireDatabase } from '../../config.js';
import { migrate, MIGRATION_LOCK_ATTEMPTS, MIGRATION_LOCK_TIMEOUT_MS } from '../../db/migrate.js';
import { printJson, printLine } from '../output.js';
import { integerIn } from '../parse.js';

interface MigrateCommandOptions {
  down?: boolean;
  count?: number;
  json?: boolean;
  lockTimeoutMs: number;
  lockAttempts: number;
}

export function registerMigrateCommand(program: Command): void {
  program
    .command('migrate')
    .description('apply the database migrations (or revert with --down)')
    .option('--down', 'revert migrations instead of applying them')
    .option('--count <n>', 'how many migrations to apply or revert, 1-10000 (default: all up, one down)', integerIn(1, 10_000))
    .option(
      '--lock-timeout-ms <ms>',
      'how long a statement waits for a lock before the attempt is rolled back and tried again, so the queue never waits behind it longer (100-600000)',
      integerIn(100, 600_000),
      MIGRATION_LOCK_TIMEOUT_MS,
    )
    .option('--lock-attempts <n>', 'attempts before giving up for want of a lock, 1-1000', integerIn(1, 1_000), MIGRATION_LOCK_ATTEMPTS)
    .option('--json', 'print JSON only')
    .action(async (options: MigrateCommandOptions) => {
      const databaseUrl = requireDatabase(loadConfig());
      const applied = await migrate(databaseUrl, {
        direction: options.down ? 'down' : 'up',
        ...(options.count !== undefined ? { count: options.count } : {}),
        lockTimeoutMs: options.lockTimeoutMs,
        lockAttempts: options.lockAttempts,
        // To stderr: stdout stays the result (--json).
        onLockRetry: ({ attempt, attempts, lockTimeoutMs, delayMs }) =>
          process.stderr.write(
            `a migration waited ${lockTimeoutMs} ms for a lock and was rolled back (attempt ${attempt} of ${attempts}); ` +
              `trying again in ${(delayMs / 1000).toFixed(1)} s\n`,
          ),
      });
      if (options.json) return printJson({ direction: options.down ? 'down' : 'up', migrations: applied });
      if (applied.length === 0) return printLine('Database is up to date: no migration to run.');
      printLine(`${options.down ? 'Reverted' : 'Applied'} ${applied.length} migration(s):`);
      for (const name of applied) printLine(`  ${name}`);
    });
}
