// A CSV read whose S3 connection stalls — no answer to the GET — must not hold the run `running` for ever with its
// heartbeats going on: after S3_STALL_TIMEOUT_MS without a byte the read is aborted as an S3 outage, the run waits
// without spending its attempt, and the next try reads the object. Validation and finalize both.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { finalizeImport, submitJob } from '../worker/api.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
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
});
