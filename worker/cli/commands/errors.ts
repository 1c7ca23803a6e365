// `bulk-import errors <id>`: the failed items or rows of any run, through its kind's handler (listErrors /
// exportErrorsCsv of the handler contract): file items of a mass import, rows of a CSV import, …
// `--csv` writes every one as CSV (to stdout or --output), ready to fix and import again where the kind allows.
import { randomBytes } from 'node:crypto';
import { createWriteStream, unlinkSync } from 'node:fs';
import { realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { finished } from 'node:stream/promises';
import type { Command } from 'commander';
import { defaultRegistry } from '../../handlers/registry.js';
import { requireJob } from '../../queue/operator.js';
import { withDatabase } from '../context.js';
import { formatTable, printJson, printLine, terminalSafe, terminalSafeLines } from '../output.js';
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
          const exportErrorsCsv = handler?.exportErrorsCsv;
          if (!exportErrorsCsv) throw new Error(`job ${jobId} is a ${job.kind} run: that kind has no failed-row export`);
          // The CLI is the operators' tool: S3's own text included.
          const exportTo = (out: NodeJS.WritableStream) => exportErrorsCsv.call(handler, pool, jobId, out, { operator: true });
          let rows: number;
          if (options.output) {
            rows = await writeWholeFile(options.output, exportTo);
          } else if (process.stdout.isTTY === true) {
            const out = terminalSafeLines();
            out.pipe(process.stdout, { end: false });
            rows = await exportTo(out);
            out.end();
            await finished(out);
          } else {
            rows = await exportTo(process.stdout);
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
        const soFar = errors.incomplete ? ` so far — ${errors.incomplete}` : '';
        if (errors.total === 0) {
          // A run that failed as a whole (a header it could not use, a mount that was not there) has no failed rows or
          // items: its last error is why.
          const whole = job.lastError && job.state !== 'succeeded' ? `; its last error: ${terminalSafe(job.lastError.code)} (bulk-import show ${jobId})` : '';
          return printLine(`Job ${jobId} (${job.kind}, ${job.state}) has no failed items or rows${soFar}${whole}.`);
        }
        printLine(`Job ${jobId} (${job.kind}, ${job.state}): ${errors.total} failed item(s)/row(s)${soFar}`);
        printLine(formatTable(errors.columns, errors.rows.map((row) => errors.columns.map((column) => row[column]))));
        if (nextOffset !== null) {
          printLine(`(${errors.rows.length} of ${errors.total} from offset ${options.offset}; next page: --offset ${nextOffset}; all as CSV: --csv)`);
        }
      });
    });
}

/**
 * Runs `write` into a new file beside `file` and renames it over `file` only once `write` returned and the bytes are on
 * disk (flushed before the rename). An export that fails part-way (the database restarted, its session was ended, the
 * disk filled) leaves no `file`, or an earlier one as it was: a valid-looking CSV with fewer rows would be fixed and
 * imported again as if it held every failed row, and the rows missing from it never would be. The partial file is
 * removed, also on Ctrl-C or SIGTERM. A `file` that is no regular file (a FIFO, /dev/stdout) has nothing to replace:
 * it is written as the rows come, as before. A symlink keeps pointing where it did: the file it names is replaced.
 */
async function writeWholeFile<T>(file: string, write: (out: NodeJS.WritableStream) => Promise<T>): Promise<T> {
  const existing = await stat(file).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return null;
    throw error;
  });
  if (existing && !existing.isFile()) return writeThrough(file, write);
  const target = existing ? await realpath(file) : file;
  const partial = join(dirname(target), `.${basename(target)}.${randomBytes(6).toString('hex')}.partial`);
  // An existing file keeps its permissions; a new one gets the usual ones (0666 less the umask).
  const out = createWriteStream(partial, { flags: 'wx', flush: true, ...(existing ? { mode: existing.mode & 0o7777 } : {}) });
  const removeOnSignal = (signal: NodeJS.Signals) => {
    try {
      unlinkSync(partial);
    } catch {
      // not created yet, or already gone
    }
    process.kill(process.pid, signal);
  };
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const signal of signals) process.once(signal, removeOnSignal);
  try {
    // The file's own failures (no such directory, no space left) end the export too, and are not left unheard.
    const streamFailed = new Promise<never>((_, reject) => out.on('error', reject));
    const result = await Promise.race([write(out), streamFailed]);
    out.end();
    await Promise.race([finished(out), streamFailed]);
    await rename(partial, target);
    return result;
  } catch (error) {
    out.destroy();
    await rm(partial, { force: true });
    process.stderr.write(
      `bulk-import: ${terminalSafe(file)} was not written: the export failed${existing ? ` (the earlier ${terminalSafe(file)} is left as it was)` : ''}\n`,
    );
    throw error;
  } finally {
    for (const signal of signals) process.off(signal, removeOnSignal);
  }
}

async function writeThrough<T>(file: string, write: (out: NodeJS.WritableStream) => Promise<T>): Promise<T> {
  const out = createWriteStream(file);
  const streamFailed = new Promise<never>((_, reject) => out.on('error', reject));
  try {
    const result = await Promise.race([write(out), streamFailed]);
    out.end();
    await Promise.race([finished(out), streamFailed]);
    return result;
  } catch (error) {
    out.destroy();
    process.stderr.write(`bulk-import: the export failed: what ${terminalSafe(file)} received is incomplete\n`);
    throw error;
  }
}
