// Exactly once across crashes: real worker processes killed with SIGKILL at several points of one mass import —
// after uploads reached S3 but before the first commit, mid-way, and near the end — and a last worker finishes it.
// In the end rows = objects = files, nothing duplicated, nothing lost, every object holding its file's bytes.
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { useTestEnvironment } from './harness.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';
import { waitFor } from './support/in-process-worker.js';
import {
  contentOf, documentsOf, itemsOf, listObjects, objectBytes, sha256, waitForTerminal, type TreeFile,
} from './support/mass-import-tree.js';
import { spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const MiB = 1024 * 1024;
const TENANT = 'crash';
const PREFIX = 'crash-test';
const files: TreeFile[] = [
  ...Array.from({ length: 150 }, (_, i) => ({ path: `batch-${String(Math.floor(i / 25))}/file ${String(i).padStart(3, '0')}.pdf`, size: 1_000 + ((i * 7919) % 20_000) })),
  { path: 'batch-3/zz multipart.tiff', size: 5 * MiB + 777 },
];

const tree = useTreeBehindProxy(env, files);

/** Short leases: the kill test waits out three of them. */
const SHORT_LEASES = { WORKER_LEASE_MS: '2000', WORKER_HEARTBEAT_MS: '300' };
/** For a test that waits out none: a starved worker keeps its lease (and the attempt count stays exact). */
const LONG_LEASES = { WORKER_LEASE_MS: '5000', WORKER_HEARTBEAT_MS: '750' };

const workerEnv = (leases: Record<string, string>) => ({
  ...tree.workerEnv(),
  MASS_IMPORT_CONCURRENCY: '4',
  ...leases,
  WORKER_RESCUE_INTERVAL_MS: '300',
  WORKER_POLL_INTERVAL_MS: '200',
  LOG_LEVEL: 'warn',
});

function start(args: string[] = [], leases = SHORT_LEASES): WorkerProcess {
  const worker = spawnWorker(env, { args, env: workerEnv(leases) });
  tree.spawned.push(worker);
  return worker;
}

async function counts(jobId: number) {
  const { rows } = await env.pool.query<{ done: number; total: number }>(
    "SELECT count(*) FILTER (WHERE state = 'done')::int AS done, count(*)::int AS total FROM import_items WHERE job_id = $1",
    [jobId],
  );
  return rows[0]!;
}

async function killWhen(worker: WorkerProcess, ready: () => Promise<boolean>): Promise<void> {
  await waitFor(async () => (await ready()) || undefined, 60_000, 15);
  worker.kill('SIGKILL');
  expect((await worker.exited).signal).toBe('SIGKILL');
}

describe('mass-import across kill -9', () => {
  it('killed before the first commit, mid-way and near the end: rows = objects = files, exactly once', async () => {
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix: PREFIX }, maxAttempts: 10 });
    const keyPrefix = `${PREFIX}/${TENANT}/`;

    // 1. Uploads reach S3 but their answers are held back: objects exist, no commit can have happened.
    tree.proxy.holdResponses = true;
    const first = start();
    await killWhen(first, async () => tree.proxy.stats.held >= 4);
    tree.proxy.dropHeld();
    expect((await counts(job.id)).done).toBe(0);
    expect(await documentsOf(env, keyPrefix)).toHaveLength(0);
    const orphans = await listObjects(env.s3, env.bucket, keyPrefix);
    expect(orphans.length).toBeGreaterThanOrEqual(1);

    // 2. Mid-way, and 3. near the end (slower S3 so the kill lands before the last file).
    tree.proxy.latencyMs = 30;
    const second = start();
    await killWhen(second, async () => (await counts(job.id)).done >= 0.4 * files.length);
    const midway = await counts(job.id);
    expect(midway.done).toBeLessThan(midway.total);

    tree.proxy.latencyMs = 80;
    const third = start();
    await killWhen(third, async () => (await counts(job.id)).done >= 0.9 * files.length);
    const nearEnd = await counts(job.id);
    expect(nearEnd.done).toBeGreaterThan(midway.done);
    expect(nearEnd.done).toBeLessThan(nearEnd.total);

    // 4. A last worker takes the run over once the dead one's lease expires, and finishes it. (Not --exit-when-idle:
    // until the rescue, the run is still `running` under the dead worker's lease and nothing is due.)
    tree.proxy.latencyMs = 0;
    const last = start();
    const finished = await waitForTerminal(env, job.id, 60_000);
    last.kill('SIGTERM');
    expect((await last.exited).code).toBe(0);
    expect(finished.state, JSON.stringify(finished.lastError)).toBe('succeeded');
    expect(finished.attempts).toBe(4);
    expect(finished.result).toMatchObject({ files: files.length, imported: files.length, failed: 0 });

    const rows = await documentsOf(env, keyPrefix);
    const objects = await listObjects(env.s3, env.bucket, keyPrefix);
    expect(rows).toHaveLength(files.length);
    expect(new Set(rows.map((row) => row.object_key)).size).toBe(files.length);
    expect(objects).toHaveLength(files.length);
    const rowsByPath = new Map(rows.map((row) => [row.source_path, row]));
    for (const file of files) {
      const key = objectKeyFor(PREFIX, TENANT, file.path);
      const expected = sha256(contentOf(file));
      expect(rowsByPath.get(file.path)).toMatchObject({ object_key: key, sha256: expected, import_job_id: job.id });
      expect(sha256(await objectBytes(env.s3, env.bucket, key))).toBe(expected);
    }
    // The objects uploaded before the first crash (no row then) were overwritten in place: same keys, no extras.
    const finalKeys = new Set(objects.map((object) => object.key));
    for (const orphan of orphans) expect(finalKeys.has(orphan.key)).toBe(true);
    expect((await itemsOf(env, job.id)).every((item) => item.state === 'done')).toBe(true);
  });

  it('SIGTERM mid-import: the worker stops at an item boundary and gives the run back; another worker finishes it', async () => {
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix: 'drain-test' } });
    tree.proxy.latencyMs = 40;
    const leaving = start([], LONG_LEASES);
    await waitFor(async () => ((await counts(job.id)).done >= 20 ? true : undefined), 60_000, 15);
    leaving.kill('SIGTERM');
    expect((await leaving.exited).code).toBe(0);
    const released = await env.pool.query('SELECT state, attempts FROM jobs WHERE id = $1', [job.id]);
    expect(released.rows[0]).toEqual({ state: 'queued', attempts: 0 });
    const stopped = await counts(job.id);
    expect(stopped.done).toBeLessThan(stopped.total);

    tree.proxy.latencyMs = 0;
    const staying = start(['--exit-when-idle'], LONG_LEASES);
    const finished = await waitForTerminal(env, job.id, 60_000);
    await staying.exited;
    expect(finished).toMatchObject({ state: 'succeeded', attempts: 1 });
    expect(finished.result).toMatchObject({ files: files.length, imported: files.length, failed: 0 });
    expect(await documentsOf(env, `drain-test/${TENANT}/`)).toHaveLength(files.length);
    expect(await listObjects(env.s3, env.bucket, `drain-test/${TENANT}/`)).toHaveLength(files.length);
  });
});
