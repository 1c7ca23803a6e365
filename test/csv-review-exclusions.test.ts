// Approval per batch: a reviewer finalizes a CSV import except the rows they distrust — through the CLI
// (`finalize <id> --exclude-rows 12,40-90`), worker/api.ts (finalizeImport) and the HTTP API. Excluded rows are not
// written, are recorded in the run's history and result, and come out of `errors <id> --csv` like the failed rows.
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { finalizeImport, submitJob } from '../worker/api.js';
import { csvFinalizeHandler } from '../worker/handlers/csv-finalize.js';
import { csvValidateHandler } from '../worker/handlers/csv-validate.js';
import { csvCounts } from '../worker/http/admin/pages/csv-review.js';
import { InvalidRowRangesError, RowRanges } from '../worker/imports/csv/row-ranges.js';
import { getCsvImportRun } from '../worker/imports/csv/run-record.js';
import { getRunRecord } from '../worker/queue/job-actions.js';
import { requeueJob, requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { call, makeKey, startTestApi, type TestApi } from './support/api-server.js';
import { runCli, runCliJson } from './support/cli-runner.js';
import { settledJob, testWorker } from './support/in-process-worker.js';

const env = useTestEnvironment();
let worker: Worker;
let api: TestApi | undefined;
const TENANT = 'review';

beforeAll(async () => {
  worker = testWorker(env, [csvValidateHandler, csvFinalizeHandler], { leaseMs: 30_000, heartbeatMs: 1_000 });
  await worker.start();
});
afterAll(async () => {
  await api?.close();
  await worker?.stop();
});

const settled = (jobId: number): Promise<JobRow> => settledJob(env.pool, jobId);

/** 30 data rows on lines 2-31; the row on line 4 is invalid. Returns the run, parked in review_ready. */
async function reviewedImport(name: string): Promise<number> {
  const lines = Array.from({ length: 30 }, (_, i) => {
    const row = { ...validRow(i + 1, name.toUpperCase()), description: `Item ${i + 1}` };
    if (i === 2) row.price = '-1';
    return csvLine(rowFields(row));
  });
  const key = `imports/${TENANT}/${name}.csv`;
  await upload(env.s3, env.bucket, key, csvLine(HEADER) + lines.join(''));
  const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: TENANT, payload: { bucket: env.bucket, key, profile: 'products' } });
  expect((await settled(job.id)).state).toBe('review_ready');
  return job.id;
}

/** Line numbers (2-31) of the file whose product exists. */
async function writtenLines(name: string): Promise<number[]> {
  const { rows } = await env.pool.query<{ sku: string }>('SELECT sku FROM products WHERE sku LIKE $1 ORDER BY sku', [`${name.toUpperCase()}-%`]);
  return rows.map((row) => Number(row.sku.split('-').at(-1)) + 1);
}

const lines = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('row ranges', () => {
  it('parses, merges and looks up line numbers, and refuses what is not one', () => {
    const ranges = RowRanges.parse(' 40-90, 12,13 ,91-95,50');
    expect(ranges.toString()).toBe('12-13,40-95');
    expect(ranges.size()).toBe(58);
    expect([11, 12, 13, 14, 39, 40, 95, 96].map((row) => ranges.has(row))).toEqual([false, true, true, false, false, true, true, false]);
    for (const bad of ['', 'a', '1', '5-3', '3-', '2,,x', '-4']) expect(() => RowRanges.parse(bad), bad).toThrow(InvalidRowRangesError);
  });
});

