// The `bulk-import` operator CLI. Each command lives in its own module under commands/ and registers itself here.
import { Command, CommanderError } from 'commander';
import { ConfigError } from '../config.js';
import { registerMigrateCommand } from './commands/migrate.js';
import { registerLocalCommand } from './commands/local.js';
import { registerWorkerCommand } from './commands/worker.js';
import { registerEnqueueCommand } from './commands/enqueue.js';
import { registerJobCommands } from './commands/jobs.js';

export function buildProgram(): Command {
  const program = new Command('bulk-import')
    .description('Leased, retried, resumable bulk imports into PostgreSQL and S3')
    .showHelpAfterError()
    .exitOverride();
  registerMigrateCommand(program);
  registerLocalCommand(program);
  registerWorkerCommand(program);
  registerEnqueueCommand(program);
  registerJobCommands(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    process.stderr.write(`bulk-import: ${describeError(error)}\n`);
    return error instanceof ConfigError ? 78 : 1;
  }
}

function describeError(error: unknown): string {
  if (error instanceof Error) return error.message.split('\n')[0] ?? error.name;
  return String(error);
}

process.exitCode = await main(process.argv);
