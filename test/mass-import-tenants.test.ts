// Tenants never share keys or documents: runs whose (prefix, tenant, path) used to give the same key land on two
// keys; a document of another tenant at a run's key is a conflict — never a skip, never overwritten — in the
// look-up before the upload, in the dry run, and in the commit of an upload that raced with it.
import { rm } from 'node:fs/promises';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { ItemOutcomeBatcher } from '../worker/imports/mass-import/item-outcome-batcher.js';
import { insertPlannedItems } from '../worker/imports/mass-import/items-table.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { claimJobs } from '../worker/queue/claim.js';
import { assertLeaseHeld } from '../worker/queue/lease.js';
import { useTestEnvironment } from './harness.js';
import { contentOf, documentsOf, itemsOf, listObjects, makeTree, objectBytes, sha256, waitForTerminal, type TreeFile } from './support/mass-import-tree.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const files: TreeFile[] = [
  { path: 'f', size: 300 },
  { path: 'x/f', size: 400 },
  { path: 'shared/report.pdf', size: 2_000 },
];
let root: string;
const spawned: WorkerProcess[] = [];
beforeAll(async () => {
  root = await makeTree(files);
});
afterAll(async () => {
  await killAll(spawned);
  if (root) await rm(root, { recursive: true, force: true });
});

const file = (path: string) => files.find((candidate) => candidate.path === path)!;

/** Enqueues one run and lets a real worker process run it to its end. */
async function runImport(tenantId: string, payload: Record<string, unknown>) {
  const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId, payload });
  const worker = spawnWorker(env, { args: ['--exit-when-idle'], env: { IMPORT_ROOT: root, IMPORT_ROOT_REQUIRE_MOUNT: 'false', LOG_LEVEL: 'warn' } });
  spawned.push(worker);
  expect((await worker.exited).code, worker.stderr.join('\n')).toBe(0);
  return waitForTerminal(env, job.id);
}

