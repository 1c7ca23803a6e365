// How a mass import stops, with real worker processes behind a slow or faulty S3 proxy:
//   - SIGTERM (ECS stop) stops taking new files but lets the files under way finish — a multipart upload in the
//     middle of its parts completes and is recorded — then gives the run back; another worker finishes it.
//   - cancel aborts the files under way at once (the multipart upload is aborted on S3 too).
//   - a database error reading the next page of items aborts the uploads under way and waits for them before the
//     failure is recorded: nothing of the run goes on uploading afterwards.
//   - a stalled S3 request times out even when garbage collection runs while it waits.
import { open } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, inject, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { cancelJob, requireJob } from '../worker/queue/operator.js';
import { createS3Client } from '../worker/storage/s3-client.js';
import { uploadFileWithSha256, UploadTimeoutError } from '../worker/storage/s3-upload.js';
import type { JobRow } from '../worker/queue/types.js';
import { useTestEnvironment } from './harness.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';
import { waitFor } from './support/in-process-worker.js';
import type { ProxiedRequest } from './support/faulty-s3-proxy.js';
import {
  contentOf, documentsOf, itemsOf, listObjects, objectBytes, sha256, waitForTerminal, type TreeFile,
} from './support/mass-import-tree.js';
import { spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const MiB = 1024 * 1024;
const TENANT = 'stop';
const big: TreeFile = { path: 'drain/a-big.bin', size: 12 * MiB + 321 };
const drainFiles: TreeFile[] = [big, ...Array.from({ length: 12 }, (_, i) => ({ path: `drain/small/${String(i).padStart(2, '0')}.txt`, size: 700 + i }))];
// More than one page of items (import-loop.ts reads 256 at a time).
const pageFiles: TreeFile[] = Array.from({ length: 270 }, (_, i) => ({ path: `pages/p-${String(i).padStart(3, '0')}.txt`, size: 10 + (i % 7) }));

const tree = useTreeBehindProxy(env, [...drainFiles, ...pageFiles]);

function startWorker(extraEnv: Record<string, string> = {}, args: string[] = []): WorkerProcess {
  const worker = spawnWorker(env, {
    args,
    env: {
      ...tree.workerEnv(),
      MASS_IMPORT_CONCURRENCY: '2',
      MASS_IMPORT_REQUEST_TIMEOUT_MS: '5000',
      WORKER_SHUTDOWN_GRACE_MS: '20000',
      RETRY_BACKOFF_BASE_MS: '200',
      RETRY_BACKOFF_MAX_MS: '500',
      LOG_LEVEL: 'warn',
      ...extraEnv,
    },
  });
  tree.spawned.push(worker);
  return worker;
}

/** The object key of a request path (the path after the bucket, decoded). */
function keyOfPath(url: string): string {
  return decodeURIComponent(new URL(url, 'http://front').pathname).split('/').slice(2).join('/');
}

interface StallingFront {
  endpoint: string;
  /** The writes held without an answer, and whether their client has hung up since. */
  stalled: Array<{ key: string; closed: boolean }>;
  close(): Promise<void>;
}

/**
 * A pass-through HTTP front for the S3 server that never answers writes of the keys `stall` picks, and notes when
 * the client of such a write hangs up (an upload aborted by the worker).
 */
async function startStallingFront(target: string, hooks: { stall(key: string): boolean; onWrite(key: string): void }): Promise<StallingFront> {
  const upstream = new URL(target);
  const stalled: StallingFront['stalled'] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const key = keyOfPath(req.url ?? '/');
    if (req.method === 'PUT') hooks.onWrite(key);
    if (req.method === 'PUT' && hooks.stall(key)) {
      const entry = { key, closed: false };
      stalled.push(entry);
      req.resume();
      req.socket.once('close', () => (entry.closed = true));
      return;
    }
    const outgoing = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    outgoing.on('error', () => res.socket?.destroy());
    req.pipe(outgoing);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stalled,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The object key a proxied request is about (the path after the bucket, decoded). */
function keyOf(request: ProxiedRequest): string {
  return keyOfPath(request.url);
}

/** Resolves when the worker sends the first part of the big file's multipart upload. */
function firstPartOf(key: string): Promise<void> {
  return new Promise((resolve) => {
    tree.proxy.decide = (request) => {
      if (request.method === 'PUT' && request.url.includes('partNumber=') && keyOf(request) === key) resolve();
      return 'pass';
    };
  });
}

async function itemState(jobId: number, path: string): Promise<string | undefined> {
  return (await itemsOf(env, jobId)).find((item) => item.relative_path === path)?.state;
}

describe('mass-import stopping', () => {
  it('SIGTERM lets a multipart upload under way finish and records it, takes no new file, and gives the run back', async () => {
    const prefix = 'drain';
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix, source: 'drain' } });
    const bigKey = objectKeyFor(prefix, TENANT, big.path);
    tree.proxy.resetStats();
    tree.proxy.latencyMs = 400; // each request waits: the big file's three parts and completion take a couple of seconds
    const partSent = firstPartOf(bigKey);
    const leaving = startWorker();
    try {
      await partSent;
      leaving.kill('SIGTERM');
      expect((await leaving.exited).code, leaving.stderr.join('\n')).toBe(0);
    } finally {
      leaving.kill('SIGKILL');
      tree.proxy.latencyMs = 0;
    }
    const released = await requireJob(env.pool, job.id);
    expect({ state: released.state, attempts: released.attempts }).toEqual({ state: 'queued', attempts: 0 });
    // The upload that was under way completed on S3 (no AbortMultipartUpload) and was committed with its row.
    expect(tree.proxy.stats.byMethod.DELETE ?? 0).toBe(0);
    expect(await itemState(job.id, big.path)).toBe('done');
    expect((await documentsOf(env, `${prefix}/${TENANT}/`)).find((row) => row.source_path === big.path)?.sha256).toBe(sha256(contentOf(big)));
    // No new file was started after the signal: most of the small ones are still waiting.
    const pendingAfterStop = (await itemsOf(env, job.id)).filter((item) => item.state === 'pending').length;
    expect(pendingAfterStop).toBeGreaterThan(drainFiles.length / 2);

    const staying = startWorker({}, ['--exit-when-idle']);
    const finished = await waitForTerminal(env, job.id, 60_000);
    expect((await staying.exited).code).toBe(0);
    expect(finished).toMatchObject({ state: 'succeeded', attempts: 1 });
    expect(finished.result).toMatchObject({ files: drainFiles.length, imported: drainFiles.length, failed: 0 });
    expect(await listObjects(env.s3, env.bucket, `${prefix}/${TENANT}/`)).toHaveLength(drainFiles.length);
    expect((await objectBytes(env.s3, env.bucket, bigKey)).equals(contentOf(big))).toBe(true);
  });

  it('cancel aborts the multipart upload under way at once, on S3 too, and the run ends canceled', async () => {
    const prefix = 'cancel';
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix, source: 'drain' } });
    const bigKey = objectKeyFor(prefix, TENANT, big.path);
    tree.proxy.resetStats();
    tree.proxy.latencyMs = 400;
    const partSent = firstPartOf(bigKey);
    const worker = startWorker();
    let canceled: JobRow | undefined;
    try {
      await partSent;
      expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
      canceled = await waitForTerminal(env, job.id, 30_000);
    } finally {
      worker.kill('SIGTERM');
      await worker.exited;
      tree.proxy.latencyMs = 0;
    }
    expect(canceled?.state).toBe('canceled');
    expect(await itemState(job.id, big.path)).toBe('pending');
    expect(tree.proxy.stats.byMethod.DELETE ?? 0).toBeGreaterThanOrEqual(1);
    expect(await listObjects(env.s3, env.bucket, bigKey)).toEqual([]);
    expect((await documentsOf(env, `${prefix}/${TENANT}/`)).find((row) => row.source_path === big.path)).toBeUndefined();
  });

  it('a database error between pages aborts the uploads under way before the failure is recorded', async () => {
    const prefix = 'pages';
    // One file well inside the first page gets no answer: it is under way when the second page is read, whatever the
    // upload limit is by then. (The limit halves on any SDK retry, which a loaded machine causes; this test used to
    // stall the last four files of the page, which then held every slot of a halved limit — the second page was never
    // read — or raced the read: the read failed and stopped the run before the last file's upload had started.)
    const stalledKey = objectKeyFor(prefix, TENANT, pageFiles[200]!.path);
    const renameTrigger = objectKeyFor(prefix, TENANT, pageFiles[100]!.path);
    const lockTrigger = objectKeyFor(prefix, TENANT, pageFiles[250]!.path);
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix, source: 'pages' } });
    const lock = await env.pool.connect();
    let renamed: Promise<unknown> | undefined;
    let locked: Promise<unknown> | undefined;
    const front = await startStallingFront(env.s3Endpoint, {
      stall: (key) => key === stalledKey,
      onWrite: (key) => {
        // Reading the next page of items fails from now on (long before the first page is done); commits still work.
        if (key === renameTrigger) renamed ??= env.pool.query('ALTER TABLE import_items RENAME COLUMN relative_path TO relative_path_hidden');
        // Near the end of the first page the job row is locked: the runner cannot record the attempt's failure (nor a
        // heartbeat or a progress write) — the moment it tries is frozen, and the test looks at the uploads then.
        if (key === lockTrigger) locked ??= lock.query('BEGIN').then(() => lock.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [job.id]));
      },
    });
    const failureWaiting = async () => {
      const { rows } = await env.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%last_error = $4%'`,
      );
      return rows[0]!.n > 0;
    };
    const allStalledClosed = () => front.stalled.length > 0 && front.stalled.every((request) => request.closed);
    // A long request timeout: nothing but the run itself ends an upload under way.
    const worker = startWorker({ S3_ENDPOINT: front.endpoint, MASS_IMPORT_CONCURRENCY: '4', MASS_IMPORT_REQUEST_TIMEOUT_MS: '600000' });
    try {
      // Generous: the first page (256 files through the stalling front) takes seconds alone, far longer when the whole
      // suite loads both cores (a full run once needed more than 30 s here); the request timeout above stays longer
      // still, so only the run itself can end the stalled uploads.
      await waitFor(async () => allStalledClosed() || (await failureWaiting()), 90_000, 20);
      // The runner ended the uploads before it went to record the failure; their close events may still be on their
      // way through the front. A run that left an upload open would hold it for the 600 s request timeout: waited for
      // while the failure's write is still held, up to 10 s, then the open ones are named.
      await waitFor(async () => allStalledClosed(), 10_000, 20).catch(() => undefined);
      expect(
        front.stalled.filter((request) => !request.closed).map((request) => request.key),
        'uploads were still under way when the runner went to record the failure',
      ).toEqual([]);
    } finally {
      await locked;
      await lock.query('ROLLBACK');
      lock.release();
    }
    try {
      const failed = await waitForTerminal(env, job.id, 60_000);
      expect(failed.state).toBe('failed');
      expect(failed.lastError).toMatchObject({ code: '42703', class: 'permanent' });
      expect(front.stalled.length).toBeGreaterThanOrEqual(1);
    } finally {
      worker.kill('SIGTERM');
      await worker.exited;
      await front.close();
      await renamed;
      await env.pool.query('ALTER TABLE import_items RENAME COLUMN relative_path_hidden TO relative_path');
    }
    const stalledItems = await env.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM import_items WHERE job_id = $1 AND item_no = 200 AND state = 'pending'",
      [job.id],
    );
    expect(stalledItems.rows[0]!.n).toBe(1);
  }, 240_000);

  it('a stalled S3 request times out even when garbage collection runs while it waits', async () => {
    // Formerly the request's signal was AbortSignal.any([job, AbortSignal.timeout()]): Node 20 holds its sources
    // weakly, a collection dropped the timeout, and a stalled upload hung for ever.
    setFlagsFromString('--expose-gc');
    const collectGarbage = runInNewContext('gc') as () => void;
    const s3 = createS3Client({ region: inject('s3Region'), endpoint: tree.proxy.endpoint, credentials: inject('s3Credentials'), maxAttempts: 1 });
    tree.proxy.decide = (request) => (request.method === 'PUT' ? 'stall' : 'pass');
    const file = await open(join(tree.root, drainFiles[1]!.path), 'r');
    const collector = setInterval(collectGarbage, 20);
    try {
      const started = Date.now();
      const upload = uploadFileWithSha256({
        s3,
        bucket: env.bucket,
        key: 'stalled/object',
        contentType: 'text/plain',
        file,
        size: drainFiles[1]!.size,
        multipartThresholdBytes: 5 * MiB,
        bufferLimitBytes: 16 * MiB,
        timeoutMs: 300,
        signal: new AbortController().signal,
      });
      const outcome = await Promise.race([
        upload.then(() => 'uploaded', (error: unknown) => error),
        new Promise((resolve) => setTimeout(resolve, 5_000, 'still waiting after 5 s')),
      ]);
      expect(outcome).toBeInstanceOf(UploadTimeoutError);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      clearInterval(collector);
      tree.proxy.decide = () => 'pass';
      await file.close();
      s3.destroy();
    }
  });
});
