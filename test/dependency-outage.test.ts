// S3 stopped in the middle of a run, with real worker processes: a TCP switch in front of the S3 server cuts every
// connection and turns new ones away (what a client sees when the endpoint goes away), then lets them through again.
// A mass import and a CSV validation (and finalize) wait the outage out — requeued with a growing backoff, without
// spending attempts (every job here has one attempt only: a single counted failure would end it `dead`) — and finish
// once S3 is back. An outage longer than a (small) budget ends the run `dead` with DEPENDENCY_OUTAGE naming S3.
// The outage is kept short by settings (backoff and budget), and the tests wait for events — the outage recorded on
// the job, the worker's "waiting for S3" log lines, a response held mid-body — never for wall-clock guesses.
import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { finalizeImport, submitJob } from '../worker/api.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { plantedFile, upload } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { documentsOf, itemsOf, listObjects, makeTree, waitForTerminal, type TreeFile } from './support/mass-import-tree.js';
import { startS3Switch, type S3Switch } from './support/s3-switch.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const TENANT = 'outage';
const files: TreeFile[] = Array.from({ length: 150 }, (_, i) => ({ path: `share/${i % 5}/file ${i}.bin`, size: 2_000 + ((i * 7_919) % 30_000) }));
const totalBytes = files.reduce((sum, file) => sum + file.size, 0);

let root: string | undefined;
let s3: S3Switch;
const spawned: WorkerProcess[] = [];

