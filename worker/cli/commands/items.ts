// `bulk-import items <id>`: the files of a mass-import run, one line each, with their state and error.
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { MASS_IMPORT_KIND } from '../../handlers/kinds.js';
import { ITEM_STATES, listItems, type ItemState } from '../../imports/mass-import/items-table.js';
import { requireJob } from '../../queue/operator.js';
import { withDatabase } from '../context.js';
import { formatBytes, formatTable, printJson, printLine } from '../output.js';
import { MAX_LIST_LIMIT, parseJobId, parseLimit, parseList, parseNonNegativeInt } from '../parse.js';

function parseItemStates(value: string): ItemState[] {
  const states = parseList(value);
  const unknown = states.filter((state) => !(ITEM_STATES as readonly string[]).includes(state));
  if (unknown.length > 0) throw new InvalidArgumentError(`unknown item state(s) ${unknown.join(', ')}; states: ${ITEM_STATES.join(', ')}`);
  return states as ItemState[];
}

interface ItemsOptions {
  state?: ItemState[];
  limit: number;
  offset: number;
  json?: boolean;
}

export function registerItemsCommand(program: Command): void {
  program
    .command('items <id>')
    .description('the files of a mass-import run: path, state (pending, done, skipped, failed), size, error')
    .option('--state <list>', `only items in these state(s): ${ITEM_STATES.join(', ')}`, parseItemStates)
    .option('--limit <n>', `at most this many items (up to ${MAX_LIST_LIMIT})`, parseLimit, 100)
    .option('--offset <n>', 'skip this many items first (paging)', parseNonNegativeInt, 0)
    .option('--json', 'print JSON only')
    .action(async (id: string, options: ItemsOptions) => {
      const jobId = parseJobId(id);
      const { job, page } = await withDatabase(async (pool) => {
        const job = await requireJob(pool, jobId);
        if (job.kind !== MASS_IMPORT_KIND) {
          throw new Error(`job ${jobId} is a ${job.kind} run: only mass-import runs have file items (see \`bulk-import show ${jobId}\`)`);
        }
        const page = await listItems(pool, jobId, { states: options.state, limit: options.limit, offset: options.offset });
        return { job, page };
      });
      if (options.json) return printJson({ jobId, state: job.state, total: page.total, offset: options.offset, items: page.items });
      if (page.total === 0) {
        return printLine(options.state ? `Job ${jobId} has no ${options.state.join('/')} items.` : `Job ${jobId} has no items (not planned yet, or a dry run).`);
      }
      printLine(
        formatTable(
          ['#', 'state', 'size', 'path', 'sha256', 'error'],
          page.items.map((item) => [
            item.itemNo,
            item.state,
            formatBytes(item.size),
            JSON.stringify(item.relativePath).slice(1, -1),
            item.sha256?.slice(0, 12),
            item.errorCode ? `${item.errorCode}: ${item.errorMessage}` : undefined,
          ]),
        ),
      );
      const shown = page.items.length;
      if (options.offset + shown < page.total) {
        printLine(`(${shown} of ${page.total} from offset ${options.offset}; next page: --offset ${options.offset + shown})`);
      }
    });
}
