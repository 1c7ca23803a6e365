// Transient S3 errors, through a fault-injecting proxy in front of the real S3 server: 503 SlowDown, 500
// InternalError, connection resets and stalled requests on a share of requests are retried per file (and SlowDown
// lowers the parallelism) until the import completes; when S3 fails every file the run stops and waits for S3 (an
// outage: no file is marked failed, no attempt is spent) and resumes later; a file that still fails after its retries
// sends the run back to the queue while it has attempts left, and only its last attempt ends `partial`.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { requireJob } from '../worker/queue/operator.js';
import { TERMINAL_STATES } from '../worker/queue/types.js';
import { useTestEnvironment } from './harness.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';
import { waitFor } from './support/in-process-worker.js';
import type { Fault, ProxiedRequest } from './support/faulty-s3-proxy.js';
import {
  contentOf, documentsOf, itemsOf, listObjects, objectBytes, sha256, waitForTerminal, type TreeFile,
} from './support/mass-import-tree.js';
import { spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const MiB = 1024 * 1024;
const TENANT = 'faults';
const files: TreeFile[] = [
  ...Array.from({ length: 60 }, (_, i) => ({ path: `share/${i % 4}/doc ${i}.pdf`, size: 500 + i * 131 })),
  { path: 'share/large scan.tiff', size: 5 * MiB + 4_321 },
];

const tree = useTreeBehindProxy(env, files);

function startWorker(args: string[] = []): WorkerProcess {
  const worker = spawnWorker(env, {
    args,
    env: {
      ...tree.workerEnv(),
      MASS_IMPORT_CONCURRENCY: '4',
      MASS_IMPORT_REQUEST_TIMEOUT_MS: '1500',
      RETRY_BACKOFF_BASE_MS: '200',
      RETRY_BACKOFF_MAX_MS: '500',
      LOG_LEVEL: 'warn',
    },
  });
  tree.spawned.push(worker);
  return worker;
}

/** The target of a request: method, key and part number (bucket and multipart upload id change per run). */
function targetOf(request: ProxiedRequest): string {
  const url = new URL(request.url, 'http://proxy');
  return `${request.method} ${url.pathname.split('/').slice(2).join('/')} ${url.searchParams.get('partNumber') ?? ''}`;
}

/** A stable number in [0, 1) per request target. */
function share(target: string): number {
  return createHash('sha256').update(target).digest().readUInt32LE(0) / 2 ** 32;
}

async function expectAllImported(prefix: string, jobId: number): Promise<void> {
  const keyPrefix = `${prefix}/${TENANT}/`;
  const rows = await documentsOf(env, keyPrefix);
  const objects = await listObjects(env.s3, env.bucket, keyPrefix);
  expect(rows).toHaveLength(files.length);
  expect(objects).toHaveLength(files.length);
  for (const file of files) {
    const key = objectKeyFor(prefix, TENANT, file.path);
    const expected = sha256(contentOf(file));
    expect(rows.find((row) => row.source_path === file.path)).toMatchObject({ sha256: expected, import_job_id: jobId });
    expect(sha256(await objectBytes(env.s3, env.bucket, key))).toBe(expected);
  }
}

describe('mass-import against a flaky S3', () => {
  it('completes when S3 fails a share of requests: errors are retried per file and SlowDown lowers the parallelism', async () => {
    // Writes only (reads are the test's own): a third fail once, a tenth answer SlowDown four times in a row — more
    // than the SDK's own three attempts, so the import's retry and backoff must take over — a few stall.
    const kinds: Fault[] = ['internal', 'slowdown', 'reset'];
    const seen = new Map<string, number>();
    tree.proxy.decide = (request) => {
      if (request.method === 'GET' || request.method === 'HEAD') return 'pass';
      const target = targetOf(request);
      const before = seen.get(target) ?? 0;
      seen.set(target, before + 1);
      const p = share(target);
      if (p < 0.1) return before < 4 ? 'slowdown' : 'pass';
      if (p < 0.13) return before < 1 ? 'stall' : 'pass';
      if (p < 0.43) return before < 1 ? kinds[Math.floor(p * 1000) % 3]! : 'pass';
      return 'pass';
    };
    tree.proxy.resetStats();
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix: 'flaky' } });
    const worker = startWorker(['--exit-when-idle']);
    expect((await worker.exited).code).toBe(0);
    const done = await waitForTerminal(env, job.id);
    tree.proxy.decide = () => 'pass';

    const failedItems = (await itemsOf(env, job.id)).filter((item) => item.state !== 'done');
    expect(done.state, JSON.stringify({ error: done.lastError, failedItems })).toBe('succeeded');
    expect(done.attempts).toBe(1);
    expect(tree.proxy.stats.faults.slowdown).toBeGreaterThan(8);
    expect(tree.proxy.stats.faults.internal).toBeGreaterThan(0);
    expect(tree.proxy.stats.faults.reset).toBeGreaterThan(0);
    expect(tree.proxy.stats.faults.stall).toBeGreaterThan(0);
    const result = done.result as { throttleSignals: number; concurrency: { max: number; lowest: number }; imported: number };
    expect(result.imported).toBe(files.length);
    expect(result.throttleSignals).toBeGreaterThan(0);
    expect(result.concurrency.max).toBe(4);
    expect(result.concurrency.lowest).toBeLessThan(4);
    await expectAllImported('flaky', job.id);
  });

  it('when S3 fails every file, the run stops and waits for S3 without spending an attempt, then resumes and finishes', async () => {
    tree.proxy.decide = (request) => (request.method === 'PUT' || request.method === 'POST' ? 'internal' : 'pass');
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix: 'outage' } });
    const worker = startWorker();
    const requeued = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.lastError?.code === 'S3_UNAVAILABLE' ? current : undefined;
    }, 60_000, 100);
    // Internal: its message quotes S3's own (a tenant reads a plain sentence).
    expect(requeued.lastError).toMatchObject({ class: 'transient', internal: true, context: { dependency: 's3', attemptCounted: false } });
    expect(['queued', 'running']).toContain(requeued.state);
    const items = await itemsOf(env, job.id);
    // The breaker tripped after a streak of files failing with S3 errors, none of them recorded as failed: every
    // file is still waiting, nothing was written.
    expect(items.filter((item) => item.state === 'failed')).toEqual([]);
    expect(items.filter((item) => item.state === 'pending').length).toBe(files.length);
    expect(await documentsOf(env, `outage/${TENANT}/`)).toEqual([]);

    tree.proxy.decide = () => 'pass';
    const done = await waitForTerminal(env, job.id, 60_000);
    worker.kill('SIGTERM');
    expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
    // Waiting for S3 spent no attempt.
    expect(done.attempts).toBe(1);
    expect(done.result).toMatchObject({ imported: files.length, failed: 0 });
    await expectAllImported('outage', job.id);
  });

  describe('a file that fails transiently after all its retries', () => {
    const SOURCE = 'share/1';
    const inSource = files.filter((file) => file.path.startsWith(`${SOURCE}/`));
    const doomed = inSource[1]!;
    /** Every write of the doomed file's object fails with 500 InternalError while `failing` is on. */
    function failDoomed(prefix: string): { stop(): void } {
      const doomedKey = objectKeyFor(prefix, TENANT, doomed.path);
      let failing = true;
      tree.proxy.decide = (request) => {
        const key = decodeURIComponent(new URL(request.url, 'http://proxy').pathname).split('/').slice(2).join('/');
        return failing && request.method === 'PUT' && key === doomedKey ? 'internal' : 'pass';
      };
      return { stop: () => (failing = false) };
    }
    const doomedItem = async (jobId: number) => (await itemsOf(env, jobId)).find((item) => item.relative_path === doomed.path)!;

    it('sends the run back to the queue while it has attempts left; the next attempt imports it', async () => {
      const fault = failDoomed('retry');
      const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix: 'retry', source: SOURCE }, maxAttempts: 5 });
      const worker = startWorker();
      const firstAttempt = await waitFor(async () => {
        const current = await requireJob(env.pool, job.id);
        return current.lastError || TERMINAL_STATES.includes(current.state) ? current : undefined;
      }, 60_000, 50);
      fault.stop();
      expect(firstAttempt.state, 'the first attempt must not end the run').not.toBe('partial');
      expect(firstAttempt.lastError).toMatchObject({
        code: 'ITEMS_FAILED_TRANSIENTLY',
        class: 'transient',
        attempt: 1,
        context: { failedTransient: 1, failedPermanent: 0 },
      });
      // The file the next attempt tries again is not counted done (nor failed) meanwhile: the figures never drop.
      expect(firstAttempt.progress).toMatchObject({ done: inSource.length - 1, total: inSource.length, filesFailed: 0 });

      const done = await waitForTerminal(env, job.id, 60_000);
      worker.kill('SIGTERM');
      expect((await worker.exited).code).toBe(0);
      expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
      expect(done.attempts).toBeGreaterThanOrEqual(2);
      expect(done.result).toMatchObject({ files: inSource.length, imported: inSource.length, failed: 0, failedTransient: 0 });
      // Five tries in the first attempt, then the one that worked.
      expect(await doomedItem(job.id)).toMatchObject({ state: 'done', error_code: null });
      expect((await doomedItem(job.id)).tries).toBeGreaterThan(5);
      const rows = await documentsOf(env, `retry/${TENANT}/`);
      expect(rows).toHaveLength(inSource.length);
      expect(rows.find((row) => row.source_path === doomed.path)?.sha256).toBe(sha256(contentOf(doomed)));
    });

    it('ends the run partial on its last attempt, with the item failed as transient', async () => {
      failDoomed('last-attempt');
      const { job } = await submitJob(env.pool, {
        kind: 'mass-import',
        tenantId: TENANT,
        payload: { prefix: 'last-attempt', source: SOURCE },
        maxAttempts: 2,
      });
      const worker = startWorker();
      const done = await waitForTerminal(env, job.id, 60_000);
      worker.kill('SIGTERM');
      tree.proxy.decide = () => 'pass';
      expect((await worker.exited).code).toBe(0);
      expect(done.state, JSON.stringify(done.lastError)).toBe('partial');
      expect(done.attempts).toBe(2);
      expect(done.result).toMatchObject({ files: inSource.length, imported: inSource.length - 1, failed: 1, failedTransient: 1 });
      const item = await doomedItem(job.id);
      expect(item).toMatchObject({ state: 'failed', error_code: 'S3_InternalError' });
      expect(item.tries).toBe(10); // five per attempt
      expect(await documentsOf(env, `last-attempt/${TENANT}/`)).toHaveLength(inSource.length - 1);
    });
  });
});
