// The "fix and import again" loop, for as many rounds as it takes: import a file with bad rows, export the failed rows
// with the real CLI (`errors <id> --csv`), fix some, import the export, export again, fix more, import again … Each
// export carries `_row` and `_errors` once — the earlier export's are replaced, not repeated — and imports as it is.
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { csvFinalizeHandler } from '../worker/handlers/csv-finalize.js';
import { csvValidateHandler } from '../worker/handlers/csv-validate.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { csvField, csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import { testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
let worker: Worker;

beforeAll(async () => {
  worker = testWorker(env, [csvValidateHandler, csvFinalizeHandler], { leaseMs: 30_000, heartbeatMs: 1_000 });
  await worker.start();
});
afterAll(async () => worker?.stop());

async function importFile(name: string, body: string): Promise<JobRow> {
  const key = `imports/loop/${name}`;
  await upload(env.s3, env.bucket, key, body);
  const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: 'loop', payload: { bucket: env.bucket, key, profile: 'products', autoFinalize: true } });
  return waitFor(async () => {
    const run = await requireJob(env.pool, job.id);
    return run.state === 'succeeded' || run.state === 'partial' || run.state === 'failed' ? run : undefined;
  }, 30_000);
}

/** `errors <id> --csv` of the real CLI, parsed: the header and the records. */
async function exportErrors(jobId: number): Promise<{ text: string; header: string[]; records: string[][] }> {
  const result = await runCli(env, ['errors', String(jobId), '--csv']);
  expect(result.code, result.stderr).toBe(0);
  const [header, ...records] = parse(result.stdout) as string[][];
  return { text: result.stdout, header: header!, records };
}

/** The export with the records whose sku is in `fix` changed by it: what a user saves from a spreadsheet. */
function fixed(exported: { header: string[]; records: string[][] }, fix: Record<string, Partial<Record<string, string>>>): string {
  const sku = exported.header.indexOf('sku');
  const records = exported.records.map((record) => {
    const change = fix[record[sku]!];
    return change ? exported.header.map((column, index) => change[column] ?? record[index]!) : record;
  });
  return [exported.header, ...records].map((record) => csvLine(record, '\r\n')).join('');
}

async function product(sku: string): Promise<Record<string, unknown> | undefined> {
  const { rows } = await env.pool.query(`SELECT sku, name, description, price::text, quantity, status FROM products WHERE tenant_id = 'loop' AND sku = $1`, [sku]);
  return rows[0];
}

