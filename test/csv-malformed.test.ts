// Malformed CSV files against one real worker process: each gets a clear outcome (the run fails at once with a
// message that says why, or the bad rows are reported and the rest is ready for finalize), and the worker keeps running.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { call, makeKey, startTestApi } from './support/api-server.js';
import { runCli } from './support/cli-runner.js';
import { waitFor } from './support/in-process-worker.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
let worker: WorkerProcess;

beforeAll(async () => {
  worker = spawnWorker(env, { env: { WORKER_POLL_INTERVAL_MS: '200', WORKER_ID: 'csv-malformed' } });
  await worker.waitForLog((line) => line.msg === 'worker started');
});
afterAll(async () => killAll([worker]));

// One line per row (the generated descriptions with line breaks would shift the line numbers this test expects).
const rows = (from: number, count: number) =>
  Array.from({ length: count }, (_, i) => csvLine(rowFields({ ...validRow(from + i, 'M'), description: `Item ${from + i}, "quoted"` }))).join('');

async function importBody(name: string, body: Buffer | string, extra: Record<string, unknown> = {}): Promise<JobRow> {
  await upload(env.s3, env.bucket, `imports/malformed/${name}`, body);
  return importKey(`imports/malformed/${name}`, extra);
}

async function importKey(key: string, extra: Record<string, unknown> = {}): Promise<JobRow> {
  const { job } = await submitJob(env.pool, {
    kind: 'csv-import',
    tenantId: 'malformed',
    payload: { bucket: env.bucket, key, profile: 'products', ...extra },
  });
  return waitFor(async () => {
    const current = await requireJob(env.pool, job.id);
    return current.state === 'queued' || current.state === 'running' ? undefined : current;
  }, 60_000);
}

async function rowErrors(jobId: number): Promise<Array<{ row: number; rules: string[]; messages: string }>> {
  const { rows: found } = await env.pool.query(
    `SELECT row_number AS row, ARRAY(SELECT e ->> 'rule' FROM jsonb_array_elements(errors) e) AS rules,
            (SELECT string_agg(e ->> 'message', '; ') FROM jsonb_array_elements(errors) e) AS messages
     FROM csv_import_row_errors WHERE job_id = $1 ORDER BY row_number`,
    [jobId],
  );
  return found;
}

