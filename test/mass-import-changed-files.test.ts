// Files rewritten in place (same size, like `dd conv=notrunc`) while they upload, with real worker processes behind
// the fault-injecting S3 proxy. The proxy tells the test when the file's upload has begun (its PUT, or its
// UploadParts), holds that request while the test rewrites the file, then lets it go on — no timing guesses.
//   - changed once, then settled: the torn or stale try is neither committed nor kept (a torn multipart upload is
//     aborted before it completes; a single PUT's object is deleted), the file is read again and imported with its
//     final content: sha256 of the object = of the row = of the file on disk at the end.
//   - changed on every read: after three reads the item fails with FILE_CHANGED_DURING_IMPORT (permanent), the run
//     ends partial, and there is no object and no documents row for it.
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { useTestEnvironment } from './harness.js';
import type { ProxiedRequest } from './support/faulty-s3-proxy.js';
import {
  contentOf, documentsOf, itemsOf, listObjects, objectBytes, sha256, waitForTerminal, type TreeFile,
} from './support/mass-import-tree.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';
import { spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const MiB = 1024 * 1024;
const TENANT = 'changing';

// One folder per case: the file that changes, and a sibling that imports normally. The single-part file is below the
// multipart threshold (5 MiB in these tests) and read whole before its PUT; the multipart one has five parts, of which
// at most two are in flight — while they are held, the worker cannot have read more than about half of the file. The
// streamed one goes up as one streamed PUT (above a lowered read-whole limit, below a raised multipart threshold).
const SHAPES = {
  'single-part': 200 * 1024 + 17,
  multipart: 24 * MiB + 123,
  streamed: 3 * MiB + 5,
} as const;
type Shape = keyof typeof SHAPES;
const CASES = ['settles', 'keeps-changing'] as const;
type Case = (typeof CASES)[number];
// s3rver writes a PUT's body straight into the object's file, so an aborted streamed PUT leaves bytes behind there,
// which S3 never does: the "no object" case is not run for the streamed shape against it.
const casesOf = (shape: Shape): readonly Case[] => (shape === 'streamed' ? ['settles'] : CASES);
const envOf = (shape: Shape): Record<string, string> =>
  shape === 'streamed' ? { MASS_IMPORT_MULTIPART_THRESHOLD_BYTES: String(64 * MiB), MASS_IMPORT_BUFFER_LIMIT_BYTES: String(2 * MiB) } : {};

const changing = (shape: Shape, kind: Case): TreeFile => ({ path: `${shape}-${kind}/changing.bin`, size: SHAPES[shape] });
const sibling = (shape: Shape, kind: Case): TreeFile => ({ path: `${shape}-${kind}/steady.txt`, size: 3_000 });
const crashing: TreeFile = { path: 'crash/changing.bin', size: 150 * 1024 + 3 };
const frozen: TreeFile = { path: 'frozen/changing.bin', size: 120 * 1024 + 9 };
const files: TreeFile[] = [
  ...(Object.keys(SHAPES) as Shape[]).flatMap((shape) => casesOf(shape).flatMap((kind) => [changing(shape, kind), sibling(shape, kind)])),
  crashing,
  { path: 'crash/steady.txt', size: 2_000 },
  frozen,
];

const tree = useTreeBehindProxy(env, files);

function keyOf(request: ProxiedRequest): string {
  return decodeURIComponent(new URL(request.url, 'http://proxy').pathname).split('/').slice(2).join('/');
}

function query(request: ProxiedRequest, name: string): string | null {
  return new URL(request.url, 'http://proxy').searchParams.get(name);
}

/** A write that carries the file's bytes: a PUT of the object, or an UploadPart of it. */
function carriesBytes(request: ProxiedRequest, key: string): boolean {
  return request.method === 'PUT' && keyOf(request) === key;
}

/** Overwrites the file in place with new bytes of the same size (open r+, write at 0: `dd conv=notrunc`). */
async function rewriteInPlace(path: string, bytes: Buffer): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(bytes, 0, bytes.length, 0);
  } finally {
    await handle.close();
  }
}

