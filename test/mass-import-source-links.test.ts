// Links stay inside the run's source directory, not merely inside the import root: on a share where each tenant has
// a directory, a link in acme's directory to a file of globex's is refused like a link out of the root — in the walk,
// and on the opened descriptor at import time (the tree may change between plan and import) — while a link to a file
// of the same source still imports that file. With a real worker process and the real S3 server.
import { readFile, realpath, rename, rm, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { openImportFile } from '../worker/imports/mass-import/import-file-access.js';
import { planTree } from '../worker/imports/mass-import/import-plan.js';
import { insertPlannedItems } from '../worker/imports/mass-import/items-table.js';
import { requireJob } from '../worker/queue/operator.js';
import { ItemFailure } from '../worker/imports/mass-import/item-failure.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { useTestEnvironment } from './harness.js';
import { contentOf, documentsOf, itemsOf, listObjects, makeTree, objectBytes, waitForTerminal, type TreeFile } from './support/mass-import-tree.js';
import { spawnWorker, useSpawnedWorkers } from './support/worker-processes.js';

const env = useTestEnvironment();
const { spawned, cleanup } = useSpawnedWorkers();
const TENANT = 'acme';
const ownFile: TreeFile = { path: 'acme/real.pdf', size: 700 };
const othersFile: TreeFile = { path: 'globex/contract.pdf', size: 900 };

describe('links in a tenant directory', () => {
  it("a link to another tenant's file fails SYMLINK_OUTSIDE_ROOT with no object nor document; a link within the source imports", async () => {
    const root = await makeTree([ownFile, othersFile]);
    cleanup.push(root);
    await symlink(join(root, othersFile.path), join(root, 'acme/invoice.pdf'));
    await symlink(join(root, ownFile.path), join(root, 'acme/inside-link.pdf'));
    const prefix = 'source-links';
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix, source: 'acme' } });
    const worker = spawnWorker(env, { args: ['--exit-when-idle'], env: { IMPORT_ROOT: root, IMPORT_ROOT_REQUIRE_MOUNT: 'false', LOG_LEVEL: 'warn' } });
    spawned.push(worker);
    expect((await worker.exited).code, worker.stderr.join('\n')).toBe(0);

    const finished = await waitForTerminal(env, job.id);
    expect(finished.state, JSON.stringify(finished.lastError)).toBe('partial');
    const byPath = Object.fromEntries((await itemsOf(env, job.id)).map((item) => [item.relative_path, [item.state, item.error_code]]));
    expect(byPath).toEqual({
      'acme/inside-link.pdf': ['done', null],
      'acme/invoice.pdf': ['failed', 'SYMLINK_OUTSIDE_ROOT'],
      'acme/real.pdf': ['done', null],
    });
    const { rows } = await env.pool.query<{ error_message: string }>('SELECT error_message FROM import_items WHERE job_id = $1 AND state = $2', [job.id, 'failed']);
    expect(rows[0]!.error_message).toContain("outside the run's source directory");

    const keyPrefix = `${prefix}/${TENANT}/`;
    expect((await documentsOf(env, keyPrefix)).map((row) => row.source_path)).toEqual(['acme/inside-link.pdf', 'acme/real.pdf']);
    const objects = await listObjects(env.s3, env.bucket, keyPrefix);
    expect(objects.map((object) => object.key).sort()).toEqual([objectKeyFor(prefix, TENANT, 'acme/inside-link.pdf'), objectKeyFor(prefix, TENANT, 'acme/real.pdf')]);
    // Not a byte of globex's file reached acme's keys; the link within the source holds its target's bytes.
    for (const object of objects) expect((await objectBytes(env.s3, env.bucket, object.key)).equals(contentOf(othersFile))).toBe(false);
    expect((await objectBytes(env.s3, env.bucket, objectKeyFor(prefix, TENANT, 'acme/inside-link.pdf'))).equals(contentOf(ownFile))).toBe(true);
  });

  it("a planned file that became a link to another tenant's file is not read at import time", async () => {
    const root = await makeTree([ownFile, othersFile, { path: 'acme/later.pdf', size: 300 }]);
    cleanup.push(root);
    const tree = { realRoot: root, sourceDir: join(root, 'acme') };
    // Planned as a regular file; by the time it is imported, a link to globex's file is in its place.
    await rename(join(root, 'acme/later.pdf'), join(root, 'acme/later.old'));
    await symlink(join(root, othersFile.path), join(root, 'acme/later.pdf'));
    const refused = await openImportFile(tree, 'acme/later.pdf').then(
      async (opened) => {
        await opened.handle.close();
        return undefined;
      },
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(ItemFailure);
    expect(refused).toMatchObject({ code: 'SYMLINK_OUTSIDE_ROOT', message: expect.stringContaining("outside the run's source directory") as unknown });
    // A directory of the path replaced by a link into another tenant's directory: the descriptor says where it leads.
    await rm(join(root, 'acme'), { recursive: true });
    await symlink(join(root, 'globex'), join(root, 'acme'));
    await expect(openImportFile(tree, 'acme/contract.pdf')).rejects.toMatchObject({ code: 'SYMLINK_OUTSIDE_ROOT' });
    // The same run's own files open as before.
    const own = await openImportFile({ realRoot: root, sourceDir: join(root, 'globex') }, othersFile.path);
    try {
      expect(await own.handle.readFile()).toEqual(await readFile(join(root, othersFile.path)));
    } finally {
      await own.handle.close();
    }
  });

  it('a resumed run whose source link was repointed since its plan fails once SOURCE_CHANGED, its items untouched', async () => {
    const root = await makeTree([
      { path: 'acme/releases/r1/a.pdf', size: 200 },
      { path: 'acme/releases/r1/b.pdf', size: 300 },
      { path: 'acme/releases/r2/a.pdf', size: 400 },
    ]);
    cleanup.push(root);
    await symlink('releases/r1', join(root, 'acme/current'));
    const prefix = 'source-repointed';
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix, source: 'acme/current' } });
    // The run planned (as its first attempt does before a crash or a requeue), its source leading to r1 ...
    const realRoot = await realpath(root);
    const plan = await planTree({
      realRoot,
      sourceDir: await realpath(join(root, 'acme/current')),
      prefix,
      tenant: TENANT,
      stopAbove: { files: 100, totalBytes: 1e9 },
    });
    expect(plan.items.map((item) => item.relativePath)).toEqual(['acme/releases/r1/a.pdf', 'acme/releases/r1/b.pdf']);
    await insertPlannedItems(env.pool, job.id, plan.items);
    // ... then the operator repointed it before the run resumed.
    await unlink(join(root, 'acme/current'));
    await symlink('releases/r2', join(root, 'acme/current'));

    const worker = spawnWorker(env, { args: ['--exit-when-idle'], env: { IMPORT_ROOT: root, IMPORT_ROOT_REQUIRE_MOUNT: 'false', LOG_LEVEL: 'warn' } });
    spawned.push(worker);
    expect((await worker.exited).code, worker.stderr.join('\n')).toBe(0);
    const finished = await waitForTerminal(env, job.id);
    expect(finished.state, JSON.stringify(finished.lastError)).toBe('failed');
    expect((await requireJob(env.pool, job.id)).attempts).toBe(1);
    expect(finished.lastError).toMatchObject({
      code: 'SOURCE_CHANGED',
      class: 'permanent',
      context: { source: 'acme/current', now: 'acme/releases/r2', planned: 'acme/releases/r1' },
    });
    expect(finished.lastError?.message).toMatch(/^source "acme\/current" now leads to "acme\/releases\/r2", but this run planned the files under "acme\/releases\/r1"/);
    // No item was failed as a link out of the source (none is a link), none imported from elsewhere.
    expect((await itemsOf(env, job.id)).map((item) => [item.relative_path, item.state, item.error_code])).toEqual([
      ['acme/releases/r1/a.pdf', 'pending', null],
      ['acme/releases/r1/b.pdf', 'pending', null],
    ]);
    expect(await documentsOf(env, `${prefix}/${TENANT}/`)).toEqual([]);
  });
});