describe('export of an export imports, round after round', () => {
  it('three rounds of export → fix some → import, until every row is in', async () => {
    // Round 1: ten rows, four of them bad; one bad row's description looks like a formula (escaped on export).
    const rows = Array.from({ length: 10 }, (_, i) => ({ ...validRow(i + 1, 'LOOP'), description: `Item ${i + 1}` }));
    rows[1]!.price = '-1'; // line 3
    rows[4]!.status = 'gone'; // line 6
    rows[6]!.name = ''; // line 8
    rows[7]!.quantity = 'many'; // line 9
    rows[7]!.description = '=SUM(A1:A9)';
    const first = await importFile('round-1.csv', csvLine(HEADER) + rows.map((row) => csvLine(rowFields(row))).join(''));
    expect(first).toMatchObject({ state: 'partial', result: expect.objectContaining({ inserted: 6, invalid: 4 }) });

    const export1 = await exportErrors(first.id);
    expect(export1.header).toEqual(['_row', '_errors', ...HEADER]);
    expect(export1.records.map((record) => [record[0], record[2]])).toEqual([
      ['3', 'LOOP-0000002'], ['6', 'LOOP-0000005'], ['8', 'LOOP-0000007'], ['9', 'LOOP-0000008'],
    ]);
    expect(export1.records[3]![4]).toBe("'=SUM(A1:A9)"); // the formula escape of the export

    // Round 2: fix the price and the status, import the export as it is.
    const second = await importFile('round-2.csv', fixed(export1, { 'LOOP-0000002': { price: '1.00' }, 'LOOP-0000005': { status: 'active' } }));
    expect(second).toMatchObject({ state: 'partial', result: expect.objectContaining({ inserted: 2, invalid: 2 }) });

    // The export of that run: `_row` and `_errors` once, now the lines and reasons of round 2's file.
    const export2 = await exportErrors(second.id);
    expect(export2.header).toEqual(['_row', '_errors', ...HEADER]);
    expect(export2.records.map((record) => record.slice(0, 3))).toEqual([
      ['4', 'name is required', 'LOOP-0000007'],
      ['5', 'quantity must be a whole number, got "many"', 'LOOP-0000008'],
    ]);
    expect(export2.records[1]![4]).toBe("'=SUM(A1:A9)");

    // Round 3: fix the name only.
    const third = await importFile('round-3.csv', fixed(export2, { 'LOOP-0000007': { name: 'Named at last' } }));
    expect(third).toMatchObject({ state: 'partial', result: expect.objectContaining({ inserted: 1, invalid: 1 }) });
    const export3 = await exportErrors(third.id);
    expect(export3.header).toEqual(['_row', '_errors', ...HEADER]);
    expect(export3.records.map((record) => record.slice(0, 3))).toEqual([['3', 'quantity must be a whole number, got "many"', 'LOOP-0000008']]);

    // And the last one.
    const fourth = await importFile('round-4.csv', fixed(export3, { 'LOOP-0000008': { quantity: '7' } }));
    expect(fourth).toMatchObject({ state: 'succeeded', result: expect.objectContaining({ inserted: 1, invalid: 0 }) });
    const { rows: counted } = await env.pool.query(`SELECT count(*)::int AS n FROM products WHERE tenant_id = 'loop'`);
    expect(counted[0].n).toBe(10);
    expect(await product('LOOP-0000002')).toMatchObject({ price: '1.00' });
    expect(await product('LOOP-0000007')).toMatchObject({ name: 'Named at last' });
    // The formula-like value came back exactly as the uploader wrote it, through three exports.
    expect(await product('LOOP-0000008')).toMatchObject({ quantity: 7, description: '=SUM(A1:A9)' });
  });

  it('an export written before this fix (its _row and _errors twice) imports too', async () => {
    const row = validRow(1, 'TWICE');
    const body = csvLine(['_row', '_errors', '_row', '_errors', ...HEADER]) + csvLine(['4', 'old reason', '2', 'older reason', ...rowFields(row)]);
    const run = await importFile('twice.csv', body);
    expect(run).toMatchObject({ state: 'succeeded', result: expect.objectContaining({ inserted: 1 }) });
    expect(await product(row.sku)).toMatchObject({ name: row.name });
  });

  it('a row the user broke while fixing an export keeps its values as written through the next export', async () => {
    // Round 1: a bad price, and a description a spreadsheet would run as a formula (escaped on export).
    const rows = [validRow(1, 'BROKE'), { ...validRow(2, 'BROKE'), price: '-1', description: '-Sale' }];
    const first = await importFile('broke-1.csv', csvLine(HEADER) + rows.map((row) => csvLine(rowFields(row))).join(''));
    expect(first).toMatchObject({ state: 'partial', result: expect.objectContaining({ inserted: 1, invalid: 1 }) });
    const export1 = await exportErrors(first.id);
    const column = (name: string) => export1.header.indexOf(name);
    expect(export1.records[0]![column('description')]).toBe("'-Sale");

    // Round 2: the price fixed in a text editor, and a stray quote typed into the name: the row is malformed but
    // still has its fields.
    const record = export1.records[0]!.map((value, index) => (index === column('price') ? '1.00' : value));
    const line = record.map((value, index) => (index === column('name') ? '"Widget" large' : csvField(value))).join(',');
    const second = await importFile('broke-2.csv', csvLine(export1.header, '\r\n') + `${line}\r\n`);
    expect(second).toMatchObject({ result: expect.objectContaining({ inserted: 0, invalid: 1 }) });
    const export2 = await exportErrors(second.id);
    expect(export2.records.map((fields) => fields.slice(0, 2))).toEqual([['2', 'unexpected text after the closing quote of field 4']]);
    // Escaped once, as in the file imported: not `''-Sale`.
    expect(export2.records[0]![column('description')]).toBe("'-Sale");
    expect(export2.records[0]![column('name')]).toBe('Widget large');

    // Round 3: the name fixed; the description comes back as the uploader wrote it.
    const third = await importFile('broke-3.csv', fixed(export2, { 'BROKE-0000002': { name: 'Widget' } }));
    expect(third).toMatchObject({ state: 'succeeded', result: expect.objectContaining({ inserted: 1, invalid: 0 }) });
    expect(await product('BROKE-0000002')).toMatchObject({ name: 'Widget', price: '1.00', description: '-Sale' });
  });
});
