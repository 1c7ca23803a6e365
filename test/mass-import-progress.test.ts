// Progress of a mass import while a big file uploads: bytes move as its parts are acknowledged, not only when the
// file is done; the ETA is given only when it means something. A real worker process behind the fault-injecting S3
// proxy, which holds the big file's later parts (the upload is stalled mid-way) while the test reads the progress
// from the jobs table, as `bulk-import show` and `watch` do.
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { ProgressRate, sensibleEta, MAX_ETA_SECONDS } from '../worker/cli/progress-rate.js';
import { ETA_MAX_SECONDS, ETA_MIN_ELAPSED_MS, ImportProgress, importEtaSeconds } from '../worker/imports/mass-import/import-progress.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { cancelJob, requireJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import type { ProxiedRequest } from './support/faulty-s3-proxy.js';
import { waitFor } from './support/in-process-worker.js';
import { contentOf, itemsOf, objectBytes, sha256, waitForTerminal, type TreeFile } from './support/mass-import-tree.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';
import { spawnWorker } from './support/worker-processes.js';

const env = useTestEnvironment();
const MiB = 1024 * 1024;
const GB = 1e9;
const TENANT = 'progress';
const PART = 5 * MiB; // the part size at the tests' 5 MiB multipart threshold
const big: TreeFile = { path: 'big/huge.bin', size: 6 * PART + 4_321 };
const small: TreeFile = { path: 'big/a-small.txt', size: 3 };

const tree = useTreeBehindProxy(env, [big, small]);

function keyOf(request: ProxiedRequest): string {
  return decodeURIComponent(new URL(request.url, 'http://proxy').pathname).split('/').slice(2).join('/');
}

function partNumber(request: ProxiedRequest): number | undefined {
  const value = new URL(request.url, 'http://proxy').searchParams.get('partNumber');
  return value === null ? undefined : Number(value);
}

describe('progress of a big file while it uploads', () => {
  it('bytesDone moves while the parts of one big file upload, and counts the file once in the end', async () => {
    const { job, worker, release } = await runStalledMidUpload('stalled', {}, ['--exit-when-idle']);
    const bigKey = objectKeyFor('stalled', TENANT, big.path);
    try {
      // The event: the stored progress counts the two acknowledged parts (the small file's 3 bytes may or may not be in
      // yet); the parts held keep the upload where it is.
      const inFlight = await requireJob(env.pool, job.id);
      const progress = inFlight.progress!;
      expect(inFlight.state).toBe('running');
      expect(progress.bytesTotal).toBe(big.size + small.size);
      expect(progress.bytesDone).toBeGreaterThan(0);
      expect(progress.bytesDone).toBeLessThan(big.size);
      // The big file is not done: the file counter cannot have counted it.
      expect(progress.filesImported).toBeLessThanOrEqual(1);
      // No absurd ETA: none yet (not meaningful), or a sensible one.
      expect(progress.etaSeconds === null || (typeof progress.etaSeconds === 'number' && progress.etaSeconds <= ETA_MAX_SECONDS)).toBe(true);
      const figures = new ProgressRate().observe(progress);
      expect(figures.percent).toBeGreaterThan(0);
      expect(figures.percent).toBeLessThan(100);
      expect(figures.bytesDone).toBe(progress.bytesDone);
    } finally {
      release();
      tree.proxy.decide = () => 'pass';
    }
    expect((await worker.exited).code, worker.stderr.join('\n')).toBe(0);
    const done = await waitForTerminal(env, job.id);
    expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
    // In the end every byte counted once: in-flight bytes were replaced by the file's size when it was recorded.
    expect(done.progress).toMatchObject({ bytesDone: big.size + small.size, bytesTotal: big.size + small.size, etaSeconds: 0, done: 2 });
    expect(done.result).toMatchObject({ imported: 2, bytesImported: big.size + small.size });
    expect(sha256(await objectBytes(env.s3, env.bucket, bigKey))).toBe(sha256(contentOf(big)));
  }, 180_000);
});

/**
 * Holds the big file's parts from the third on and starts a worker on a run of the tree; resolves once the stored
 * progress counts the two parts that went through (bytes of a file under way). `release` lets the held parts go.
 */
