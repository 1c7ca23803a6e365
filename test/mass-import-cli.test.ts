// The operator's view of mass imports, through the real CLI: `bulk-import local` (the README's main command) imports
// its sample tree and, run again, imports nothing and says so; `items` and `show` list a run's files and failures.
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { useTestEnvironment } from './harness.js';
import { makeTree, waitForTerminal } from './support/mass-import-tree.js';
import { CLI_ENTRY, spawnWorker, useSpawnedWorkers } from './support/worker-processes.js';

const run = promisify(execFile);
const env = useTestEnvironment();
const { spawned, cleanup } = useSpawnedWorkers();

const baseEnv = () => ({ PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });

async function cli(args: string[], extraEnv: Record<string, string> = {}): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [CLI_ENTRY, ...args], {
      env: { ...baseEnv(), ...extraEnv },
      timeout: 90_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    return { stdout, stderr, code: 0 };
  } catch (error) {
    const failed = error as { stdout: string; stderr: string; code: number };
    return { stdout: failed.stdout, stderr: failed.stderr, code: failed.code };
  }
}

describe('bulk-import local', () => {
  it('imports the generated sample tree with a summary, and a second run imports nothing and says so', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'bulk-import-local-'));
    await chmod(stateDir, 0o755); // the embedded Postgres runs as another user when the tests run as root
    cleanup.push(stateDir);
    const first = await cli(['local', '--state-dir', stateDir, '--sample-files', '40']);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain('Generated the sample tree');
    expect(first.stdout).toMatch(/Job \d+ succeeded in/);
    expect(first.stdout).toContain('40 found: 40 imported, 0 already imported (same content), 0 failed');
    expect(first.stdout).toContain('documents  40 rows under sample/local/');
    expect(first.stdout).toContain('bucket     40 objects under sample/local/  (rows = objects)');
    expect(first.stdout).toMatch(/speed +\d+\.\d MB\/s uploaded/);

    const second = await cli(['local', '--state-dir', stateDir, '--sample-files', '40', '--json']);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toContain('Using the sample tree');
    const summary = JSON.parse(second.stdout) as Record<string, unknown>;
    expect(summary).toMatchObject({ state: 'succeeded', files: 40, imported: 0, skipped: 40, failed: 0, bytesImported: 0, documentRows: 40, bucketObjects: 40 });
    const human = await cli(['local', '--state-dir', stateDir, '--sample-files', '40']);
    expect(human.stdout).toContain('Nothing new to import: all 40 files were already imported with the same content');
    // Three whole runs, each starting its own Postgres, S3 server and worker: a budget for a busy 2-core machine,
    // not a guess at when something happens (each step above waits for its process to exit).
  }, 300_000);

  it('stops with a clear error when the embedded S3 server dies, instead of waiting out an "outage"', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'bulk-import-local-'));
    await chmod(stateDir, 0o755);
    cleanup.push(stateDir);
    const tree = await mkdtemp(join(tmpdir(), 'bulk-import-long-name-'));
    await chmod(tree, 0o755);
    cleanup.push(tree);
    // A valid file name (250 bytes, under the disk's 255) that s3rver cannot keep as `<name>._S3rver_object`.
    await writeFile(join(tree, `${'L'.repeat(246)}.txt`), 'long name');
    const result = await cli(['local', tree, '--state-dir', stateDir]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('bulk-import: the embedded S3 server stopped (exit code');
    expect(result.stderr).toContain('a file name longer than about 240 bytes is one it cannot store');
  }, 120_000);

  it('another directory is another run: its worker leaves the unfinished run of the first alone, which resumes later', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'bulk-import-local-'));
    await chmod(stateDir, 0o755);
    cleanup.push(stateDir);
    // Real paths: what the command names a directory by (a link to it is the same directory).
    const first = await realpath(await makeTree([{ path: 'a.txt', size: 100 }, { path: 'b.txt', size: 200 }], 'first'));
    const second = await realpath(await makeTree([{ path: 'g1.txt', size: 300 }, { path: 'g2.txt', size: 400 }], 'second'));
    cleanup.push(first, second);
    // Last in plan order, a name the embedded S3 server cannot store: it stops there, and so does the first run, its
    // job back in the queue with that file pending (an interrupted run, by an event rather than a timed Ctrl-C).
    const stopper = join(first, `z${'L'.repeat(245)}.txt`);
    await writeFile(stopper, 'stops the S3 server');
    const interrupted = await cli(['local', first, '--state-dir', stateDir, '--concurrency', '1']);
    expect(interrupted.code, interrupted.stderr).toBe(1);
    expect(interrupted.stderr).toContain('the embedded S3 server stopped');
    const firstJob = /Enqueued job (\d+)/.exec(interrupted.stdout)?.[1];
    expect(firstJob, interrupted.stdout).toBeDefined();

    const other = await cli(['local', second, '--state-dir', stateDir, '--json']);
    expect(other.code, other.stderr).toBe(0);
    expect(other.stderr).not.toContain('Resuming');
    expect(other.stderr).toMatch(new RegExp(`Job ${firstJob} \\((queued|running)\\), a mass-import of `));
    expect(other.stderr).toContain(`, a mass-import of ${first}, is unfinished in this state dir`);
    expect(other.stderr).toContain(`\`bulk-import local ${first}\` (its directory) resumes it`);
    const otherSummary = JSON.parse(other.stdout) as Record<string, unknown>;
    expect(otherSummary.jobId).not.toBe(Number(firstJob));
    expect(otherSummary).toMatchObject({ state: 'succeeded', source: second, files: 2, imported: 2, failed: 0, documentRows: 4, bucketObjects: 4 });

    await rm(stopper);
    const resumed = await cli(['local', first, '--state-dir', stateDir, '--json']);
    expect(resumed.stderr).toContain(`Resuming job ${firstJob} (`);
    expect(resumed.stderr).not.toContain('is unfinished in this state dir');
    const resumedSummary = JSON.parse(resumed.stdout) as { failedItems: Array<{ code: string }> } & Record<string, unknown>;
    // Its two files were imported before it stopped; the one that stopped it is gone since.
    expect(resumedSummary).toMatchObject({ jobId: Number(firstJob), state: 'partial', source: first, files: 3, imported: 2, failed: 1 });
    expect(resumedSummary.failedItems.map((item) => item.code)).toEqual(['FILE_VANISHED']);
    expect(resumed.code).toBe(2);
  }, 300_000);
});

