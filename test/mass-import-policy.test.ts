// The operator policy, enforced by real worker processes: the ceiling (OQ-IMP-002) refuses a tree before anything
// is written, a missing campaign mount (OQ-IMP-001) fails the run at once, and a hostile tree's unsafe entries
// become failed items while the rest is imported.
import { execFileSync } from 'node:child_process';
import { chmod, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { lastErrorView, resultView } from '../worker/http/views.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { useTestEnvironment } from './harness.js';
import { contentOf, documentsOf, itemsOf, listObjects, makeTree, objectBytes, waitForTerminal } from './support/mass-import-tree.js';
import { spawnWorker, useSpawnedWorkers } from './support/worker-processes.js';

const env = useTestEnvironment();
const { spawned, cleanup } = useSpawnedWorkers();

async function runWorker(extraEnv: Record<string, string>, user?: { uid: number; gid: number }): Promise<void> {
  const worker = spawnWorker(env, {
    args: ['--exit-when-idle'],
    env: { IMPORT_ROOT_REQUIRE_MOUNT: 'false', LOG_LEVEL: 'warn', HEALTH_HEARTBEAT_FILE: `/tmp/mass-import-policy-${process.pid}-${spawned.length}.heartbeat`, ...extraEnv },
    ...(user ?? {}),
  });
  spawned.push(worker);
  const exit = await worker.exited;
  expect(exit.code, worker.stderr.join('\n')).toBe(0);
}

const enqueue = async (payload: Record<string, unknown>) =>
  (await submitJob(env.pool, { kind: 'mass-import', tenantId: 'policy', payload })).job;

describe('ceiling (OQ-IMP-002)', () => {
  it('a tree over the ceiling fails before anything is written, naming each limit, the measured value and how to raise it', async () => {
    // d0 holds 6 files (the big one among them), d1 another 6: the walk stops in d1, whose listing passes the 4 files
    // left to maxFiles — the tree is refused without being measured to its end (it could be years of archives).
    const files = Array.from({ length: 12 }, (_, i) => ({ path: `d${i % 2}/f${i}.txt`, size: i === 4 ? 2_000 : 100 }));
    const root = await makeTree(files);
    cleanup.push(root);
    const overFiles = await enqueue({ prefix: 'ceiling', maxFiles: 10 });
    const overCap = await enqueue({ prefix: 'hard-cap', maxFiles: 101 });
    await runWorker({ IMPORT_ROOT: root, MASS_IMPORT_MAX_FILE_BYTES: '1000', MASS_IMPORT_HARD_CAP_FILES: '100' });

    const failed = await waitForTerminal(env, overFiles.id);
    expect(failed.state).toBe('failed');
    expect(failed.attempts).toBe(1);
    expect(failed.lastError).toMatchObject({ code: 'CEILING_EXCEEDED', class: 'permanent' });
    const message = failed.lastError!.message;
    expect(message).toContain('nothing was written');
    expect(message).toContain('files: more than 10 (the plan stopped walking there; directory "d1" alone lists more files than were left) > maxFiles = 10');
    expect(message).toContain('enqueue again with a larger "maxFiles" (up to the hard cap 100)');
    expect(message).toContain('largest file seen (d0/f4.txt): at least 2.0 KiB (2,000 bytes) > maxFileBytes = 1000 B');
    expect(message).toContain('MASS_IMPORT_MAX_FILE_BYTES');
    expect(failed.lastError!.context).toMatchObject({
      violations: [{ limit: 'maxFiles', measured: 11, lowerBound: true }, { limit: 'maxFileBytes', measured: 2000, lowerBound: true }],
    });
    expect(await itemsOf(env, overFiles.id)).toEqual([]);
    expect(await listObjects(env.s3, env.bucket, 'ceiling/')).toEqual([]);
    expect(await documentsOf(env, 'ceiling/')).toEqual([]);

    const capped = await waitForTerminal(env, overCap.id);
    expect(capped.state).toBe('failed');
    expect(capped.lastError).toMatchObject({ code: 'LIMIT_ABOVE_HARD_CAP' });
    expect(capped.lastError!.message).toContain('MASS_IMPORT_HARD_CAP_FILES');
    expect(await listObjects(env.s3, env.bucket, 'hard-cap/')).toEqual([]);
  });
});

describe('campaign-only mount (OQ-IMP-001)', () => {
  it('a missing import root fails the run at once with the campaign message; so does a plain directory when a mount is required', async () => {
    const missing = await enqueue({ prefix: 'no-mount' });
    await runWorker({ IMPORT_ROOT: `/nonexistent-campaign-${process.pid}` });
    const job = await waitForTerminal(env, missing.id);
    expect(job.state).toBe('failed');
    expect(job.attempts).toBe(1);
    expect(job.lastError).toMatchObject({ code: 'CAMPAIGN_MOUNT_MISSING', class: 'permanent' });
    expect(job.lastError!.message).toMatch(/^no campaign mount is present at \/nonexistent-campaign-\d+ \(IMPORT_ROOT\): the directory does not exist/);
    expect(job.lastError!.message).toContain('docs/DEPLOYMENT.md §6.4');
    // The worker's file system is the operators' business: the run's tenant reads the code, not the path.
    expect(lastErrorView(job.lastError, false)).toMatchObject({ code: 'CAMPAIGN_MOUNT_MISSING', internal: true });
    expect(JSON.stringify(lastErrorView(job.lastError, false))).not.toContain('nonexistent-campaign');

    const plain = await makeTree([{ path: 'a.txt', size: 10 }]);
    cleanup.push(plain);
    const unmounted = await enqueue({ prefix: 'plain-dir' });
    await runWorker({ IMPORT_ROOT: plain, IMPORT_ROOT_REQUIRE_MOUNT: 'true' });
    const refused = await waitForTerminal(env, unmounted.id);
    expect(refused.state).toBe('failed');
    expect(refused.lastError).toMatchObject({ code: 'CAMPAIGN_MOUNT_MISSING' });
    expect(refused.lastError!.message).toContain('not a mounted file system');
    expect(await listObjects(env.s3, env.bucket, 'plain-dir/')).toEqual([]);
  });
});

describe('hostile trees', () => {
  it('links out of the root, FIFOs, unreadable files and bad names become failed items, the job ends partial, the rest is imported', async () => {
    const good = [
      { path: 'ok/one.pdf', size: 1_500 },
      { path: 'ok/two words.txt', size: 300 },
      { path: 'ünï cødé/名前.txt', size: 42 },
    ];
    const root = await makeTree(good);
    const outside = await makeTree([{ path: 'secret.txt', size: 64 }]);
    cleanup.push(root, outside);
    await symlink(join(outside, 'secret.txt'), join(root, 'escape.txt'));
    await symlink(outside, join(root, 'escape-dir'));
    await symlink(join(root, 'ok/one.pdf'), join(root, 'inside-link.pdf'));
    await symlink(join(root, 'ok'), join(root, 'dir-link'));
    await symlink(join(root, 'nowhere'), join(root, 'dangling'));
    execFileSync('mkfifo', [join(root, 'pipe')]);
    await writeFile(join(root, 'locked.txt'), 'no reading');
    await chmod(join(root, 'locked.txt'), 0o000);
    await mkdir(join(root, 'closed-dir'));
    await writeFile(join(root, 'closed-dir', 'hidden.txt'), 'x');
    await chmod(join(root, 'closed-dir'), 0o000);
    await writeFile(Buffer.from(`${root}/bad-\xff-name.txt`, 'latin1'), 'bytes');

    const { id } = await enqueue({ prefix: 'hostile' });
    // Root reads everything: run the worker as nobody so the permission bits mean something.
    const asRoot = process.getuid?.() === 0;
    await runWorker({ IMPORT_ROOT: root }, asRoot ? { uid: 65534, gid: 65534 } : undefined);

    const job = await waitForTerminal(env, id);
    expect(job.state, JSON.stringify(job.lastError)).toBe('partial');
    const items = await itemsOf(env, id);
    const byPath = Object.fromEntries(items.map((item) => [item.relative_path, [item.state, item.error_code]]));
    expect(byPath).toMatchObject({
      'escape.txt': ['failed', 'SYMLINK_OUTSIDE_ROOT'],
      'escape-dir': ['failed', 'SYMLINK_OUTSIDE_ROOT'],
      'dir-link': ['failed', 'SYMLINK_TO_DIRECTORY'],
      dangling: ['failed', 'SYMLINK_DANGLING'],
      pipe: ['failed', 'SPECIAL_FILE'],
      'locked.txt': ['failed', 'UNREADABLE'],
      'closed-dir': ['failed', 'DIRECTORY_UNREADABLE'],
      'inside-link.pdf': ['done', null],
      'ok/one.pdf': ['done', null],
      'ok/two words.txt': ['done', null],
      'ünï cødé/名前.txt': ['done', null],
    });
    expect(items.find((item) => item.relative_path.startsWith('bad-'))).toMatchObject({ state: 'failed', error_code: 'NAME_NOT_UTF8' });
    expect(items).toHaveLength(12);
    expect(job.result).toMatchObject({ files: 12, imported: 4, failed: 8 });

    const objects = await listObjects(env.s3, env.bucket, 'hostile/');
    const rows = await documentsOf(env, 'hostile/');
    expect(objects).toHaveLength(4);
    expect(rows.map((row) => row.source_path).sort()).toEqual(['inside-link.pdf', 'ok/one.pdf', 'ok/two words.txt', 'ünï cødé/名前.txt']);
    // Nothing from outside the root reached the bucket; the in-root link holds its target's bytes.
    const secret = contentOf({ path: 'secret.txt', size: 64 });
    for (const object of objects) expect((await objectBytes(env.s3, env.bucket, object.key)).equals(secret)).toBe(false);
    const linked = await objectBytes(env.s3, env.bucket, objectKeyFor('hostile', 'policy', 'inside-link.pdf'));
    expect(linked.equals(contentOf(good[0]!))).toBe(true);
  });
});

describe('the source directory', () => {
  it('missing, leading outside the root, or not a directory: the run fails naming the source, never a path of the worker', async () => {
    const root = await makeTree([{ path: 'in/a.txt', size: 10 }, { path: 'plain.txt', size: 10 }]);
    const outside = await makeTree([{ path: 'secret.txt', size: 10 }]);
    cleanup.push(root, outside);
    await symlink(outside, join(root, 'out'));
    await symlink(join(outside, 'secret.txt'), join(root, 'in', 'escape.txt'));
    const rehearsal = await enqueue({ prefix: 'src-dry', source: 'in', dryRun: true });
    const runs = {
      SOURCE_NOT_FOUND: await enqueue({ prefix: 'src-missing', source: 'missing' }),
      SOURCE_OUTSIDE_ROOT: await enqueue({ prefix: 'src-out', source: 'out' }),
      SOURCE_NOT_DIRECTORY: await enqueue({ prefix: 'src-file', source: 'plain.txt' }),
    };
    await runWorker({ IMPORT_ROOT: root });
    for (const [code, run] of Object.entries(runs)) {
      const job = await waitForTerminal(env, run.id);
      expect(job.state).toBe('failed');
      expect(job.lastError).toMatchObject({ code, class: 'permanent' });
      const shown = JSON.stringify(lastErrorView(job.lastError, false));
      expect(shown).toContain(`source \\"${(run.payload as { source: string }).source}\\"`);
      for (const path of [root, outside]) expect(shown).not.toContain(path);
    }
    expect(await listObjects(env.s3, env.bucket, 'src-')).toEqual([]);
    // A dry run's report is its result, which the tenant reads too: to it the escaping link is reported without its
    // target; operators read where it leads.
    const rehearsed = await waitForTerminal(env, rehearsal.id);
    expect(resultView(rehearsed, false)).toMatchObject({
      unsafe: { count: 1, sample: [{ path: 'in/escape.txt', code: 'SYMLINK_OUTSIDE_ROOT', reason: "a symbolic link to a file outside this run's source directory: not followed; the operators have the details" }] },
    });
    expect(JSON.stringify(resultView(rehearsed, false))).not.toContain(outside);
    expect(JSON.stringify(resultView(rehearsed, true))).toContain(outside);
  });
});
