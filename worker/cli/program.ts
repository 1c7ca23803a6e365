// The `bulk-import` command tree: each command lives in its own module under commands/ and registers itself here.
// Apart from main.ts so that the tree can be read without running it (test/docs-references.test.ts).
import { Command } from 'commander';
import { registerMigrateCommand } from './commands/migrate.js';
import { registerLocalCommand } from './commands/local.js';
import { registerWorkerCommand } from './commands/worker.js';
import { registerEnqueueCommand } from './commands/enqueue.js';
import { registerJobCommands } from './commands/jobs.js';
import { registerBackfillCommands } from './commands/backfill.js';
import { registerWatchCommand } from './commands/watch.js';
import { registerDeadCommands } from './commands/dead.js';
import { registerAuditCommand } from './commands/audit.js';
import { registerStatsCommand } from './commands/stats.js';
import { registerErrorsCommand } from './commands/errors.js';
import { registerCsvReviewCommands } from './commands/csv-review.js';
import { registerItemsCommand } from './commands/items.js';
import { registerServeCommand } from './commands/serve.js';
import { registerApiKeyCommands } from './commands/api-keys.js';
import { registerGaugesCommand } from './commands/gauges.js';


export function buildProgram(): Command {
  const program = new Command('bulk-import')
    .description('Leased, retried, resumable bulk imports into PostgreSQL and S3')
    .showHelpAfterError()
    .exitOverride()
    // Lets a command group keep options of its own that a subcommand also has (audit --limit, audit findings --limit):
    // the group's go before the subcommand's name. Commander needs it here too, not only on the group.
    .enablePositionalOptions();
  registerMigrateCommand(program);
  registerLocalCommand(program);
  registerWorkerCommand(program);
  registerEnqueueCommand(program);
  registerJobCommands(program);
  registerBackfillCommands(program);
  registerWatchCommand(program);
  registerDeadCommands(program);
  registerAuditCommand(program);
  registerStatsCommand(program);
  registerErrorsCommand(program);
  registerCsvReviewCommands(program);
  registerItemsCommand(program);
  registerServeCommand(program);
  registerApiKeyCommands(program);
  registerGaugesCommand(program);
  return program;
}
