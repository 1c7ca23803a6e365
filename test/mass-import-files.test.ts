// mass-import end to end with real worker processes and the real S3 server: every file becomes exactly one object
// with identical bytes and one documents row with the right sha256; a re-run writes nothing; changed content is
// reported, never overwritten; a dry run reports without writing.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { massImportHandler } from '../worker/handlers/mass-import.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { useTestEnvironment } from './harness.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';
import {
  contentOf, documentsOf, itemsOf, listObjects, objectBytes, sha256, waitForTerminal, type TreeFile,
} from './support/mass-import-tree.js';
import { spawnWorker } from './support/worker-processes.js';

const env = useTestEnvironment();
const MiB = 1024 * 1024;
const TENANT = 'acme';
const PREFIX = 'files-test';
const keyPrefix = `${PREFIX}/${TENANT}/`;

const files: TreeFile[] = [
  { path: 'a.txt', size: 1_000 },
  { path: 'empty.bin', size: 0 },
  { path: 'Verträge/2024/Überweisung 17.pdf', size: 20_000 },
  { path: '見積書/レポート.docx', size: 3_000 },
  { path: 'with space/file name with spaces.txt', size: 500 },
  { path: 'newline\nin name.txt', size: 100 },
  { path: 'tab\tand %20 percent+plus&amp.txt', size: 120 },
  { path: 'quote" hash# question?.md', size: 64 },
  { path: 'deep/a/b/c/d/e/f.txt', size: 10 },
  { path: 'big/scan.tiff', size: 5 * MiB + 12_345 },
  ...Array.from({ length: 24 }, (_, i) => ({ path: `bulk/${i % 3}/doc-${i}.pdf`, size: 200 + i * 97 })),
];

const tree = useTreeBehindProxy(env, files);

/** Enqueues a run and lets one real worker process run it to its end. */
async function runImport(payload: Record<string, unknown> = {}, workerEnv: Record<string, string> = {}) {
  const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix: PREFIX, ...payload } });
  const worker = spawnWorker(env, {
    args: ['--exit-when-idle'],
    env: {
      ...tree.workerEnv(),
      MASS_IMPORT_CONCURRENCY: '4',
      LOG_LEVEL: 'warn',
      ...workerEnv,
    },
  });
  tree.spawned.push(worker);
  const exit = await worker.exited;
  expect(exit.code, worker.stderr.join('\n')).toBe(0);
  return waitForTerminal(env, job.id);
}

const writes = () => (tree.proxy.stats.byMethod.PUT ?? 0) + (tree.proxy.stats.byMethod.POST ?? 0);