async function runImport(prefix: string, source: string, extraEnv: Record<string, string> = {}) {
  const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix, source } });
  const worker = spawnWorker(env, {
    args: ['--exit-when-idle'],
    env: {
      ...tree.workerEnv(),
      MASS_IMPORT_CONCURRENCY: '2',
      // Only the run ends an upload the proxy holds, never a timeout.
      MASS_IMPORT_REQUEST_TIMEOUT_MS: '600000',
      LOG_LEVEL: 'warn',
      ...extraEnv,
    },
  });
  tree.spawned.push(worker);
  const exited = await worker.exited;
  expect(exited.code, worker.stderr.join('\n')).toBe(0);
  return waitForTerminal(env, job.id);
}

interface Requests {
  /** Completions of a multipart upload of the key (POST ?uploadId=…). */
  completes: number;
  /** Aborted multipart uploads of the key (DELETE ?uploadId=…). */
  aborts: number;
  /** Deleted objects at the key (DELETE without uploadId). */
  deletes: number;
}

function countRequests(key: string): { requests: Requests; observe(request: ProxiedRequest): void } {
  const requests: Requests = { completes: 0, aborts: 0, deletes: 0 };
  return {
    requests,
    observe(request) {
      if (keyOf(request) !== key) return;
      const uploadId = query(request, 'uploadId');
      if (request.method === 'POST' && uploadId) requests.completes += 1;
      if (request.method === 'DELETE' && uploadId) requests.aborts += 1;
      if (request.method === 'DELETE' && !uploadId) requests.deletes += 1;
    },
  };
}

