// A Postgres restart (every session terminated, as in an RDS failover) in the middle of each kind's run, under a
// real worker process: the process lives, and the run ends as it would have without the restart — mass import: rows
// = objects = files; CSV: products = valid rows after a restart in validation and another in finalize; backfill:
// every row filled once.
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { finalizeImport, submitJob } from '../worker/api.js';
import { getCsvImportRun } from '../worker/imports/csv/run-record.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { documentsOf, listObjects, type TreeFile } from './support/mass-import-tree.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';
import { killAll, spawnWorker, type LogLine, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment({ ownPostgres: true });
const files: TreeFile[] = Array.from({ length: 300 }, (_, i) => ({ path: `dir-${i % 6}/file-${String(i).padStart(3, '0')}.pdf`, size: 2_000 + ((i * 7919) % 30_000) }));
const tree = useTreeBehindProxy(env, files);
const spawned: WorkerProcess[] = [];
afterEach(async () => killAll(spawned.splice(0)));
afterAll(async () => killAll(spawned));

const TIMINGS = {
  WORKER_LEASE_MS: '5000',
  WORKER_HEARTBEAT_MS: '500',
  WORKER_RESCUE_INTERVAL_MS: '500',
  WORKER_POLL_INTERVAL_MS: '200',
  LOG_LEVEL: 'info',
};

function worker(extra: Record<string, string> = {}): WorkerProcess {
  const process = spawnWorker(env, { env: { ...tree.workerEnv(), ...TIMINGS, ...extra } });
  spawned.push(process);
  return process;
}

const started = (line: LogLine) => line.msg === 'worker started';
const TERMINAL = ['succeeded', 'partial', 'failed', 'dead', 'canceled', 'review_ready'];

/** Reads the job, retrying while the database is still coming back. */
async function until(jobId: number, states: string[], timeoutMs = 120_000): Promise<JobRow> {
  return waitFor(async () => {
    const job = await requireJob(env.pool, jobId).catch(() => undefined);
    return job && states.includes(job.state) ? job : undefined;
  }, timeoutMs, 100);
}

async function whenJob(jobId: number, ready: (job: JobRow) => boolean): Promise<void> {
  await waitFor(async () => {
    const job = await requireJob(env.pool, jobId);
    return ready(job) || undefined;
  }, 60_000, 10);
}

function expectSurvived(process: WorkerProcess): void {
  expect(process.child.exitCode).toBeNull();
  expect(process.stderr.join('\n')).not.toMatch(/Unhandled 'error' event|Connection terminated unexpectedly/);
  expect(process.logs.some((line) => line.msg.startsWith('database unavailable'))).toBe(true);
}

describe('a Postgres restart in the middle of each kind', () => {
  it('mass-import: the worker lives and rows = objects = files', async () => {
    const process = worker({ MASS_IMPORT_CONCURRENCY: '4' });
    await process.waitForLog(started);
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: 'restart', payload: { prefix: 'restart' }, maxAttempts: 5 });
    await waitFor(async () => {
      const { rows } = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM import_items WHERE job_id = $1 AND state = 'done'", [job.id]);
      return rows[0]!.n >= 40 || undefined;
    }, 60_000, 10);

    await env.postgres!.restart({ downMs: 500 });

    const done = await until(job.id, TERMINAL);
    expect(done.state).toBe('succeeded');
    expectSurvived(process);
    const documents = await documentsOf(env, 'restart/restart/');
    const objects = await listObjects(env.s3, env.bucket, 'restart/restart/');
    expect(documents).toHaveLength(files.length);
    expect(objects).toHaveLength(files.length);
    expect(new Set(documents.map((document) => document.object_key))).toEqual(new Set(objects.map((object) => object.key)));
  });

  it('csv-import and csv-finalize: a restart in validation and another in finalize; products = valid rows', async () => {
    const rows = Array.from({ length: 30_000 }, (_, i) => validRow(i + 1, 'R'));
    await upload(env.s3, env.bucket, 'imports/restart/products.csv', [csvLine(HEADER), ...rows.map((row) => csvLine(rowFields(row)))].join(''));
    const process = worker({ CSV_FINALIZE_CHUNK_SIZE: '100' });
    await process.waitForLog(started);
    const { job } = await submitJob(env.pool, {
      kind: 'csv-import', tenantId: 'restart', payload: { bucket: env.bucket, key: 'imports/restart/products.csv', profile: 'products' },
    });
    await whenJob(job.id, (current) => current.state === 'running' && Number(current.progress?.done ?? current.progress?.rows ?? 0) > 0);
    await env.postgres!.restart({ downMs: 300 });
    const validated = await until(job.id, TERMINAL);
    expect(validated.state).toBe('review_ready');
    expect(validated.result).toMatchObject({ valid: 30_000 });

    await finalizeImport(env.pool, job.id);
    await waitFor(async () => {
      const run = await getCsvImportRun(env.pool, job.id);
      return run && run.finalizedBatches >= 20 ? run : undefined;
    }, 60_000, 10);
    await env.postgres!.restart({ downMs: 300 });
    const finalized = await until(job.id, ['succeeded', 'partial', 'failed', 'dead']);
    expect(finalized).toMatchObject({ state: 'succeeded', kind: 'csv-finalize' });
    expect(finalized.result).toMatchObject({ valid: 30_000, inserted: 30_000, unchanged: 0 });
    const { rows: check } = await env.pool.query(
      "SELECT count(*)::int AS n, count(DISTINCT sku)::int AS skus FROM products WHERE tenant_id = 'restart'",
    );
    expect(check[0]).toEqual({ n: 30_000, skus: 30_000 });
    expectSurvived(process);
  });

  it('backfill: the worker lives and every row is filled', async () => {
    const total = 150_000;
    await env.pool.query('ALTER TABLE documents DISABLE TRIGGER documents_file_extension_on_write');
    await env.pool.query(
      `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
       SELECT 'backfill', 'scans/doc-' || g || (ARRAY['.PDF', '.jpg', '', '.tar.gz'])[1 + g % 4],
              repeat('0', 64), g, 'application/octet-stream', 'bucket', 'backfill/' || g
       FROM generate_series(1, $1::int) AS g`,
      [total],
    );
    await env.pool.query('ALTER TABLE documents ENABLE TRIGGER documents_file_extension_on_write');
    await env.pool.query('ANALYZE documents');
    // An attempt longer than the longest outage wait counts as having seen the database work (outage.ts): with 100 ms,
    // the restart below is a new outage after the batches this attempt committed.
    const process = worker({ WORKER_KINDS: 'backfill', RETRY_BACKOFF_BASE_MS: '50', DEPENDENCY_OUTAGE_BACKOFF_MAX_MS: '100' });
    await process.waitForLog(started);
    const { job } = await submitJob(env.pool, {
      kind: 'backfill', payload: { name: 'documents-file-extension', batchSize: 500, parallelism: 2 }, maxAttempts: 5,
    });
    await whenJob(job.id, (current) => current.state === 'running' && Number(current.progress?.done ?? 0) >= 10_000);
    await env.postgres!.restart({ downMs: 300 });
    const done = await until(job.id, ['succeeded', 'partial', 'failed', 'dead']);
    expect(done.state).toBe('succeeded');
    expect(done.result).toMatchObject({ complete: true, remaining: 0 });
    // Those batches stay written (the next attempt resumes from their cursors): the restart did not count towards the
    // bound on new outages (MAX_OUTAGE_RESTARTS), and the attempt was given back.
    expect(done.lastError).toMatchObject({ context: { dependency: 'database', attemptCounted: false, outageRestarts: 0 } });
    const { rows } = await env.pool.query<{ missing: number }>(
      "SELECT count(*) FILTER (WHERE file_extension IS NULL)::int AS missing FROM documents WHERE tenant_id = 'backfill'",
    );
    expect(rows[0]!.missing).toBe(0);
    expectSurvived(process);
  });
});
