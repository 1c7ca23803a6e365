// A CSV read whose S3 connection stalls — no answer to the GET — must not hold the run `running` for ever with its
// heartbeats going on: after S3_STALL_TIMEOUT_MS without a byte the read is aborted as an S3 outage, the run waits
// without spending its attempt, and the next try reads the object. Validation and finalize both.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { finalizeImport, submitJob } from '../worker/api.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { call, makeKey, startTestApi } from './support/api-server.js';
import { runCli } from './support/cli-runner.js';
import { waitFor } from './support/in-process-worker.js';
import { startFaultyS3Proxy, type FaultyS3Proxy } from './support/faulty-s3-proxy.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
let proxy: FaultyS3Proxy;
beforeAll(async () => {
  proxy = await startFaultyS3Proxy(env.s3Endpoint);
});
afterEach(async () => killAll(spawned.splice(0)));
afterAll(async () => {
  await killAll(spawned);
  await proxy.close();
});

async function until(jobId: number, states: string[]): Promise<JobRow> {
  return waitFor(async () => {
    const job = await requireJob(env.pool, jobId);
    return states.includes(job.state) ? job : undefined;
  }, 90_000, 50);
}

describe('a stalled S3 read of a CSV object', () => {
  it('is aborted after S3_STALL_TIMEOUT_MS, waited out as an S3 outage, and the run goes on with its one attempt', async () => {
    const key = 'imports/stall/products.csv';
    const rows = Array.from({ length: 300 }, (_, i) => validRow(i + 1, 'ST'));
    await upload(env.s3, env.bucket, key, [csvLine(HEADER), ...rows.map((row) => csvLine(rowFields(row)))].join(''));
    let stallNextGet = true;
    proxy.decide = (request) => {
      if (request.method === 'GET' && request.url.includes('products.csv') && stallNextGet) {
        stallNextGet = false;
        return 'stall';
      }
      return 'pass';
    };
    const worker = spawnWorker(env, {
      env: {
        S3_ENDPOINT: proxy.endpoint,
        S3_STALL_TIMEOUT_MS: '1000',
        RETRY_BACKOFF_BASE_MS: '100',
        WORKER_POLL_INTERVAL_MS: '100',
        LOG_LEVEL: 'info',
      },
    });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
    const { job } = await submitJob(env.pool, {
      kind: 'csv-import', tenantId: 'stall', payload: { bucket: env.bucket, key, profile: 'products' }, maxAttempts: 1,
    });
    const validated = await until(job.id, ['review_ready', 'failed', 'dead']);
    expect(validated).toMatchObject({ state: 'review_ready', attempts: 1 });
    expect(proxy.stats.faults.stall).toBe(1);
    expect(worker.logs.some((line) => /waiting for S3/.test(line.msg))).toBe(true);

    stallNextGet = true;
    await finalizeImport(env.pool, job.id);
    const finalized = await until(job.id, ['succeeded', 'partial', 'failed', 'dead']);
    expect(finalized).toMatchObject({ state: 'succeeded', kind: 'csv-finalize' });
    expect(finalized.result).toMatchObject({ inserted: 300 });
    expect(proxy.stats.faults.stall).toBe(2);
    const { rows: check } = await env.pool.query("SELECT count(*)::int AS n FROM products WHERE tenant_id = 'stall'");
    expect(check[0]).toEqual({ n: 300 });
  });

  it('a validation cut off part-way leaves no failed-rows export that looks whole', async () => {
    // 1,500 invalid rows, then valid ones: the answer is cut after 160 KiB, past the first write of row errors.
    const key = 'imports/cut/products.csv';
    const invalid = Array.from({ length: 1_500 }, (_, i) => csvLine(rowFields({ ...validRow(i + 1, 'CUT'), price: 'bad' })));
    const valid = Array.from({ length: 20_000 }, (_, i) => csvLine(rowFields(validRow(i + 2_000, 'CUT'))));
    await upload(env.s3, env.bucket, key, [csvLine(HEADER), ...invalid, ...valid].join(''));
    proxy.cutAfterBytes = 160 * 1024;
    proxy.decide = (request) => (request.method === 'GET' && request.url.includes('cut/products.csv') ? 'cut' : 'pass');
    const worker = spawnWorker(env, {
      env: { S3_ENDPOINT: proxy.endpoint, DEPENDENCY_OUTAGE_BUDGET_MS: '0', WORKER_POLL_INTERVAL_MS: '100', LOG_LEVEL: 'info' },
    });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
    const { job } = await submitJob(env.pool, {
      kind: 'csv-import', tenantId: 'cut', payload: { bucket: env.bucket, key, profile: 'products' }, maxAttempts: 1,
    });
    const stopped = await until(job.id, ['review_ready', 'failed', 'dead']);
    expect(stopped.state).toBe('dead');
    expect(proxy.stats.faults.cut).toBeGreaterThan(0);

    const api = await startTestApi(env);
    try {
      const operator = await makeKey(env, 'cut-reviewer', 'operator');
      const exported = await call(api, 'GET', `/v1/jobs/${job.id}/errors?format=csv`, { key: operator });
      expect(exported).toMatchObject({ status: 409, body: { error: { code: 'NO_ERROR_EXPORT' } } });
      expect(exported.body.error.message).toContain('validation has not read the whole file');
    } finally {
      await api.close();
    }
    const cliExport = await runCli(env, ['errors', String(job.id), '--csv']);
    expect(cliExport.code).toBe(1);
    expect(cliExport.stdout).toBe('');
    expect(cliExport.stderr).toContain('validation has not read the whole file');
    const listing = await runCli(env, ['errors', String(job.id)]);
    expect(listing.code).toBe(0);
    expect(listing.stdout).toContain('validation has not read the whole file');
  });

  it('a 403 on the object names a missing object as a cause, not only the role (S3 answers so to a role that may not list)', async () => {
    proxy.decide = (request) => (request.method === 'GET' && request.url.includes('denied/products.csv') ? 'access-denied' : 'pass');
    const worker = spawnWorker(env, { env: { S3_ENDPOINT: proxy.endpoint, WORKER_POLL_INTERVAL_MS: '100' } });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
    const { job } = await submitJob(env.pool, {
      kind: 'csv-import', tenantId: 'denied', payload: { bucket: env.bucket, key: 'imports/denied/products.csv', profile: 'products' },
    });
    const failed = await until(job.id, ['review_ready', 'failed', 'dead']);
    expect(failed).toMatchObject({ state: 'failed', lastError: { code: 'CSV_OBJECT_FORBIDDEN' } });
    expect(failed.lastError!.message).toContain('the object is missing, or the worker\'s role may not read it');
  });
});
