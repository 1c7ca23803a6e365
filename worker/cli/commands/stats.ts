// `stats`: how many runs per kind and state, and what finished in the last hour (or --window).
import { Option, type Command } from 'commander';
import { countJobsByKindAndState, readThroughput } from '../../queue/stats.js';
import { JOB_STATES } from '../../queue/types.js';
import { withDatabase } from '../context.js';
import { formatDuration, formatTable, printJson, printLine } from '../output.js';
import { parseDurationMs } from '../parse.js';

export function registerStatsCommand(program: Command): void {
  program
    .command('stats')
    .description('runs per kind and state, and throughput (finished per minute, durations) in the last hour')
    .addOption(new Option('--window <duration>', 'throughput window, e.g. 15m, 1h, 24h').argParser(parseDurationMs).default(3_600_000, '1h'))
    .option('--json', 'print JSON only')
    .action(async (options: { window: number; json?: boolean }) => {
      if (options.window <= 0) throw new Error('--window must be longer than 0');
      const { counts, throughput } = await withDatabase(async (pool) => ({
        counts: await countJobsByKindAndState(pool),
        throughput: await readThroughput(pool, options.window),
      }));
      if (options.json) return printJson({ windowMs: options.window, counts, throughput });

      const kinds = [...new Set(counts.map((count) => count.kind))].sort();
      if (kinds.length === 0) printLine('No jobs.');
      else {
        const rows = kinds.map((kind) => {
          const of = (state: string) => counts.find((count) => count.kind === kind && count.state === state)?.count ?? 0;
          return [kind, ...JOB_STATES.map(of), JOB_STATES.reduce((sum, state) => sum + of(state), 0)];
        });
        const totals = ['total', ...JOB_STATES.map((state) => counts.filter((c) => c.state === state).reduce((sum, c) => sum + c.count, 0))];
        totals.push((totals.slice(1) as number[]).reduce((sum, n) => sum + n, 0));
        printLine('Runs by kind and state');
        printLine(formatTable(['kind', ...JOB_STATES, 'total'], [...rows, totals]));
      }
      printLine('');
      printLine(`Finished in the last ${formatDuration(options.window)}`);
      if (throughput.length === 0) return printLine('Nothing finished.');
      printLine(
        formatTable(
          ['kind', 'finished', 'per min', 'succeeded', 'partial', 'failed', 'dead', 'canceled', 'mean', 'p95'],
          throughput.map((t) => [
            t.kind, t.finished, t.perMinute.toFixed(1), t.succeeded, t.partial, t.failed, t.dead, t.canceled,
            t.meanSeconds === null ? undefined : formatDuration(t.meanSeconds * 1000),
            t.p95Seconds === null ? undefined : formatDuration(t.p95Seconds * 1000),
          ]),
        ),
      );
    });
}