describe('mass-import of files rewritten while they upload', () => {
  for (const shape of Object.keys(SHAPES) as Shape[]) {
    it(`${shape}: a file rewritten once while it uploads is read again and imported with its final content`, async () => {
      const file = changing(shape, 'settles');
      const prefix = `settles-${shape}`;
      const key = objectKeyFor(prefix, TENANT, file.path);
      const path = join(tree.root, file.path);
      const counted = countRequests(key);
      let rewrite: Promise<void> | undefined;
      let heldWrites = 0;
      tree.proxy.decide = (request) => {
        counted.observe(request);
        if (!carriesBytes(request, key)) return 'pass';
        // The upload has begun: rewrite the file before any of its bytes reach S3 (every write of the first try
        // waits for the rewrite, so the worker cannot read far ahead), then let them go on.
        heldWrites += 1;
        rewrite ??= rewriteInPlace(path, contentOf(file, 'rewritten'));
        return rewrite.then(() => 'pass' as const);
      };
      let done;
      try {
        done = await runImport(prefix, `${shape}-settles`, envOf(shape));
      } finally {
        tree.proxy.decide = () => 'pass';
      }

      expect(rewrite, 'the upload of the file never began').toBeDefined();
      expect(heldWrites).toBeGreaterThan(0);
      const onDisk = sha256(await readFile(path));
      expect(onDisk).toBe(sha256(contentOf(file, 'rewritten')));
      expect(done.state, JSON.stringify({ error: done.lastError, items: await itemsOf(env, done.id) })).toBe('succeeded');
      expect(done.result).toMatchObject({ files: 2, imported: 2, failed: 0 });
      const row = (await documentsOf(env, `${prefix}/${TENANT}/`)).find((document) => document.source_path === file.path);
      expect(row?.sha256).toBe(onDisk);
      expect(sha256(await objectBytes(env.s3, env.bucket, key))).toBe(onDisk);
      const item = (await itemsOf(env, done.id)).find((candidate) => candidate.relative_path === file.path)!;
      expect(item).toMatchObject({ state: 'done', error_code: null, tries: 2 });
      if (shape === 'multipart') {
        // The torn try never completed: its multipart upload was aborted, only the second read's was completed.
        expect(counted.requests).toMatchObject({ completes: 1, aborts: 1 });
      } else if (shape === 'single-part') {
        // The single PUT of the first read reached S3 before the worker saw the change: that object was deleted.
        expect(counted.requests.deletes).toBe(1);
      }
      // A retried file is counted once in the final figures.
      expect(done.progress).toMatchObject({ bytesDone: file.size + sibling(shape, 'settles').size, bytesTotal: file.size + sibling(shape, 'settles').size });
    }, 180_000);

    if (!casesOf(shape).includes('keeps-changing')) continue;
    it(`${shape}: a file that changes on every read fails with FILE_CHANGED_DURING_IMPORT, leaving no object and no row`, async () => {
      const file = changing(shape, 'keeps-changing');
      const prefix = `flux-${shape}`;
      const key = objectKeyFor(prefix, TENANT, file.path);
      const path = join(tree.root, file.path);
      const counted = countRequests(key);
      // One rewrite per try of the upload: per multipart upload id, or per PUT.
      const rewrites = new Map<string, Promise<void>>();
      tree.proxy.decide = (request) => {
        counted.observe(request);
        if (!carriesBytes(request, key)) return 'pass';
        const tryId = query(request, 'uploadId') ?? `put-${request.seq}`;
        let rewrite = rewrites.get(tryId);
        if (!rewrite) {
          rewrite = rewriteInPlace(path, contentOf(file, `version-${rewrites.size + 1}`));
          rewrites.set(tryId, rewrite);
        }
        return rewrite.then(() => 'pass' as const);
      };
      let done;
      try {
        done = await runImport(prefix, `${shape}-keeps-changing`);
      } finally {
        tree.proxy.decide = () => 'pass';
      }

      expect(rewrites.size).toBe(3);
      expect(done.state, JSON.stringify(done.lastError)).toBe('partial');
      expect(done.attempts).toBe(1);
      expect(done.result).toMatchObject({ files: 2, imported: 1, failed: 1, failedTransient: 0 });
      const { rows } = await env.pool.query(
        'SELECT state, error_code, error_class, error_message, tries FROM import_items WHERE job_id = $1 AND relative_path = $2',
        [done.id, file.path],
      );
      expect(rows[0]).toMatchObject({ state: 'failed', error_code: 'FILE_CHANGED_DURING_IMPORT', error_class: 'permanent', tries: 3 });
      expect(rows[0].error_message).toContain('changed while it was imported');
      const documents = await documentsOf(env, `${prefix}/${TENANT}/`);
      expect(documents.map((document) => document.source_path)).toEqual([sibling(shape, 'keeps-changing').path]);
      expect(await listObjects(env.s3, env.bucket, key)).toEqual([]);
      if (shape === 'multipart') {
        expect(counted.requests).toMatchObject({ completes: 0, aborts: 3 });
      } else {
        expect(counted.requests.deletes).toBe(3);
      }
    }, 180_000);
  }

  it('a worker killed between writing the object of a changed file and deleting it: no row; the next worker imports the final content', async () => {
    const prefix = 'crash';
    const key = objectKeyFor(prefix, TENANT, crashing.path);
    const path = join(tree.root, crashing.path);
    const original = contentOf(crashing);
    let rewrite: Promise<void> | undefined;
    let deleteSeen!: () => void;
    const deleting = new Promise<void>((resolve) => (deleteSeen = resolve));
    tree.proxy.decide = (request) => {
      if (carriesBytes(request, key)) {
        rewrite ??= rewriteInPlace(path, contentOf(crashing, 'after-crash'));
        return rewrite.then(() => 'pass' as const);
      }
      if (request.method === 'DELETE' && keyOf(request) === key && !query(request, 'uploadId')) {
        // The worker saw the change and is about to delete the object: it dies right there.
        deleteSeen();
        return new Promise<never>(() => {});
      }
      return 'pass';
    };
    const workerEnv = {
      ...tree.workerEnv(),
      MASS_IMPORT_CONCURRENCY: '2',
      WORKER_LEASE_MS: '2000',
      WORKER_HEARTBEAT_MS: '300',
      WORKER_RESCUE_INTERVAL_MS: '300',
      WORKER_POLL_INTERVAL_MS: '200',
      LOG_LEVEL: 'warn',
    };
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix, source: 'crash' }, maxAttempts: 5 });
    const start = (): WorkerProcess => {
      const worker = spawnWorker(env, { env: workerEnv });
      tree.spawned.push(worker);
      return worker;
    };
    const first = start();
    try {
      await deleting;
      first.kill('SIGKILL');
      expect((await first.exited).signal).toBe('SIGKILL');
    } finally {
      tree.proxy.decide = () => 'pass';
    }
    // What the crash left: the item pending, no row, and at most an object of the version read before the rewrite —
    // a consistent copy of bytes that existed, never a torn one.
    const item = (await itemsOf(env, job.id)).find((candidate) => candidate.relative_path === crashing.path)!;
    expect(item.state).toBe('pending');
    expect((await documentsOf(env, `${prefix}/${TENANT}/`)).find((row) => row.source_path === crashing.path)).toBeUndefined();
    expect(sha256(await objectBytes(env.s3, env.bucket, key))).toBe(sha256(original));

    const second = start();
    const done = await waitForTerminal(env, job.id, 120_000);
    second.kill('SIGTERM');
    await second.exited;
    expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
    expect(done.attempts).toBe(2);
    const onDisk = sha256(await readFile(path));
    expect(onDisk).toBe(sha256(contentOf(crashing, 'after-crash')));
    const row = (await documentsOf(env, `${prefix}/${TENANT}/`)).find((document) => document.source_path === crashing.path);
    expect(row?.sha256).toBe(onDisk);
    expect(sha256(await objectBytes(env.s3, env.bucket, key))).toBe(onDisk);
  }, 180_000);

  it('a worker frozen past its lease while its PUT was in flight does not delete the object at the key when it wakes', async () => {
    const prefix = 'frozen';
    const key = objectKeyFor(prefix, TENANT, frozen.path);
    const path = join(tree.root, frozen.path);
    let putSeen!: () => void;
    const putHeld = new Promise<void>((resolve) => (putSeen = resolve));
    let releasePut!: () => void;
    const putReleased = new Promise<void>((resolve) => (releasePut = resolve));
    const counted = countRequests(key);
    tree.proxy.decide = (request) => {
      counted.observe(request);
      if (!carriesBytes(request, key)) return 'pass';
      putSeen();
      return putReleased.then(() => 'pass' as const);
    };
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix, source: 'frozen' } });
    const worker = spawnWorker(env, { env: { ...tree.workerEnv(), WORKER_HEARTBEAT_MS: '300', LOG_LEVEL: 'info' } });
    tree.spawned.push(worker);
    try {
      await putHeld;
      // The process stops (a long GC pause, a frozen VM) with its PUT in flight. Meanwhile its lease is gone: another
      // attempt owns the run (as a rescue and a claim by another worker would leave it), and the file is rewritten.
      worker.kill('SIGSTOP');
      await env.pool.query(
        `UPDATE jobs SET lease_owner = 'successor', attempts = attempts + 1, lease_expires_at = now() + interval '1 hour' WHERE id = $1`,
        [job.id],
      );
      await rewriteInPlace(path, contentOf(frozen, 'rewritten'));
      releasePut();
      worker.kill('SIGCONT');
      // It wakes: its PUT completes, it sees the file changed, and finds it no longer holds the run.
      await worker.waitForLog((line) => line.job_id === job.id && line.msg === 'job finished');
    } finally {
      releasePut();
      tree.proxy.decide = () => 'pass';
      worker.kill('SIGKILL');
      await worker.exited;
    }
    const finished = worker.logs.find((line) => line.job_id === job.id && line.msg === 'job finished');
    expect(finished?.outcome).toBe('lost');
    // The object at the key is not this worker's to delete any more: the successor may have written it since.
    expect(counted.requests.deletes).toBe(0);
    expect(await listObjects(env.s3, env.bucket, key)).toHaveLength(1);
    await env.pool.query(`UPDATE jobs SET state = 'canceled', lease_owner = NULL, lease_expires_at = NULL, finished_at = now() WHERE id = $1`, [job.id]);
  }, 180_000);
});