beforeAll(async () => {
  root = await makeTree(files);
  s3 = await startS3Switch(env.s3Endpoint);
});
afterEach(async () => {
  await killAll(spawned.splice(0));
  s3.start();
});
afterAll(async () => {
  await s3?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

function startWorker(extra: Record<string, string> = {}): WorkerProcess {
  const worker = spawnWorker(env, {
    env: {
      IMPORT_ROOT: root!,
      IMPORT_ROOT_REQUIRE_MOUNT: 'false',
      S3_ENDPOINT: s3.endpoint,
      MASS_IMPORT_CONCURRENCY: '4',
      MASS_IMPORT_REQUEST_TIMEOUT_MS: '5000',
      RETRY_BACKOFF_BASE_MS: '100',
      RETRY_BACKOFF_MAX_MS: '500',
      // Outage waits of at most 400 ms instead of minutes: the semantics are the same, the test just goes faster.
      DEPENDENCY_OUTAGE_BACKOFF_MAX_MS: '400',
      DEPENDENCY_OUTAGE_BUDGET_MS: '600000',
      LOG_LEVEL: 'warn',
      ...extra,
    },
  });
  spawned.push(worker);
  return worker;
}

const waitingLines = (worker: WorkerProcess) => worker.logs.filter((line) => line.msg.startsWith('waiting for S3'));

/** The job once it records an S3 outage, then once the worker has found S3 still away `more` times after that. */
async function outageWaitedOut(worker: WorkerProcess, jobId: number, more: number): Promise<JobRow> {
  const waiting = await waitFor(async () => {
    const job = await requireJob(env.pool, jobId);
    return job.outageStartedAt ? job : undefined;
  }, 90_000, 100);
  const seen = waitingLines(worker).length;
  await waitFor(async () => waitingLines(worker).length >= seen + more, 90_000, 100);
  return waiting;
}

describe('S3 stopped in the middle of a run', () => {
  it('mass import: the run waits for S3 without spending its attempt, no file is failed, and it finishes once S3 is back', async () => {
    // Off once about a third of the tree's bytes went up: wherever the run is by then, files are under way.
    s3.offAfterBytesUp(Math.floor(totalBytes / 3));
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix: 'outage' }, maxAttempts: 1 });
    const worker = startWorker();
    const waiting = await outageWaitedOut(worker, job.id, 2);
    expect(s3.isOn, `the switch is still on after ${s3.bytesUp} of ${totalBytes} bytes`).toBe(false);
    expect(waiting).toMatchObject({ outageDependency: 's3' });
    expect(waiting.lastError).toMatchObject({ code: 'S3_UNAVAILABLE', class: 'transient', context: { dependency: 's3', attemptCounted: false } });
    expect(waitingLines(worker)[0]).toMatchObject({ dependency: 's3', attempt_counted: false, error_code: 'S3_UNAVAILABLE' });
    // Files that failed because S3 was away are not failed items: they wait, pending.
    // Every retry after the first asks S3 once (HeadBucket) before trying a file: it finds S3 still away without a
    // streak of files (at least 10 files, each a refused connection or more) behind it.
    expect(waitingLines(worker)[0]?.err).toMatchObject({ message: expect.stringMatching(/files in a row failed after their retries/) });
    expect(waitingLines(worker)[1]?.err).toMatchObject({ message: expect.stringMatching(/still does not answer .* no file was tried/) });
    const refusedBefore = s3.refused;
    const seen = waitingLines(worker).length;
    await waitFor(async () => waitingLines(worker).length > seen, 90_000, 50);
    // One whole retry between the two readings, and at most the start of the next: a probe is at most 3 connections
    // (the SDK's tries); a retry that tried files again would have made 10 or more.
    expect(s3.refused - refusedBefore).toBeLessThan(10);
    const during = await itemsOf(env, job.id);
    expect(during.filter((item) => item.state === 'failed')).toEqual([]);
    expect(during.filter((item) => item.state === 'pending').length).toBeGreaterThan(0);
    expect(during.filter((item) => item.state === 'done').length).toBeGreaterThan(0);

    s3.start();
    const done = await waitForTerminal(env, job.id, 90_000);
    expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
    expect(done.attempts).toBe(1);
    expect(done).toMatchObject({ outageStartedAt: null, outageDependency: null });
    expect(done.result).toMatchObject({ files: files.length, imported: files.length, failed: 0 });
    const keyPrefix = `outage/${TENANT}/`;
    expect(await documentsOf(env, keyPrefix)).toHaveLength(files.length);
    const objects = await listObjects(env.s3, env.bucket, keyPrefix);
    expect(objects.map((object) => object.key).sort()).toEqual(files.map((file) => objectKeyFor('outage', TENANT, file.path)).sort());
  }, 240_000);

  it('CSV validation cut mid-read, and finalize with S3 away: both wait for S3 and go on with their one attempt', async () => {
    const file = plantedFile(30_000);
    const key = `imports/${TENANT}/outage-products.csv`;
    await upload(env.s3, env.bucket, key, file.body);
    // The first response to pass 256 KiB (the CSV object's body) is held there; then S3 goes away.
    s3.holdResponseAfter(256 * 1024);
    const held = once(s3, 'held');
    const { job } = await submitJob(env.pool, {
      kind: 'csv-import',
      tenantId: TENANT,
      payload: { bucket: env.bucket, key, profile: 'products' },
      maxAttempts: 1,
    });
    const worker = startWorker();
    await held;
    s3.stop();
    const waiting = await outageWaitedOut(worker, job.id, 2);
    expect(waiting).toMatchObject({ outageDependency: 's3' });
    expect(waiting.lastError).toMatchObject({ class: 'transient', context: { dependency: 's3', attemptCounted: false } });
    s3.start();
    const validated = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'queued' || current.state === 'running' ? undefined : current;
    }, 90_000, 100);
    expect(validated.state, JSON.stringify(validated.lastError)).toBe('review_ready');
    expect(validated).toMatchObject({ attempts: 1, outageStartedAt: null });
    expect(validated.result).toMatchObject({ rows: file.rows, valid: file.valid.length });

    // Finalize reads the object again: S3 away from the start this time.
    s3.stop();
    await finalizeImport(env.pool, job.id);
    await outageWaitedOut(worker, job.id, 2);
    s3.start();
    const finalized = await waitForTerminal(env, job.id, 90_000);
    expect(finalized.state, JSON.stringify(finalized.lastError)).toBe('partial');
    expect(finalized).toMatchObject({ kind: 'csv-finalize', attempts: 1, outageStartedAt: null });
    const { rows } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM products WHERE tenant_id = $1', [TENANT]);
    expect(rows[0]!.n).toBe(file.valid.length);
  }, 240_000);

  it('finalize cut mid-read after committing batches: a new outage after kept progress, not counted towards the bound', async () => {
    const file = plantedFile(30_000, 100, 'KPT');
    const key = `imports/${TENANT}/kept-progress.csv`;
    await upload(env.s3, env.bucket, key, file.body);
    const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: TENANT, payload: { bucket: env.bucket, key, profile: 'products' }, maxAttempts: 1 });
    const worker = startWorker();
    const parked = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'queued' || current.state === 'running' ? undefined : current;
    }, 90_000, 100);
    expect(parked.state, JSON.stringify(parked.lastError)).toBe('review_ready');

    // Finalize's read is held past its first 256 KiB until batches of it are committed; then S3 goes away.
    s3.holdResponseAfter(256 * 1024);
    const held = once(s3, 'held');
    await finalizeImport(env.pool, job.id);
    await held;
    await waitFor(async () => {
      const { rows } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM csv_import_batches WHERE job_id = $1 AND finalized_at IS NOT NULL', [job.id]);
      return rows[0]!.n > 0;
    }, 90_000, 50);
    s3.stop();
    const waiting = await outageWaitedOut(worker, job.id, 0);
    // The batches stay written and the next attempt resumes after them: the count of new outages starts again.
    expect(waiting.lastError).toMatchObject({ context: { dependency: 's3', attemptCounted: false, outageRestarts: 0 } });
    s3.start();
    const finalized = await waitForTerminal(env, job.id, 90_000);
    expect(finalized.state, JSON.stringify(finalized.lastError)).toBe('partial');
    expect(finalized).toMatchObject({ kind: 'csv-finalize', attempts: 1 });
    const { rows } = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM products WHERE tenant_id = $1 AND sku LIKE 'KPT%'", [TENANT]);
    expect(rows[0]!.n).toBe(file.valid.length);
  }, 240_000);

  it('an outage longer than the budget ends the run dead with DEPENDENCY_OUTAGE naming S3', async () => {
    const key = `imports/${TENANT}/budget.csv`;
    await upload(env.s3, env.bucket, key, plantedFile(100).body);
    s3.stop();
    const { job } = await submitJob(env.pool, {
      kind: 'csv-import',
      tenantId: TENANT,
      payload: { bucket: env.bucket, key, profile: 'products' },
      maxAttempts: 3,
    });
    const worker = startWorker({ DEPENDENCY_OUTAGE_BUDGET_MS: '1500' });
    const dead = await waitForTerminal(env, job.id, 90_000);
    expect(dead.state).toBe('dead');
    // Waiting never spent an attempt: the one that ends the run is the first.
    expect(dead.attempts).toBe(1);
    expect(dead.lastError).toMatchObject({
      code: 'DEPENDENCY_OUTAGE',
      class: 'transient',
      context: { dependency: 's3', outageBudgetMs: 1500 },
    });
    expect(dead.lastError!.message).toMatch(/^S3 unavailable since \S+Z \(\d+ s\), longer than the dependency outage budget of \d+ s/);
    expect(waitingLines(worker).length).toBeGreaterThan(0);
    await worker.waitForLog((line) => /^S3 unavailable since .* longer than the outage budget/.test(line.msg));
  }, 120_000);
});