describe('items and show', () => {
  it('list a run’s files with their state, and its failed items with the reason', async () => {
    const root = await makeTree([
      { path: 'fine.txt', size: 10 },
      { path: 'also fine.pdf', size: 20 },
    ]);
    cleanup.push(root);
    await symlink('/etc/hostname', join(root, 'escape'));
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: 'cli', payload: {} });
    const worker = spawnWorker(env, { args: ['--exit-when-idle'], env: { IMPORT_ROOT: root, IMPORT_ROOT_REQUIRE_MOUNT: 'false', LOG_LEVEL: 'warn' } });
    spawned.push(worker);
    await worker.exited;
    expect((await waitForTerminal(env, job.id)).state).toBe('partial');

    const all = await cli(['items', String(job.id), '--json'], env.processEnv);
    expect(all.code, all.stderr).toBe(0);
    const listed = JSON.parse(all.stdout) as { total: number; items: Array<{ relativePath: string; state: string; errorCode: string | null }> };
    expect(listed.total).toBe(3);
    expect(listed.items.map((item) => [item.relativePath, item.state])).toEqual([
      ['also fine.pdf', 'done'],
      ['escape', 'failed'],
      ['fine.txt', 'done'],
    ]);

    const failed = await cli(['items', String(job.id), '--state', 'failed'], env.processEnv);
    expect(failed.code, failed.stderr).toBe(0);
    expect(failed.stdout).toMatch(/^#\s+STATE\s+SIZE\s+PATH\s+SHA256\s+ERROR/);
    expect(failed.stdout).toMatch(/escape .*SYMLINK_OUTSIDE_ROOT: symbolic link to \/etc\/hostname, outside the import root/);
    expect(failed.stdout).not.toContain('fine.txt');

    const show = await cli(['show', String(job.id), '--json'], env.processEnv);
    expect(show.code, show.stderr).toBe(0);
    const shown = JSON.parse(show.stdout) as { progress: Record<string, unknown>; errors: { total: number; rows: Array<Record<string, unknown>> } };
    expect(shown.progress).toMatchObject({ done: 3, total: 3, filesImported: 2, filesFailed: 1, bytesTotal: 30, bytesDone: 30, etaSeconds: 0 });
    expect(shown.errors.total).toBe(1);
    expect(shown.errors.rows[0]).toMatchObject({ path: 'escape', code: 'SYMLINK_OUTSIDE_ROOT' });

    const wrongKind = await cli(['items', '999999'], env.processEnv);
    expect(wrongKind.code).not.toBe(0);
    expect(wrongKind.stderr).toContain('job 999999 does not exist');
  });
});
