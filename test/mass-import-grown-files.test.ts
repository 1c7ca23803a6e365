// Files that grow after the plan measured them, with a real worker process behind the fault-injecting S3 proxy. The
// plan checks the run's ceiling on the sizes it saw; the files are uploaded later, at the size they have then. The
// proxy holds the run's first upload while the test makes three planned files bigger (no timing guess): one past the
// run's maxFileBytes, two that each fit it but together take the run past its maxTotalBytes. The first of those two
// still fits, the second does not: each over-limit file fails naming its limit, nothing of it read or stored, and the
// files that fit are imported — the run never uploads more than its limits. A file that failed gives its bytes back:
// the too-big one was planned at 30,000 bytes, which the run no longer holds once it failed.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { useTestEnvironment } from './harness.js';
import { documentsOf, itemsOf, listObjects, objectBytes, waitForTerminal, type TreeFile } from './support/mass-import-tree.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';
import { spawnWorker } from './support/worker-processes.js';

const env = useTestEnvironment();
const TENANT = 'growing';
const MAX_FILE_BYTES = 100_000;
const MAX_TOTAL_BYTES = 120_000;
const first: TreeFile = { path: 'grow/1-first.txt', size: 1_000 };
const files: TreeFile[] = [
  first,
  { path: 'grow/2-too-big.bin', size: 30_000 },
  { path: 'grow/3-grows.bin', size: 1_000 },
  { path: 'grow/4-grows-too.bin', size: 1_000 },
  { path: 'grow/5-steady.txt', size: 1_000 },
];
// Sizes once the first file is under way: 2 passes maxFileBytes (and fails: the run then holds 4,000 bytes, not
// 34,000); 3 fits (4,000 + 89,000 = 93,000 bytes; counting the failed file's 30,000 it would not); 4 would bring the
// run to 182,000 bytes.
const grownTo: Record<string, number> = { 'grow/2-too-big.bin': 200_000, 'grow/3-grows.bin': 90_000, 'grow/4-grows-too.bin': 90_000 };

const tree = useTreeBehindProxy(env, files);

describe('files grown after the plan', () => {
  it("are refused past the run's maxFileBytes and maxTotalBytes when opened; the files that fit are imported", async () => {
    const prefix = 'grown';
    const firstKey = objectKeyFor(prefix, TENANT, first.path);
    let uploading!: () => void;
    const firstUploading = new Promise<void>((resolve) => (uploading = resolve));
    let letGo!: () => void;
    const released = new Promise<'pass'>((resolve) => (letGo = () => resolve('pass')));
    tree.proxy.decide = (request) => {
      if (request.method !== 'PUT' || !request.url.includes(encodeURI(firstKey))) return 'pass';
      uploading();
      return released;
    };
    const { job } = await submitJob(env.pool, {
      kind: 'mass-import',
      tenantId: TENANT,
      payload: { prefix, source: 'grow', maxFileBytes: MAX_FILE_BYTES, maxTotalBytes: MAX_TOTAL_BYTES },
    });
    // One file at a time: the others are opened after the first upload, in plan order.
    const worker = spawnWorker(env, { args: ['--exit-when-idle'], env: { ...tree.workerEnv(), MASS_IMPORT_CONCURRENCY: '1', LOG_LEVEL: 'warn' } });
    tree.spawned.push(worker);
    try {
      await firstUploading;
      // Planned (the plan is written before the first upload starts).
      expect((await itemsOf(env, job.id)).map((item) => item.state)).toEqual(['pending', 'pending', 'pending', 'pending', 'pending']);
      for (const [path, size] of Object.entries(grownTo)) await writeFile(join(tree.root, path), Buffer.alloc(size, 7));
    } finally {
      letGo();
      tree.proxy.decide = () => 'pass';
    }
    expect((await worker.exited).code, worker.stderr.join('\n')).toBe(0);

    const finished = await waitForTerminal(env, job.id);
    expect(finished.state, JSON.stringify(finished.lastError)).toBe('partial');
    const items = await itemsOf(env, job.id);
    expect(items.map((item) => [item.relative_path, item.state, item.error_code])).toEqual([
      ['grow/1-first.txt', 'done', null],
      ['grow/2-too-big.bin', 'failed', 'MAX_FILE_BYTES_EXCEEDED'],
      ['grow/3-grows.bin', 'done', null],
      ['grow/4-grows-too.bin', 'failed', 'MAX_TOTAL_BYTES_EXCEEDED'],
      ['grow/5-steady.txt', 'done', null],
    ]);
    const messages = Object.fromEntries(
      (await env.pool.query<{ relative_path: string; error_message: string }>(
        "SELECT relative_path, error_message FROM import_items WHERE job_id = $1 AND state = 'failed'",
        [job.id],
      )).rows.map((row) => [row.relative_path, row.error_message]),
    );
    expect(messages['grow/2-too-big.bin']).toContain('grow/2-too-big.bin is 195 KiB (200,000 bytes) now (the plan measured 29.3 KiB (30,000 bytes))');
    expect(messages['grow/2-too-big.bin']).toContain("over the run's maxFileBytes = 97.7 KiB (100,000 bytes): not read, not uploaded");
    expect(messages['grow/2-too-big.bin']).toContain('enqueue again with "maxFileBytes": 200000');
    expect(messages['grow/4-grows-too.bin']).toContain(
      "with it the run would hold 178 KiB (182,000 bytes), over its maxTotalBytes = 117 KiB (120,000 bytes); not read, not uploaded",
    );
    expect(finished.result).toMatchObject({ imported: 3, failed: 2, bytesImported: 1_000 + 90_000 + 1_000 });

    const keyPrefix = `${prefix}/${TENANT}/`;
    const stored = await listObjects(env.s3, env.bucket, keyPrefix);
    expect(stored.map((object) => [object.key, object.size])).toEqual([
      [objectKeyFor(prefix, TENANT, 'grow/1-first.txt'), 1_000],
      [objectKeyFor(prefix, TENANT, 'grow/3-grows.bin'), 90_000],
      [objectKeyFor(prefix, TENANT, 'grow/5-steady.txt'), 1_000],
    ]);
    expect(stored.reduce((sum, object) => sum + object.size, 0)).toBeLessThanOrEqual(MAX_TOTAL_BYTES);
    expect((await objectBytes(env.s3, env.bucket, objectKeyFor(prefix, TENANT, 'grow/3-grows.bin'))).equals(Buffer.alloc(90_000, 7))).toBe(true);
    expect((await documentsOf(env, keyPrefix)).map((row) => row.source_path)).toEqual(['grow/1-first.txt', 'grow/3-grows.bin', 'grow/5-steady.txt']);
  }, 120_000);
});