describe('finalize with excluded rows', () => {
  it('the CLI writes every valid row but the excluded ones, records the exclusion and exports the excluded rows', async () => {
    const jobId = await reviewedImport('cli');
    const finalize = await runCli(env, ['finalize', String(jobId), '--exclude-rows', '6,10-12,4', '--note', 'supplier rows look wrong']);
    expect(finalize.code, finalize.stderr).toBe(0);
    expect(finalize.stdout).toContain('except rows 6,10-12,4');
    const job = await settled(jobId);

    expect(job.state).toBe('partial');
    expect(job.result).toMatchObject({ valid: 29, invalid: 1, inserted: 25, excluded: 4, excludedRows: '4,6,10-12', failedAtWrite: 0 });
    // The review page says the same: 4 valid rows excluded (the ranges hold 5 lines, one of them invalid), none refused.
    const summary = csvCounts((await getCsvImportRun(env.pool, jobId))!, job.result).toString();
    expect(summary).toContain('data-csv-count="excluded">4<');
    expect(summary).toContain('data-csv-count="failed">0<');
    const excludedOrInvalid = new Set([4, 6, 10, 11, 12]);
    expect(await writtenLines('cli')).toEqual(lines(2, 31).filter((line) => !excludedOrInvalid.has(line)));

    const record = await getRunRecord(env.pool, jobId);
    const finalized = record!.actions.find((action) => action.action === 'finalized');
    expect(finalized?.note).toBe('supplier rows look wrong — excluded rows 4,6,10-12 (5 line(s))');

    const exported = await runCli(env, ['errors', String(jobId), '--csv']);
    expect(exported.code).toBe(0);
    const records = parse(exported.stdout) as string[][];
    expect(records[0]).toEqual(['_row', '_errors', ...HEADER]);
    expect(records.slice(1).map((record) => [record[0], record[1]])).toEqual([
      ['4', 'price must be at least 0, got "-1"'],
      ['6', 'excluded at review: not written'],
      ['10', 'excluded at review: not written'],
      ['11', 'excluded at review: not written'],
      ['12', 'excluded at review: not written'],
    ]);
    // The excluded rows come out with their own values, ready to be checked and imported again.
    expect(records[2]!.slice(2)).toEqual(rowFields({ ...validRow(5, 'CLI'), description: 'Item 5' }));
  });

  it('an invalid row list is refused before anything happens; the run stays in review', async () => {
    const jobId = await reviewedImport('refused');
    const refused = await runCli(env, ['finalize', String(jobId), '--exclude-rows', '1-5']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain('rows are line numbers from 2 (line 1 is the header)');
    expect((await requireJob(env.pool, jobId)).state).toBe('review_ready');
    // Finalized without a selection afterwards, it writes every valid row.
    await runCliJson(env, ['finalize', String(jobId)]);
    const job = await settled(jobId);
    expect(job.result).toMatchObject({ inserted: 29 });
    expect(job.result).not.toHaveProperty('excluded');
  });

  it('worker/api.ts finalizeImport excludes rows, also every row of a batch', async () => {
    const jobId = await reviewedImport('api');
    await finalizeImport(env.pool, jobId, { excludeRows: '2-31' });
    const job = await settled(jobId);
    expect(job.state).toBe('partial');
    expect(job.result).toMatchObject({ inserted: 0, excluded: 29, excludedRows: '2-31' });
    expect(await writtenLines('api')).toEqual([]);
  });

  it('the HTTP API takes excludeRows in the finalize body, and refuses a bad list with 400', async () => {
    api = await startTestApi(env);
    const key = await makeKey(env, 'reviewer', 'tenant', TENANT);
    const jobId = await reviewedImport('http');
    const bad = await call(api, 'POST', `/v1/jobs/${jobId}/finalize`, { key, body: { excludeRows: '7-x' } });
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ error: { code: 'INVALID_ROWS', message: expect.stringContaining('"7-x" is not a line number') } });

    const accepted = await call(api, 'POST', `/v1/jobs/${jobId}/finalize`, { key, body: { excludeRows: '20-31', note: 'second half later' } });
    expect(accepted.status, accepted.text).toBe(200);
    const job = await settled(jobId);
    expect(job.result).toMatchObject({ inserted: 17, excluded: 12, excludedRows: '20-31' });
    expect(await writtenLines('http')).toEqual(lines(2, 19).filter((line) => line !== 4));
    const record = await getRunRecord(env.pool, jobId);
    expect(record!.actions.find((action) => action.action === 'finalized')).toMatchObject({
      actor: 'reviewer',
      note: 'second half later — excluded rows 20-31 (12 line(s))',
    });
  });

  it('an approval names the validation it reviewed: refused with 409 once the run was validated again', async () => {
    api ??= await startTestApi(env);
    const key = await makeKey(env, 'stale-reviewer', 'tenant', TENANT);
    const jobId = await reviewedImport('stale');
    const reviewed = (await requireJob(env.pool, jobId)).result!.validatedAt as string;
    expect(new Date(reviewed).toISOString()).toBe(reviewed);
    // Rejected, the file replaced at the same key, the run requeued: it is validated again, over other rows.
    expect((await call(api, 'POST', `/v1/jobs/${jobId}/reject`, { key })).status).toBe(200);
    const run = (await getCsvImportRun(env.pool, jobId))!;
    await upload(env.s3, env.bucket, run.objectKey, csvLine(HEADER) + csvLine(rowFields(validRow(1, 'REPLACED'))));
    await requeueJob(env.pool, jobId);
    const again = await settled(jobId);
    expect(again.state).toBe('review_ready');
    const current = again.result!.validatedAt as string;
    expect(current).not.toBe(reviewed);

    // A finalize form or call made for the first review is refused; the run stays in review, nothing written.
    const stale = await call(api, 'POST', `/v1/jobs/${jobId}/finalize`, { key, body: { validatedAt: reviewed, excludeRows: '5' } });
    expect(stale.status).toBe(409);
    expect(stale.body).toMatchObject({ error: { code: 'REVIEW_STALE', message: expect.stringContaining('validated again since the review you approve') } });
    expect((await requireJob(env.pool, jobId)).state).toBe('review_ready');
    expect((await getCsvImportRun(env.pool, jobId))!.excludedRows).toBeNull();
    expect((await getRunRecord(env.pool, jobId))!.actions.filter((action) => action.action === 'finalized')).toEqual([]);

    // A mistyped time reads the same (a time alone cannot tell it from a validation since): the message says both.
    const mistyped = await call(api, 'POST', `/v1/jobs/${jobId}/finalize`, { key, body: { validatedAt: new Date(Date.parse(current) - 1).toISOString() } });
    expect(mistyped.status).toBe(409);
    expect(mistyped.body.error.message).toContain(`is not the run's current one (validatedAt ${current})`);
    expect(mistyped.body.error.message).toContain('or the time is not the one its review showed');

    const accepted = await call(api, 'POST', `/v1/jobs/${jobId}/finalize`, { key, body: { validatedAt: current } });
    expect(accepted.status, accepted.text).toBe(200);
    expect((await settled(jobId)).result).toMatchObject({ inserted: 1 });
    expect((await getRunRecord(env.pool, jobId))!.actions.filter((action) => action.action === 'finalized')).toHaveLength(1);
  });
});
