// The review decision on a CSV import parked in review_ready: `finalize <id>` writes its valid rows (the run is
// resumed as csv-finalize), `reject <id>` ends it without writing and discards what validation recorded for finalize.
import type { Command } from 'commander';
import { cliActor, finalizeRun, rejectRun } from '../../actions/run-actions.js';
import { withDatabase } from '../context.js';
import { printJson, printLine } from '../output.js';
import { parseJobId } from '../parse.js';

export function registerCsvReviewCommands(program: Command): void {
  program
    .command('finalize <id>')
    .description('approve a reviewed CSV import: a worker writes its valid rows (bulk-import watch <id> to follow)')
    .option('--note <text>', 'why (kept in the run history; the run\'s tenant reads it too)')
    .option('--exclude-rows <lines>', 'do not write these rows (line numbers and ranges, e.g. 12,40-90); they are exported with the errors')
    .option('--validated-at <time>', 'the validation approved (validatedAt in `show <id>`): refused if the run was validated again since')
    .option('--json', 'print JSON only')
    .action(async (id: string, options: { note?: string; excludeRows?: string; validatedAt?: string; json?: boolean }) => {
      const job = await withDatabase((pool) =>
        finalizeRun(pool, cliActor(), parseJobId(id), options.note, { excludeRows: options.excludeRows, validatedAt: options.validatedAt }),
      );
      if (options.json) {
        return printJson({ id: job.id, kind: job.kind, state: job.state, ...(options.excludeRows ? { excludeRows: options.excludeRows } : {}) });
      }
      const except = options.excludeRows ? ` except rows ${options.excludeRows} (bulk-import errors ${job.id} --csv lists them)` : '';
      printLine(`Job ${job.id} is queued as ${job.kind}: a worker writes its valid rows${except}. Follow it with: bulk-import watch ${job.id}`);
    });

  program
    .command('reject <id>')
    .description('reject a reviewed CSV import: it ends canceled, nothing is written, what validation recorded for finalize is discarded')
    .option('--note <text>', 'why (kept in the run history; the run\'s tenant reads it too)')
    .option('--json', 'print JSON only')
    .action(async (id: string, options: { note?: string; json?: boolean }) => {
      const job = await withDatabase((pool) => rejectRun(pool, cliActor(), parseJobId(id), options.note));
      const discarded = (job.result as { discardedRows?: number } | null)?.discardedRows ?? 0;
      if (options.json) return printJson({ id: job.id, kind: job.kind, state: job.state, discardedRows: discarded });
      printLine(`Job ${job.id} rejected: ${job.state}, nothing written, ${discarded} validated row(s) discarded.`);
    });
}