describe('malformed CSV files', () => {
  it('a wrong header fails the run at once, listing every problem', async () => {
    const job = await importBody('wrong-header.csv', `sku,nme,price,quantity,status,colour,SKU\n${'x,'.repeat(6)}x\n`);
    expect(job).toMatchObject({ state: 'failed', attempts: 1 });
    expect(job.lastError).toMatchObject({ code: 'CSV_HEADER_INVALID', class: 'permanent' });
    const message = job.lastError!.message;
    expect(message).toContain('missing required column(s): name');
    expect(message).toContain('unknown column(s): "nme", "colour"');
    expect(message).toContain('duplicate column(s): "sku" (columns 1, 7)');
    expect(message).toContain('Expected columns: sku, name, description (optional)');

    // No row was read, so there is no failed-rows file to fix: said so, never an empty file.
    const api = await startTestApi(env);
    try {
      const operator = await makeKey(env, 'header-reviewer', 'operator');
      const exported = await call(api, 'GET', `/v1/jobs/${job.id}/errors?format=csv`, { key: operator });
      expect(exported).toMatchObject({ status: 409, body: { error: { code: 'NO_ERROR_EXPORT' } } });
      expect(exported.body.error.message).toContain(`job ${job.id} has no failed rows to export`);
    } finally {
      await api.close();
    }
    const cliExport = await runCli(env, ['errors', String(job.id), '--csv']);
    expect(cliExport.code).toBe(1);
    expect(cliExport.stdout).toBe('');
    expect(cliExport.stderr).toContain(`job ${job.id} has no failed rows to export`);
    const listing = await runCli(env, ['errors', String(job.id)]);
    expect(listing.stdout).toContain(`has no failed items or rows; its last error: CSV_HEADER_INVALID (bulk-import show ${job.id})`);
  });

  it('binary garbage fails the run at once as not a text CSV', async () => {
    const garbage = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), randomBytes(300_000)]);
    const job = await importBody('image.csv', garbage);
    expect(job.state).toBe('failed');
    expect(job.lastError).toMatchObject({ code: 'CSV_NOT_TEXT', class: 'permanent' });
    expect(job.lastError!.message).toMatch(/does not look like a CSV text file in utf-8/);
  });

  it('an unterminated quote costs its own row only; the rows after it are read', async () => {
    const body = csvLine(HEADER) + rows(1, 20) + `M-bad,"Broken name,desc,1.00,1,,active,,,\n` + rows(21, 30);
    const job = await importBody('unterminated.csv', body);
    expect(job.state).toBe('review_ready');
    expect(job.result).toMatchObject({ rows: 51, valid: 50, invalid: 1 });
    const errors = await rowErrors(job.id);
    // The rows after it hold quoted fields too: the stray quote must not pair up with theirs and swallow them.
    expect(errors).toEqual([{ row: 22, rules: ['malformed'], messages: expect.stringContaining('(a stray quote?): "M-bad,\\"Broken name') }]);

    // At the end of the file, with nothing after it to pair with.
    const last = await importBody('unterminated-last.csv', csvLine(HEADER) + rows(1, 5) + `M-bad,"Broken name,desc,1.00,1,,active,,,\n`);
    expect(last.result).toMatchObject({ rows: 6, valid: 5, invalid: 1 });
    expect(await rowErrors(last.id)).toEqual([{ row: 7, rules: ['malformed'], messages: expect.stringContaining('never closed (the file ends inside it)') }]);
  });

  it('a 10 MB line is reported as too long without being read; the rows around it are read', async () => {
    const long = `M-long,${'x'.repeat(10 * 1024 * 1024)},desc,1.00,1,,active,,,\n`;
    const job = await importBody('long-line.csv', csvLine(HEADER) + rows(1, 10) + long + rows(11, 10));
    expect(job.state).toBe('review_ready');
    expect(job.result).toMatchObject({ rows: 21, valid: 20, invalid: 1 });
    const errors = await rowErrors(job.id);
    expect(errors).toEqual([{ row: 12, rules: ['malformed'], messages: expect.stringContaining('longer than 1,048,576 characters') }]);
    const stored = await env.pool.query('SELECT fields FROM csv_import_row_errors WHERE job_id = $1', [job.id]);
    expect(stored.rows[0].fields).toBeNull();
  });

  it('invalid UTF-8 is an error of the rows that hold it; a Latin-1 file imports with its encoding', async () => {
    const bad = Buffer.concat([Buffer.from('M-utf,Caf'), Buffer.from([0xe9]), Buffer.from(',desc,1.00,1,,active,,,\n')]);
    const body = Buffer.concat([Buffer.from(csvLine(HEADER) + rows(1, 5)), bad, Buffer.from(rows(6, 5))]);
    const job = await importBody('invalid-utf8.csv', body);
    expect(job.state).toBe('review_ready');
    expect(job.result).toMatchObject({ rows: 11, valid: 10, invalid: 1 });
    expect(await rowErrors(job.id)).toEqual([{ row: 7, rules: ['encoding'], messages: expect.stringContaining("name holds bytes that are not valid in the file's encoding") }]);

    const latin1 = Buffer.concat([Buffer.from(csvLine(HEADER)), bad]);
    const asLatin1 = await importBody('latin1.csv', latin1, { encoding: 'latin1', autoFinalize: true });
    expect(asLatin1.state).toBe('succeeded');
    const { rows: products } = await env.pool.query("SELECT name FROM products WHERE sku = 'M-utf'");
    expect(products).toEqual([{ name: 'Café' }]);
  });

  it('a NUL byte is an error of the row that holds it (any column, or a malformed row); the rest of the file is read', async () => {
    const header = [...HEADER, '_errors'];
    const line = (i: number, change: Record<string, string> = {}, extra = '') =>
      csvLine([...rowFields({ ...validRow(i, 'N'), description: `Item ${i}`, ...change }), extra]);
    const body =
      csvLine(header) +
      [1, 2, 3, 4, 5].map((i) => line(i)).join('') +
      line(6, { name: 'Bad\u0000name' }) + // line 7
      line(7, {}, 'note\u0000') + // line 8: an ignored column, but kept as written in any row error
      `N-q,"Broken\u0000 name,desc,1.00,1,,active,,,,\n` + // line 9: a stray quote, malformed
      [8, 9, 10, 11, 12].map((i) => line(i)).join('');
    const job = await importBody('nul-bytes.csv', body);
    expect(job.state).toBe('review_ready');
    expect(job.result).toMatchObject({ rows: 13, valid: 10, invalid: 3 });
    const errors = await rowErrors(job.id);
    expect(errors).toEqual([
      { row: 7, rules: ['nul_byte'], messages: expect.stringContaining('name holds a NUL byte') },
      { row: 8, rules: ['nul_byte'], messages: expect.stringContaining('column _errors holds a NUL byte') },
      { row: 9, rules: ['malformed'], messages: expect.any(String) },
    ]);
    const { rows: stored } = await env.pool.query<{ row_number: number; fields: string[] | null }>(
      'SELECT row_number, fields FROM csv_import_row_errors WHERE job_id = $1 ORDER BY row_number',
      [job.id],
    );
    // The original values, each NUL shown as U+FFFD.
    expect(stored[0]!.fields![1]).toBe('Bad\uFFFDname');
    expect(stored[1]!.fields![10]).toBe('note\uFFFD');
    expect(JSON.stringify(stored)).not.toContain('\\u0000');
    expect(await env.pool.query('SELECT sum(row_count)::int AS n FROM csv_import_batches WHERE job_id = $1', [job.id]))
      .toMatchObject({ rows: [{ n: 10 }] });
  });

  it('an empty file and a missing object fail at once with their reason', async () => {
    const empty = await importBody('empty.csv', '\n\n');
    expect(empty).toMatchObject({ state: 'failed', lastError: expect.objectContaining({ code: 'CSV_EMPTY' }) });
    const missing = await importKey('imports/malformed/not-uploaded.csv');
    expect(missing).toMatchObject({ state: 'failed', lastError: expect.objectContaining({ code: 'CSV_OBJECT_NOT_FOUND' }) });
    expect(missing.lastError!.message).toContain('imports/malformed/not-uploaded.csv does not exist');
  });

  it('the worker kept running through all of them and still imports a good file', async () => {
    expect(worker.child.exitCode).toBeNull();
    const job = await importBody('good.csv', csvLine(HEADER) + rows(100, 25), { autoFinalize: true });
    expect(job).toMatchObject({ state: 'succeeded', result: expect.objectContaining({ inserted: 25 }) });
    expect(worker.logs.filter((line) => line.msg === 'worker started')).toHaveLength(1);
  });
});
