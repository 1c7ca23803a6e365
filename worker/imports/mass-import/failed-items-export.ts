// The failed items of a mass-import run as CSV (RFC 4180 quoting: paths may hold commas, quotes and newlines), for
// `bulk-import errors <id> --csv` and `GET /v1/jobs/{id}/errors?format=csv`. Written page by page so a run with many
// failures never sits in memory. File names and error messages come from the campaign's files: a cell a spreadsheet
// would run as a formula (`=HYPERLINK(…).pdf`) gets the same leading `'` as the CSV row-error export.
import { once } from 'node:events';
import type { Queryable } from '../../db/pool.js';
import { escapeFormula } from '../csv/formula-escape.js';
import type { ErrorsReader } from '../../handlers/types.js';
import { itemErrorMessage } from '../../queue/visible-errors.js';
import { listItemsAfter } from './items-table.js';

const PAGE = 1_000;
const HEADER = ['item_no', 'relative_path', 'size_bytes', 'error_code', 'error_message', 'tries', 'sha256'];

export function csvField(value: unknown): string {
  if (value === null || value === undefined) return '';
  const text = typeof value === 'string' ? escapeFormula(value) : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

async function write(out: NodeJS.WritableStream, text: string): Promise<void> {
  if (!out.write(text)) await once(out as NodeJS.EventEmitter, 'drain');
}

export async function writeFailedItemsCsv(db: Queryable, jobId: number, out: NodeJS.WritableStream, reader: ErrorsReader): Promise<number> {
  await write(out, `${HEADER.join(',')}\r\n`);
  let written = 0;
  // Keyset pages in plan order (never OFFSET, which rereads every earlier row: the last page of a million failures
  // would cost a million rows).
  for (let afterItemNo = -1; ; ) {
    const items = await listItemsAfter(db, jobId, { states: ['failed'], afterItemNo, limit: PAGE });
    for (const item of items) {
      const message = itemErrorMessage(item.errorCode, item.errorMessage, reader.operator);
      const fields = [item.itemNo, item.relativePath, item.size, item.errorCode, message, item.tries, item.sha256];
      await write(out, `${fields.map(csvField).join(',')}\r\n`);
    }
    written += items.length;
    if (items.length < PAGE) return written;
    afterItemNo = items.at(-1)!.itemNo;
  }
}