async function runStalledMidUpload(prefix: string, workerEnv: Record<string, string> = {}, args: string[] = []) {
  const bigKey = objectKeyFor(prefix, TENANT, big.path);
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  let held = 0;
  tree.proxy.decide = (request) => {
    const part = partNumber(request);
    if (request.method !== 'PUT' || keyOf(request) !== bigKey || part === undefined || part < 3) return 'pass';
    held += 1;
    return released.then(() => 'pass' as const);
  };
  const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix, source: 'big' } });
  const worker = spawnWorker(env, {
    args,
    env: { ...tree.workerEnv(), MASS_IMPORT_CONCURRENCY: '2', MASS_IMPORT_REQUEST_TIMEOUT_MS: '600000', LOG_LEVEL: 'warn', ...workerEnv },
  });
  tree.spawned.push(worker);
  await waitFor(async () => held > 0 && Number((await requireJob(env.pool, job.id)).progress?.bytesDone ?? 0) >= 2 * PART, 90_000, 50);
  return { job, worker, release };
}

/** Bytes of the run's recorded files: what a run that stopped has imported, skipped or failed. */
async function recordedBytes(jobId: number): Promise<number> {
  const { rows } = await env.pool.query<{ bytes: number }>(
    "SELECT coalesce(sum(size_bytes), 0)::bigint AS bytes FROM import_items WHERE job_id = $1 AND state <> 'pending'",
    [jobId],
  );
  return Number(rows[0]!.bytes);
}

describe('progress of a run stopped while a big file uploads', () => {
  it('a canceled run keeps no bytes of the upload it aborted', async () => {
    const { job, worker, release } = await runStalledMidUpload('canceled-mid-upload');
    try {
      expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
      const canceled = await waitForTerminal(env, job.id, 30_000);
      expect(canceled.state).toBe('canceled');
      expect((await itemsOf(env, job.id)).find((item) => item.relative_path === big.path)?.state).toBe('pending');
      // Two parts (10 MiB) were counted while they were under way; the figures kept are the files recorded (the small
      // one, or none), not those bytes.
      const imported = (await itemsOf(env, job.id)).filter((item) => item.state === 'done').length;
      expect(canceled.progress).toMatchObject({ bytesDone: await recordedBytes(job.id), bytesTotal: big.size + small.size, filesImported: imported });
    } finally {
      release();
      tree.proxy.decide = () => 'pass';
      worker.kill('SIGTERM');
      await worker.exited;
    }
  }, 180_000);

  it('a run given back at a shutdown, its upload aborted after the drain time, keeps no bytes of it either', async () => {
    // A drain of 0.8 s (80 % of the grace time): the big file, its parts held, cannot finish in it and is aborted.
    const { job, worker, release } = await runStalledMidUpload('released-mid-upload', { WORKER_SHUTDOWN_GRACE_MS: '1000' });
    try {
      worker.kill('SIGTERM');
      expect((await worker.exited).code, worker.stderr.join('\n')).toBe(0);
      const given = await requireJob(env.pool, job.id);
      expect(given.state).toBe('queued');
      expect((await itemsOf(env, job.id)).find((item) => item.relative_path === big.path)?.state).toBe('pending');
      expect(given.progress).toMatchObject({ bytesDone: await recordedBytes(job.id), bytesTotal: big.size + small.size });
    } finally {
      release();
      tree.proxy.decide = () => 'pass';
      worker.kill('SIGKILL');
      // Not left for a later worker of this file.
      await cancelJob(env.pool, job.id);
    }
  }, 180_000);
});

