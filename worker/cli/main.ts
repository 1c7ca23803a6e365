// The `bulk-import` operator CLI: runs the command tree of program.ts and turns failures into one line and an exit code.
import { CommanderError, InvalidArgumentError } from 'commander';
import { ConfigError, loadConfig } from '../config.js';
import { urlSecrets } from '../db/connection.js';
import { describeDatabaseError, scrubSecrets } from '../db/database-errors.js';
import { DatabaseUnavailableError, isConfigurationError } from '../db/database-status.js';
import { stopTracing } from '../tracing/sdk.js';
import { exitIfAsked, exitWhenDone } from './process-exit.js';
import { QueueLimitError } from '../queue/admission.js';
import { EXIT_QUEUE_LIMIT } from './commands/enqueue.js';
import { terminalSafe } from './output.js';
import { buildProgram } from './program.js';

/** The exit code of a command whose output's reader went away (128 + SIGPIPE, as a Unix tool that died of it). */
export const EXIT_BROKEN_PIPE = 141;

// A reader that goes away (`bulk-import jobs | head -1`) closes stdout: what is left to print has nowhere to go, which
// is no failure of the command to report with a stack trace. It ends at once, as a Unix tool does.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(EXIT_BROKEN_PIPE);
});

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    // A command may set its own exit code (watch: the job's outcome; audit: findings).
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    // An argument parser called inside an action (e.g. parseJobId) throws before commander could print it.
    if (error instanceof InvalidArgumentError) process.stderr.write(`bulk-import: ${terminalSafe(error.message)}\n`);
    if (error instanceof CommanderError) return error.exitCode;
    process.stderr.write(`bulk-import: ${terminalSafe(describeError(error))}\n`);
    // sysexits: 78 configuration (including a database that refuses it), 69 a service that stayed unavailable.
    if (error instanceof ConfigError || isConfigurationError(error)) return 78;
    if (error instanceof QueueLimitError) return EXIT_QUEUE_LIMIT;
    return error instanceof DatabaseUnavailableError ? 69 : 1;
  }
}

/** One line, with the database URL's password (and the URL itself) scrubbed out of it. */
function describeError(error: unknown): string {
  let secrets: string[] = [];
  try {
    secrets = urlSecrets(loadConfig().databaseUrl);
  } catch {
    // a configuration that does not load has already said why, without its secrets
  }
  return scrubSecrets(describeDatabaseError(error), secrets);
}

process.exitCode = await main(process.argv);
// The spans still buffered are exported before the process ends (a no-op when tracing is off). An export left behind
// at its deadline may still hold a socket or a retry timer: the process then ends without waiting for it.
if (!(await stopTracing())) exitWhenDone(async () => undefined);
// The worker asks to end the process here, whatever a stuck handler left running (process-exit.ts).
await exitIfAsked();
