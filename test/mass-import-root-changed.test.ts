// A run resumed against another import root than the one it planned from: its plan's paths are relative to the
// root, so read from another one they name other files. Real worker processes behind the fault-injecting S3 proxy:
// the first worker plans from one root and is stopped (SIGTERM) while its first file uploads — the proxy holds that
// request until the signal is sent — so the run goes back to the queue with the rest of its files pending. The next
// worker finds another root: a folder of its own (`bulk-import local` of another directory), or another directory in
// the same place (a campaign mount swapped before a requeue). Either way the run fails once, ROOT_CHANGED, naming both
// roots, and not a byte of the other root's files is stored.
import { rename, rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { lastErrorView } from '../worker/http/views.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { requireJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { startFaultyS3Proxy, type FaultyS3Proxy } from './support/faulty-s3-proxy.js';
import { contentOf, documentsOf, itemsOf, listObjects, makeTree, objectBytes, sha256, waitForTerminal, type TreeFile } from './support/mass-import-tree.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const TENANT = 'roots';
// The same names in both roots, with other bytes (another seed): what a resumed run of the wrong root would store.
const files: TreeFile[] = [
  { path: 'a-first.txt', size: 1_000 },
  { path: 'b/second.pdf', size: 2_000 },
  { path: 'c-third.txt', size: 3_000 },
];
const spawned: WorkerProcess[] = [];
const trees: string[] = [];
let proxy: FaultyS3Proxy;

beforeAll(async () => {
  proxy = await startFaultyS3Proxy(env.s3Endpoint);
});
afterAll(async () => {
  await killAll(spawned);
  await proxy.close();
  for (const tree of trees) await rm(tree, { recursive: true, force: true });
});

async function tree(seed: string): Promise<string> {
  const root = await makeTree(files, seed);
  trees.push(root);
  return root;
}

function startWorker(root: string, args: string[] = [], logLevel = 'warn'): WorkerProcess {
  const worker = spawnWorker(env, {
    args,
    env: { IMPORT_ROOT: root, IMPORT_ROOT_REQUIRE_MOUNT: 'false', S3_ENDPOINT: proxy.endpoint, MASS_IMPORT_CONCURRENCY: '1', LOG_LEVEL: logLevel },
  });
  spawned.push(worker);
  return worker;
}

/** A run that planned from `root` and went back to the queue after its first file: the others are pending. */
async function runStoppedAfterItsFirstFile(prefix: string, root: string): Promise<number> {
  const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix } });
  const firstKey = objectKeyFor(prefix, TENANT, files[0]!.path);
  let uploading!: () => void;
  const firstUploading = new Promise<void>((resolve) => (uploading = resolve));
  let letGo!: () => void;
  const released = new Promise<'pass'>((resolve) => (letGo = () => resolve('pass')));
  proxy.decide = (request) => {
    if (request.method !== 'PUT' || !request.url.includes(encodeURI(firstKey))) return 'pass';
    uploading();
    return released;
  };
  const worker = startWorker(root, [], 'info');
  try {
    await firstUploading;
    worker.kill('SIGTERM');
    // Logged as the shutdown begins, in the same turn that stops the run (it takes no new file): only then may its first
    // file finish, so the others stay pending.
    await worker.waitForLog((line) => line.msg === 'shutting down: draining running jobs');
    letGo();
    expect((await worker.exited).code, worker.stderr.join('\n')).toBe(0);
  } finally {
    letGo();
    proxy.decide = () => 'pass';
  }
  const stopped = await requireJob(env.pool, job.id);
  expect(stopped.state).toBe('queued');
  expect((await itemsOf(env, job.id)).map((item) => [item.relative_path, item.state])).toEqual([
    ['a-first.txt', 'done'],
    ['b/second.pdf', 'pending'],
    ['c-third.txt', 'pending'],
  ]);
  return job.id;
}

async function expectRefusedKeepingThePlan(jobId: number, prefix: string, planned: string, now: string): Promise<void> {
  const finished = await waitForTerminal(env, jobId);
  expect(finished.state, JSON.stringify(finished.lastError)).toBe('failed');
  expect(finished.attempts).toBe(1);
  expect(finished.lastError).toMatchObject({ code: 'ROOT_CHANGED', class: 'permanent', context: { planned: { path: planned }, now: { path: now } } });
  const context = finished.lastError!.context as { planned: { inode: string }; now: { inode: string } };
  expect(context.planned.inode).not.toBe(context.now.inode);
  expect(finished.lastError!.message).toContain(`planned its files from the import root ${planned} (inode ${context.planned.inode}), but the import root is now ${now} (inode ${context.now.inode})`);
  // A tenant reads the code, not the worker's paths.
  expect(JSON.stringify(lastErrorView(finished.lastError, false))).not.toContain(planned);
  // Nothing was read from the other root: the pending items wait as they were, no item failed for it.
  expect((await itemsOf(env, jobId)).map((item) => [item.relative_path, item.state, item.error_code])).toEqual([
    ['a-first.txt', 'done', null],
    ['b/second.pdf', 'pending', null],
    ['c-third.txt', 'pending', null],
  ]);
  const keyPrefix = `${prefix}/${TENANT}/`;
  const documents = await documentsOf(env, keyPrefix);
  expect(documents.map((row) => [row.source_path, row.sha256])).toEqual([['a-first.txt', sha256(contentOf(files[0]!, 'planned'))]]);
  const objects = await listObjects(env.s3, env.bucket, keyPrefix);
  expect(objects.map((object) => object.key)).toEqual([objectKeyFor(prefix, TENANT, files[0]!.path)]);
  expect((await objectBytes(env.s3, env.bucket, objects[0]!.key)).equals(contentOf(files[0]!, 'planned'))).toBe(true);
}

/** A worker on `root` that takes up the stopped run and exits once the queue is empty (exit 0). */
async function resumeFrom(root: string): Promise<void> {
  const worker = startWorker(root, ['--exit-when-idle']);
  expect((await worker.exited).code, worker.stderr.join('\n')).toBe(0);
}

describe('a run resumed against another import root', () => {
  it('another folder (a local import of another directory): ROOT_CHANGED naming both, nothing of it stored', async () => {
    const prefix = 'other-folder';
    const plannedRoot = await tree('planned');
    const otherRoot = await tree('other');
    const jobId = await runStoppedAfterItsFirstFile(prefix, plannedRoot);
    await resumeFrom(otherRoot);
    await expectRefusedKeepingThePlan(jobId, prefix, plannedRoot, otherRoot);
  });

  it('another directory at the same path (a campaign mount swapped before a requeue): ROOT_CHANGED too', async () => {
    const prefix = 'swapped-mount';
    const mountPoint = await tree('planned');
    const replacement = await tree('other');
    const jobId = await runStoppedAfterItsFirstFile(prefix, mountPoint);
    await rename(mountPoint, `${mountPoint}.before`);
    trees.push(`${mountPoint}.before`);
    await rename(replacement, mountPoint);
    await resumeFrom(mountPoint);
    await expectRefusedKeepingThePlan(jobId, prefix, mountPoint, mountPoint);
  });

  it('the same root resumes the run and finishes it', async () => {
    const prefix = 'same-root';
    const root = await tree('planned');
    const jobId = await runStoppedAfterItsFirstFile(prefix, root);
    await resumeFrom(root);
    const finished = await waitForTerminal(env, jobId);
    expect(finished.state, JSON.stringify(finished.lastError)).toBe('succeeded');
    expect(finished.result).toMatchObject({ files: 3, imported: 3 });
  });
});
