import type { Command } from 'commander';
import { loadConfig } from '../../config.js';
import { createLogger, logsWritten } from '../../logger.js';
import { startWorkerProcess, stopOnSignals } from '../../runner/worker-process.js';
import { integerIn, parseList } from '../parse.js';
import { exitWhenDone } from '../process-exit.js';

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('run a worker: claim and run jobs until SIGTERM/SIGINT (the ECS service command)')
    .option('--concurrency <n>', 'jobs run at once, 1-1000 (default WORKER_CONCURRENCY)', integerIn(1, 1000))
    .option('--kinds <list>', 'only these job kinds, comma-separated (default WORKER_KINDS or all)', parseList)
    .option('--exit-when-idle', 'exit once no job is due and none is running')
    .action(async (options: { concurrency?: number; kinds?: string[]; exitWhenIdle?: boolean }) => {
      const config = loadConfig();
      const log = createLogger({ level: config.logLevel, format: config.logFormat });
      const running = await startWorkerProcess({
        config,
        log,
        ...(options.concurrency !== undefined ? { concurrency: options.concurrency } : {}),
        ...(options.kinds !== undefined ? { kinds: options.kinds } : {}),
        exitWhenIdle: options.exitWhenIdle ?? false,
      });
      stopOnSignals(running, log);
      exitWhenDone(() => logsWritten(log));
      await running.closed;
    });
}
