// The writer of a validation's row errors keeps memory flat for wide rows too: it writes what it holds once the rows'
// fields reach a character budget, not only every thousand rows (a thousand rows of up to a million characters each
// would be a gigabyte held at once, and more than the longest string V8 can build for the write).
import { expect, it } from 'vitest';
import { RowErrorWriter } from '../worker/imports/csv/validate-import.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

it('writes three rows of three million characters at once, long before a thousand rows', async () => {
  const { job } = await enqueueJob(env.pool, { kind: 'csv-wide-errors', payload: {} });
  const client = await env.pool.connect();
  try {
    const writer = new RowErrorWriter(client, job.id, async () => {});
    const wide = (row: number) => ({
      row,
      fields: [`SKU-${row}`, 'x'.repeat(3 * 1024 * 1024)],
      issues: [{ column: 'description', rule: 'max_length', message: 'description is longer than 2000 characters' }],
    });
    expect(writer.add(wide(2))).toBeUndefined();
    expect(writer.add(wide(3))).toBeUndefined();
    const written = writer.add(wide(4));
    expect(written).toBeInstanceOf(Promise);
    await written;
    await writer.drain();
    const { rows } = await env.pool.query(
      `SELECT row_number, length(fields[2]) AS chars FROM csv_import_row_errors WHERE job_id = $1 ORDER BY row_number`,
      [job.id],
    );
    expect(rows).toEqual([2, 3, 4].map((row) => ({ row_number: row, chars: 3 * 1024 * 1024 })));
  } finally {
    client.release();
  }
});
