// `bulk-import errors <id>`: the failed items or rows of any run, through its kind's handler (listErrors /
// exportErrorsCsv of the handler contract): file items of a mass import, rows of a CSV import, …
// `--csv` writes every one as CSV (to stdout or --output), ready to fix and import again where the kind allows.
import { createWriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';
import type { Command } from 'commander';
import { defaultRegistry } from '../../handlers/registry.js';
import { requireJob } from '../../queue/operator.js';
import { withDatabase } from '../context.js';
import { formatTable, printJson, printLine, terminalSafeLines } from '../output.js';
import { MAX_LIST_LIMIT, parseJobId, parseLimit, parseNonNegativeInt } from '../parse.js';

interface ErrorsOptions {
  csv?: boolean;
  output?: string;
  limit: number;
  offset: number;
  json?: boolean;
}

export function registerErrorsCommand(program: Command): void {
  program
    .command('errors <id>')
    .description("a run's failed items or rows with their reasons; --csv writes them all as CSV to fix and import again")
    .option('--csv', 'write every failed row/item as CSV (original columns, row number, errors) to stdout or --output')
    .option('--output <file>', 'with --csv: write to this file instead of stdout')
    .option('--limit <n>', `without --csv: at most this many (up to ${MAX_LIST_LIMIT})`, parseLimit, 50)
    .option('--offset <n>', 'without --csv: skip this many first (paging)', parseNonNegativeInt, 0)
    .option('--json', 'print JSON only (with --csv: a JSON line saying how many rows went to --output)')
    .action(async (id: string, options: ErrorsOptions) => {
      const jobId = parseJobId(id);
      if (options.output && !options.csv) throw new Error('errors: --output only applies with --csv');
      if (options.csv && options.json && !options.output) {
        throw new Error('errors: --csv --json needs --output <file> (stdout carries the JSON)');
      }
      await withDatabase(async (pool) => {
        const job = await requireJob(pool, jobId);
        const handler = defaultRegistry().get(job.kind);
        if (options.csv) {
          if (!handler?.exportErrorsCsv) throw new Error(`job ${jobId} is a ${job.kind} run: that kind has no failed-row export`);
          const toTerminal = !options.output && process.stdout.isTTY === true;
          const out = options.output ? createWriteStream(options.output) : toTerminal ? terminalSafeLines() : process.stdout;
          if (toTerminal) out.pipe(process.stdout, { end: false });
          // The CLI is the operators' tool: S3's own text included.
          const rows = await handler.exportErrorsCsv(pool, jobId, out, { operator: true });
          if (out !== process.stdout) {
            out.end();
            await finished(out);
          }
          if (options.json) printJson({ id: jobId, kind: job.kind, rows, file: options.output });
          else if (options.output) process.stderr.write(`${rows} failed row(s)/item(s) of job ${jobId} written to ${options.output}\n`);
          return;
        }
        if (!handler?.listErrors) throw new Error(`job ${jobId} is a ${job.kind} run: that kind records no per-item errors`);
        const errors = await handler.listErrors(pool, jobId, { limit: options.limit, offset: options.offset });
        // A page may hold fewer rows than --limit and still have more after it (long rows fill its byte budget):
        // the next page starts at nextOffset, not at offset + limit.
        const shownUpTo = options.offset + errors.rows.length;
        const nextOffset = errors.rows.length > 0 && shownUpTo < errors.total ? shownUpTo : null;
        if (options.json) return printJson({ id: jobId, kind: job.kind, state: job.state, offset: options.offset, nextOffset, ...errors });
        if (errors.total === 0) return printLine(`Job ${jobId} (${job.kind}, ${job.state}) has no failed items or rows.`);
        printLine(`Job ${jobId} (${job.kind}, ${job.state}): ${errors.total} failed item(s)/row(s)`);
        printLine(formatTable(errors.columns, errors.rows.map((row) => errors.columns.map((column) => row[column]))));
        if (nextOffset !== null) {
          printLine(`(${errors.rows.length} of ${errors.total} from offset ${options.offset}; next page: --offset ${nextOffset}; all as CSV: --csv)`);
        }
      });
    });
}