describe('mass-import of a tree', () => {
  it('stores every file as exactly one object with identical bytes and one row with the right sha256', async () => {
    const requests: string[] = [];
    tree.proxy.decide = (request) => {
      requests.push(`${request.method} ${request.url}`);
      return 'pass';
    };
    const job = await runImport();
    tree.proxy.decide = () => 'pass';
    expect(job.state, JSON.stringify(job.lastError)).toBe('succeeded');
    expect(job.result).toMatchObject({ files: files.length, imported: files.length, skipped: 0, failed: 0 });
    expect(job.progress).toMatchObject({ done: files.length, total: files.length, bytesDone: job.result!.bytes, etaSeconds: 0 });

    const objects = await listObjects(env.s3, env.bucket, keyPrefix);
    const rows = await documentsOf(env, keyPrefix);
    expect(objects).toHaveLength(files.length);
    expect(rows).toHaveLength(files.length);
    const rowsByPath = new Map(rows.map((row) => [row.source_path, row]));
    const objectsByKey = new Map(objects.map((object) => [object.key, object]));
    for (const file of files) {
      const key = objectKeyFor(PREFIX, TENANT, file.path);
      const expected = contentOf(file);
      const row = rowsByPath.get(file.path);
      expect(row, file.path).toMatchObject({ object_key: key, sha256: sha256(expected), size_bytes: file.size, tenant_id: TENANT, import_job_id: job.id });
      expect(objectsByKey.get(key)?.size, file.path).toBe(file.size);
      expect((await objectBytes(env.s3, env.bucket, key)).equals(expected), file.path).toBe(true);
    }
    // Keys are safe: no control characters, no raw % or #, and the newline name is encoded.
    for (const object of objects) {
      expect([...object.key].some((character) => character.charCodeAt(0) < 0x20 || character === '\x7f'), object.key).toBe(false);
      expect(object.key).not.toMatch(/[#"\\]/);
    }
    expect(rowsByPath.get('Verträge/2024/Überweisung 17.pdf')?.content_type).toBe('application/pdf');
    // The file above the multipart threshold went up in two parts; the others in one PUT each.
    const bigKey = `/${env.bucket}/${objectKeyFor(PREFIX, TENANT, 'big/scan.tiff')}`;
    expect(requests.filter((request) => request.startsWith(`POST ${bigKey}?uploads`))).toHaveLength(1);
    expect(requests.filter((request) => request.startsWith(`PUT ${bigKey}?partNumber=`))).toHaveLength(2);
    expect(requests.filter((request) => request.includes('x-id=PutObject'))).toHaveLength(files.length - 1);
  });

  it('a re-run of the finished import writes nothing new and says every file was already imported', async () => {
    const objectsBefore = await listObjects(env.s3, env.bucket, keyPrefix);
    tree.proxy.resetStats();
    const job = await runImport();
    expect(job.state).toBe('succeeded');
    expect(job.result).toMatchObject({ files: files.length, imported: 0, skipped: files.length, failed: 0, bytesImported: 0 });
    expect(writes()).toBe(0);
    expect(await listObjects(env.s3, env.bucket, keyPrefix)).toEqual(objectsBefore);
    expect(await documentsOf(env, keyPrefix)).toHaveLength(files.length);
    const items = await itemsOf(env, job.id);
    expect(new Set(items.map((item) => item.state))).toEqual(new Set(['skipped']));
  });

  it('a file whose content changed since its import fails with CONTENT_CHANGED and its object and row stay as they were', async () => {
    const sameSize = files.find((file) => file.path === 'a.txt')!;
    const otherSize = files.find((file) => file.path === '見積書/レポート.docx')!;
    await writeFile(join(tree.root, sameSize.path), Buffer.alloc(sameSize.size, 7));
    await writeFile(join(tree.root, otherSize.path), 'shorter now');
    tree.proxy.resetStats();
    const job = await runImport();
    expect(job.state).toBe('partial');
    expect(job.result).toMatchObject({ imported: 0, skipped: files.length - 2, failed: 2 });
    expect(writes()).toBe(0);
    const errors = await massImportHandler.listErrors!(env.pool, job.id, { limit: 10, offset: 0 });
    expect(errors.total).toBe(2);
    expect(errors.rows.map((row) => row.path).sort()).toEqual([sameSize.path, otherSize.path].sort());
    for (const row of errors.rows) {
      expect(row.code).toBe('CONTENT_CHANGED');
      expect(String(row.error)).toMatch(/content changed since it was imported.*left untouched/);
    }
    for (const file of [sameSize, otherSize]) {
      const key = objectKeyFor(PREFIX, TENANT, file.path);
      expect((await objectBytes(env.s3, env.bucket, key)).equals(contentOf(file))).toBe(true);
    }
    const rows = await documentsOf(env, keyPrefix);
    expect(rows.find((row) => row.source_path === sameSize.path)?.sha256).toBe(sha256(contentOf(sameSize)));
  });

  it('a dry run reports new, already imported, changed and unsafe entries and writes nothing', async () => {
    await writeFile(join(tree.root, 'new arrival.txt'), 'fresh');
    tree.proxy.resetStats();
    const job = await runImport({ dryRun: true, maxFiles: 10 });
    expect(job.state).toBe('succeeded');
    expect(job.result).toMatchObject({
      dryRun: true,
      files: files.length + 1,
      toImport: { files: 1, bytes: 5 },
      alreadyImported: { files: files.length - 2 },
      changed: { files: 2 },
      unsafe: { count: 0 },
      ceiling: { ok: false, violations: [{ limit: 'maxFiles', allowed: 10, measured: files.length + 1 }] },
    });
    expect(writes()).toBe(0);
    expect(await itemsOf(env, job.id)).toEqual([]);
    expect(await documentsOf(env, keyPrefix)).toHaveLength(files.length);
    expect(await listObjects(env.s3, env.bucket, keyPrefix)).toHaveLength(files.length);
  });

  it("S3 refusing the whole run (no such bucket) fails it at once, its SDK message kept for operators only (internal)", async () => {
    const job = await runImport({ prefix: 'refused-run' }, { S3_BUCKET: 'bucket-that-does-not-exist' });
    expect(job.state, JSON.stringify(job.lastError)).toBe('failed');
    expect(job.attempts).toBe(1);
    expect(job.lastError).toMatchObject({ code: 'S3_NoSuchBucket', class: 'permanent', internal: true });
    expect(job.lastError!.message).toContain('bucket-that-does-not-exist');
  });
});