describe('the ETA rule', () => {
  const base = { bytesTotal: 6 * GB, filesLeft: 1, filesMoved: 1 };

  it('gives no ETA before the minimum window, nor before bytes moved, and never an absurd one', () => {
    // The report that started this: 25 s in, 3 bytes of a 6 GB run done.
    expect(importEtaSeconds({ ...base, elapsedMs: 25_000, bytesMoved: 3, bytesLeft: 6 * GB - 3 })).toBeNull();
    // Plenty of bytes, but too early to tell.
    expect(importEtaSeconds({ ...base, elapsedMs: ETA_MIN_ELAPSED_MS - 1, bytesMoved: 1 * GB, bytesLeft: 5 * GB })).toBeNull();
    // 1.8 GB in 25 s of 6 GB: 4.2 GB at 72 MB/s.
    expect(importEtaSeconds({ ...base, elapsedMs: 25_000, bytesMoved: 1.8 * GB, bytesLeft: 4.2 * GB })).toBe(59);
    // A rate near zero: no estimate rather than years.
    expect(importEtaSeconds({ ...base, elapsedMs: 3_600_000, bytesMoved: 2 * MiB, bytesLeft: 6 * GB })).toBeNull();
    expect(importEtaSeconds({ ...base, elapsedMs: 3_600_000, bytesMoved: 200 * MiB, bytesLeft: 6 * GB })).toBe(Math.ceil(6 * GB / ((200 * MiB) / 3600)));
  });

  it('is 0 when no file is left, and counts files when only empty ones are left', () => {
    expect(importEtaSeconds({ ...base, elapsedMs: 0, bytesMoved: 0, bytesLeft: 0, filesLeft: 0 })).toBe(0);
    expect(importEtaSeconds({ ...base, elapsedMs: 20_000, bytesMoved: 5 * MiB, bytesLeft: 0, filesLeft: 10, filesMoved: 20 })).toBe(10);
    expect(importEtaSeconds({ ...base, elapsedMs: 20_000, bytesMoved: 0, bytesLeft: 0, filesLeft: 10, filesMoved: 0 })).toBeNull();
  });

  it('a small run needs fewer bytes than the 1 MiB minimum (1 % of its bytes)', () => {
    const smallRun = { bytesTotal: 100_000, filesLeft: 50, filesMoved: 50 };
    expect(importEtaSeconds({ ...smallRun, elapsedMs: 20_000, bytesMoved: 50_000, bytesLeft: 50_000 })).toBe(20);
    expect(importEtaSeconds({ ...smallRun, elapsedMs: 20_000, bytesMoved: 500, bytesLeft: 99_500 })).toBeNull();
  });

  it('a file failed transiently while the run has attempts left is not counted done: the next attempt tries it', () => {
    const totals = { files: 3, bytes: 30, pending: 3, done: 0, skipped: 0, failed: 0, failedTransient: 0, bytesDone: 0, bytesSkipped: 0, bytesFailed: 0 };
    const reporter = { update: () => {}, flush: async () => {}, forget: () => {} };
    const retried = new ImportProgress(totals, reporter, () => 0, true);
    retried.record('done', 10, 0, 1);
    retried.record('failed', 10, 0, 2, 'transient');
    retried.record('failed', 10, 0, 3, 'permanent');
    expect(retried.snapshot('importing')).toMatchObject({ done: 2, filesImported: 1, filesFailed: 1, bytesDone: 20 });
    // On the last attempt it is the run's failure, counted as such.
    const last = new ImportProgress(totals, reporter, () => 0, false);
    last.record('failed', 10, 0, 2, 'transient');
    expect(last.snapshot('importing')).toMatchObject({ done: 1, filesFailed: 1, bytesDone: 10 });
  });

  it('the snapshot adds in-flight bytes to bytesDone, and a retried file starts again from 0 without counting twice', () => {
    let now = 0;
    const totals = { files: 2, bytes: 100 * MiB, pending: 2, done: 0, skipped: 0, failed: 0, failedTransient: 0, bytesDone: 0, bytesSkipped: 0, bytesFailed: 0 };
    const reports: Array<Record<string, unknown>> = [];
    const progress = new ImportProgress(totals, { update: (value) => void reports.push(value), flush: async () => {}, forget: () => {} }, () => now);
    now = 5_000;
    progress.transferring(1, 40 * MiB);
    expect(progress.snapshot('importing')).toMatchObject({ bytesDone: 40 * MiB, done: 0, etaSeconds: null });
    now = 20_000;
    progress.transferring(1, 0); // the file is read again: its first try's bytes no longer count
    progress.transferring(1, 30 * MiB);
    expect(progress.snapshot('importing')).toMatchObject({ bytesDone: 30 * MiB, etaSeconds: Math.ceil(70 / (30 / 20)) });
    progress.record('done', 90 * MiB, 0, 1);
    progress.record('done', 10 * MiB, 0, 2);
    expect(progress.snapshot('finished')).toMatchObject({ bytesDone: 100 * MiB, bytesTotal: 100 * MiB, done: 2, etaSeconds: 0 });
  });

  it('the CLI shows no ETA when the run says none is meaningful, nor an absurd one', () => {
    expect(sensibleEta(592_705_487)).toBeUndefined();
    expect(sensibleEta(MAX_ETA_SECONDS)).toBe(MAX_ETA_SECONDS);
    expect(sensibleEta(null)).toBeUndefined();
    const rate = new ProgressRate();
    rate.observe({ done: 1, total: 2, bytesDone: 3, bytesTotal: 6 * GB, etaSeconds: null }, 0);
    // The item counter moved, but the run said no ETA: none is made up from the counter.
    const figures = rate.observe({ done: 1, total: 2, bytesDone: 1.8 * GB, bytesTotal: 6 * GB, etaSeconds: null }, 25_000);
    expect(figures.etaSeconds).toBeUndefined();
    expect(figures.percent).toBeCloseTo(30, 5);
    expect(rate.observe({ done: 1, total: 2, bytesDone: 3, bytesTotal: 6 * GB, etaSeconds: 592_705_487 }, 26_000).etaSeconds).toBeUndefined();
  });
});
