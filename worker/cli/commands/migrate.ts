import type { Command } from 'commander';
import { loadConfig, requireDatabase } from '../../config.js';
import { migrate } from '../../db/migrate.js';
import { printJson, printLine } from '../output.js';
import { integerIn } from '../parse.js';

export function registerMigrateCommand(program: Command): void {
  program
    .command('migrate')
    .description('apply the database migrations (or revert with --down)')
    .option('--down', 'revert migrations instead of applying them')
    .option('--count <n>', 'how many migrations to apply or revert, 1-10000 (default: all up, one down)', integerIn(1, 10_000))
    .option('--json', 'print JSON only')
    .action(async (options: { down?: boolean; count?: number; json?: boolean }) => {
      const databaseUrl = requireDatabase(loadConfig());
      const applied = await migrate(databaseUrl, {
        direction: options.down ? 'down' : 'up',
        ...(options.count !== undefined ? { count: options.count } : {}),
      });
      if (options.json) return printJson({ direction: options.down ? 'down' : 'up', migrations: applied });
      if (applied.length === 0) return printLine('Database is up to date: no migration to run.');
      printLine(`${options.down ? 'Reverted' : 'Applied'} ${applied.length} migration(s):`);
      for (const name of applied) printLine(`  ${name}`);
    });
}