/** A document row written outside this importer (by the backend, or under an earlier key layout). */
async function insertForeignDocument(tenant: string, key: string, bytes: Buffer): Promise<number> {
  await env.s3.send(new PutObjectCommand({ Bucket: env.bucket, Key: key, Body: bytes }));
  const { rows } = await env.pool.query<{ id: number }>(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
     VALUES ($1, 'from the backend', $2, $3, 'application/pdf', $4, $5) RETURNING id`,
    [tenant, sha256(bytes), bytes.length, env.bucket, key],
  );
  return rows[0]!.id;
}

describe('mass-import keys and tenants', () => {
  it('prefix imports/acme + tenant x and prefix imports + tenant acme import the same path shape to different keys', async () => {
    // Formerly both gave imports/acme/x/f: the second run found the first tenant's row and failed (or skipped) on it.
    const first = await runImport('x', { prefix: 'imports/acme' });
    expect(first.state, JSON.stringify(first.lastError)).toBe('succeeded');
    const second = await runImport('acme', { prefix: 'imports', source: 'x' });
    expect(second.state, JSON.stringify(await itemsOf(env, second.id))).toBe('succeeded');
    expect(second.result).toMatchObject({ files: 1, imported: 1, skipped: 0, failed: 0, keyPrefix: 'imports/acme/' });
    expect(first.result).toMatchObject({ files: 3, imported: 3, keyPrefix: 'imports/_acme/x/' });

    const ofX = await documentsOf(env, 'imports/_acme/x/');
    const ofAcme = await documentsOf(env, 'imports/acme/');
    expect(ofX.map((row) => [row.source_path, row.tenant_id])).toEqual([['f', 'x'], ['shared/report.pdf', 'x'], ['x/f', 'x']]);
    expect(ofAcme.map((row) => [row.source_path, row.object_key, row.tenant_id])).toEqual([['x/f', 'imports/acme/x/f', 'acme']]);
    expect(await listObjects(env.s3, env.bucket, 'imports/')).toHaveLength(4);
    for (const [prefix, tenant, path] of [['imports/acme', 'x', 'f'], ['imports/acme', 'x', 'x/f'], ['imports', 'acme', 'x/f']] as const) {
      expect((await objectBytes(env.s3, env.bucket, objectKeyFor(prefix, tenant, path))).equals(contentOf(file(path)))).toBe(true);
    }
  });

  it("another tenant's document at a run's key is a conflict: not skipped even with the same bytes, not overwritten", async () => {
    const ours = file('shared/report.pdf');
    const key = objectKeyFor('legacy', 'acme', ours.path);
    // The row claims exactly our file's bytes, so a look-up without the tenant would call the file "already imported".
    const theirBytes = Buffer.from('globex keeps its own object here');
    const foreignId = await insertForeignDocument('globex', key, theirBytes);
    await env.pool.query('UPDATE documents SET sha256 = $1, size_bytes = $2 WHERE id = $3', [sha256(contentOf(ours)), ours.size, foreignId]);

    const rehearsal = await runImport('acme', { prefix: 'legacy', source: 'shared', dryRun: true });
    expect(rehearsal.result).toMatchObject({
      files: 1,
      toImport: { files: 0 },
      alreadyImported: { files: 0 },
      otherTenant: { files: 1, sample: [{ path: ours.path, key }] },
    });

    const job = await runImport('acme', { prefix: 'legacy', source: 'shared' });
    expect(job.state).toBe('partial');
    expect(job.result).toMatchObject({ files: 1, imported: 0, skipped: 0, failed: 1, failedTransient: 0 });
    const [item] = await itemsOf(env, job.id);
    expect(item).toMatchObject({ state: 'failed', error_code: 'KEY_OF_OTHER_TENANT' });
    expect((item as unknown as { error_message: string }).error_message).toContain(`already belongs to document ${foreignId} of another tenant`);
    expect(await objectBytes(env.s3, env.bucket, key)).toEqual(theirBytes);
    expect(await documentsOf(env, 'legacy/')).toMatchObject([{ tenant_id: 'globex', source_path: 'from the backend' }]);
  });

  it("an upload whose commit finds another tenant's row (committed meanwhile) fails as a conflict, never as a skip", async () => {
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: 'acme', payload: { prefix: 'raced' } });
    const [claimed] = await claimJobs(env.pool, { workerId: 'tenants-test', limit: 1, leaseMs: 60_000, kinds: ['mass-import'] });
    expect(claimed?.id).toBe(job.id);
    const lease = { jobId: job.id, owner: 'tenants-test', attempt: claimed!.attempt };
    const ours = file('f');
    const key = objectKeyFor('raced', 'acme', ours.path);
    await insertPlannedItems(env.pool, job.id, [{ itemNo: 0, relativePath: ours.path, size: ours.size, objectKey: key }]);
    // Between this run's look-up (nothing there) and its commit, a row of another tenant with the same bytes appears.
    const foreignId = await insertForeignDocument('globex', key, contentOf(ours));
    const batcher = new ItemOutcomeBatcher({ pool: env.pool, jobId: job.id, tenant: 'acme', bucket: env.bucket, assertLeaseHeld: (db) => assertLeaseHeld(db, lease) });
    const result = await batcher.record({
      kind: 'uploaded',
      item: { itemNo: 0, relativePath: ours.path, size: ours.size, objectKey: key, tries: 0 },
      tries: 1,
      sha256: sha256(contentOf(ours)),
      size: ours.size,
      contentType: 'application/octet-stream',
    });
    expect(result).toMatchObject({ outcome: 'failed', errorClass: 'permanent', code: 'KEY_OF_OTHER_TENANT' });
    const { rows } = await env.pool.query('SELECT state, document_id, error_code, error_message FROM import_items WHERE job_id = $1', [job.id]);
    expect(rows[0]).toMatchObject({ state: 'failed', document_id: null, error_code: 'KEY_OF_OTHER_TENANT' });
    expect(rows[0].error_message).toContain(`document ${foreignId} of another tenant`);
    expect(rows[0].error_message).toContain('bulk-import audit');
    expect(await documentsOf(env, 'raced/')).toMatchObject([{ tenant_id: 'globex' }]);
  });
});
