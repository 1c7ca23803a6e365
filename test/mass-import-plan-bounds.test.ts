// The plan's walk is bounded by the run: it stops as soon as the tree is known to be over the files or bytes the run
// may hold (a `source` one level too high is refused after about a ceiling's worth of entries, not after walking the
// whole share), it never holds a directory larger than what is left of the limit (streamed, refused before its end),
// and a cancel during the walk ends the run at once — even while a file-system call hangs — with nothing planned.
// The walk's work is counted by a hook (names read from directories), never by the clock.
import type * as FsPromises from 'node:fs/promises';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { submitJob } from '../worker/api.js';
import { loadConfig } from '../worker/config.js';
import { massImportHandler } from '../worker/handlers/mass-import.js';
import { checkCeiling } from '../worker/imports/mass-import/ceiling.js';
import { planTree, type PlanOptions } from '../worker/imports/mass-import/import-plan.js';
import { cancelJob, requireJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { settledJob, silentLog, testWorker } from './support/in-process-worker.js';
import { makeTree } from './support/mass-import-tree.js';

// One file name whose lstat waits until the test lets it go: a file server that stopped answering mid-walk.
const hold = vi.hoisted(() => ({ name: '', reached: () => {}, release: () => {}, gate: undefined as Promise<void> | undefined }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof FsPromises>();
  const lstat = async (...args: Parameters<typeof actual.lstat>) => {
    if (hold.gate && hold.name && String(args[0]).endsWith(`/${hold.name}`)) {
      hold.reached();
      await hold.gate;
    }
    return actual.lstat(...args);
  };
  return { ...actual, lstat, default: { ...actual, lstat } };
});

const env = useTestEnvironment();
const config = loadConfig({}).massImport;
let root: string;

/** `directories` directories of `files` one-byte files each. */
async function wideTree(parent: string, directories: number, files: number): Promise<void> {
  for (let d = 0; d < directories; d += 1) {
    await mkdir(join(parent, `d${d}`), { recursive: true });
    for (let f = 0; f < files; f += 1) await writeFile(join(parent, `d${d}`, `f${String(f).padStart(4, '0')}`), 'x');
  }
}

beforeAll(async () => {
  root = await makeTree([]);
  await wideTree(join(root, 'share'), 10, 100); // 1,000 files
  await wideTree(join(root, 'one-dir'), 1, 600); // 600 files in one directory
  await mkdir(join(root, 'mixed', 'a-sub'), { recursive: true });
  for (let f = 0; f < 60; f += 1) {
    await writeFile(join(root, 'mixed', `f${String(f).padStart(4, '0')}`), 'x');
    await writeFile(join(root, 'mixed', 'a-sub', `f${String(f).padStart(4, '0')}`), 'x');
  }
  // 10,100 customer folders, 50 of them with two files: 100 files, far more (empty) subdirectories than files.
  const customers = join(root, 'customers');
  for (let c = 0; c < 10_100; c += 1) {
    const folder = join(customers, `c${String(c).padStart(6, '0')}`);
    await mkdir(folder, { recursive: true });
    if (c % 202 === 0) {
      await writeFile(join(folder, 'a.pdf'), 'x');
      await writeFile(join(folder, 'b.pdf'), 'y');
    }
  }
});
afterAll(async () => {
  hold.release();
  if (root) await rm(root, { recursive: true, force: true });
});

function plan(source: string, stopAbove: PlanOptions['stopAbove'], extra: Partial<PlanOptions> = {}) {
  let listed = 0;
  const planned = planTree({
    realRoot: root,
    sourceDir: join(root, source),
    prefix: 'bounds',
    tenant: 'acme',
    stopAbove,
    onListed: () => (listed += 1),
    ...extra,
  });
  return { planned, listed: () => listed };
}

describe('the plan walk stops at the ceiling', () => {
  it('a tree over maxFiles is refused after walking about the ceiling, with "more than" the limit', async () => {
    const { planned, listed } = plan('share', { files: 150, totalBytes: 1e12 });
    const result = await planned;
    // 10 names of the share, 100 of d0, then d1 is refused at the 51st name: 51 more files than the 50 left.
    expect(listed()).toBeGreaterThan(150);
    expect(listed()).toBeLessThanOrEqual(150 + 10 + 1);
    expect(result.measure.files).toBeLessThanOrEqual(151);
    expect(result.truncated).toBe(true);
    expect(result.items.length).toBeLessThanOrEqual(150);
    const violations = checkCeiling(config, { maxFiles: 150, maxTotalBytes: 1e12, maxFileBytes: 1e9 }, result.measure);
    expect(violations).toHaveLength(1);
    expect(violations[0]).toMatchObject({ limit: 'maxFiles', allowed: 150, lowerBound: true });
    expect(violations[0]!.message).toMatch(/^files: more than 150 \(the plan stopped walking there; directory "share\/d1" alone lists more files than were left\) > maxFiles = 150; to raise it, enqueue again with a larger "maxFiles"/);
  });

  it('a tree over maxTotalBytes stops at the file that passes it', async () => {
    const { planned, listed } = plan('share', { files: 10_000, totalBytes: 120 });
    const result = await planned;
    expect(result.measure).toMatchObject({ files: 121, totalBytes: 121, stopped: { limit: 'maxTotalBytes', above: 120 } });
    expect(listed()).toBeLessThanOrEqual(10 + 200);
    const violations = checkCeiling(config, { maxFiles: 10_000, maxTotalBytes: 120, maxFileBytes: 1e9 }, result.measure);
    expect(violations.map((violation) => violation.message)).toEqual([expect.stringMatching(/^total size: more than 120 B \(the plan stopped walking there\) > maxTotalBytes = 120 B/)]);
  });

  it('a directory larger than the files left is refused without being read to its end', async () => {
    const { planned, listed } = plan('one-dir', { files: 100, totalBytes: 1e12 });
    const result = await planned;
    // The 101st name passes the limit: the other 499 are never read (nor held).
    expect(listed()).toBe(1 + 101);
    expect(result.measure).toMatchObject({ files: 0, stopped: { limit: 'maxFiles', above: 100, directory: { path: 'one-dir/d0', alone: true } } });
    expect(result.items).toEqual([]);
    const violations = checkCeiling(config, { maxFiles: 100, maxTotalBytes: 1e12, maxFileBytes: 1e9 }, result.measure);
    expect(violations.map((violation) => violation.message)).toEqual([expect.stringContaining('directory "one-dir/d0" alone lists more files than were left')]);
  });

  it('a directory over the files left only with the files still held above it is not said to be over "alone"', async () => {
    // mixed/ holds 60 files and a-sub/ (walked first: names sort by their bytes) with 60 more: a-sub passes the 100
    // left at its 41st file, with mixed's 60 still to report.
    const { planned } = plan('mixed', { files: 100, totalBytes: 1e12 });
    const result = await planned;
    expect(result.measure.stopped).toEqual({ limit: 'maxFiles', above: 100, directory: { path: 'mixed/a-sub', alone: false } });
    const violations = checkCeiling(config, { maxFiles: 100, maxTotalBytes: 1e12, maxFileBytes: 1e9 }, result.measure);
    expect(violations[0]!.message).toContain('directory "mixed/a-sub" lists more files than were left, with those still to count in the directories above it');
    expect(violations[0]!.message).not.toContain('alone');
  });

  it('a tree within the limits is walked whole, in the same order every time', async () => {
    const first = await plan('share', { files: 1_000, totalBytes: 1_000 }).planned;
    const second = await plan('share', { files: 1_000, totalBytes: 1_000 }).planned;
    expect(first.measure).toEqual({ files: 1_000, totalBytes: 1_000, largestFile: { path: 'share/d0/f0000', size: 1 } });
    expect(first.truncated).toBe(false);
    expect(first.items.map((item) => item.relativePath)).toEqual(second.items.map((item) => item.relativePath));
    expect(first.items[100]!.relativePath).toBe('share/d1/f0000');
  });
});

describe('subdirectories are bounded apart from the files', () => {
  it('a tree of many empty subdirectories within maxFiles is planned, as a dry run measures it', { timeout: 60_000 }, async () => {
    const limits = { maxFiles: 100, maxTotalBytes: 1e12, maxFileBytes: 1e9 };
    const run = await plan('customers', { files: limits.maxFiles, totalBytes: limits.maxTotalBytes }).planned;
    expect(run.truncated).toBe(false);
    expect(run.measure).toMatchObject({ files: 100, totalBytes: 100 });
    expect(run.items).toHaveLength(100);
    expect(checkCeiling(config, limits, run.measure)).toEqual([]);
    // A dry run walks up to the hard caps: the same tree, the same verdict.
    const dry = await plan('customers', { files: config.hardCapFiles, totalBytes: config.hardCapTotalBytes }).planned;
    expect(dry.measure).toEqual(run.measure);
    expect(checkCeiling(config, limits, dry.measure)).toEqual([]);
  });

  it('more subdirectory names than the walk may hold is refused with its own code, whatever the limits', async () => {
    for (const stopAbove of [{ files: 100, totalBytes: 1e12 }, { files: config.hardCapFiles, totalBytes: config.hardCapTotalBytes }]) {
      const { planned, listed } = plan('customers', stopAbove, { maxDirectoryNames: 1_000 });
      await expect(planned).rejects.toMatchObject({
        code: 'TOO_MANY_SUBDIRECTORIES',
        errorClass: 'permanent',
        context: { directory: 'customers', cap: 1_000 },
        message: expect.stringMatching(/^the plan would hold more than 1,000 names of subdirectories at once \(directory "customers"/) as unknown,
      });
      // Refused at the 1,001st name, not read to its end.
      expect(listed()).toBe(1_001);
    }
  });
});

describe('a stop during the plan', () => {
  it("planTree ends with the signal's reason while a file-system call hangs", { timeout: 20_000 }, async () => {
    const reached = new Promise<void>((resolve) => (hold.reached = resolve));
    hold.name = 'f0042';
    hold.gate = new Promise<void>((resolve) => (hold.release = resolve));
    const controller = new AbortController();
    const { planned, listed } = plan('share', { files: 10_000, totalBytes: 1e12 }, { signal: controller.signal });
    const outcome = planned.then(() => 'planned', (error: unknown) => error);
    try {
      await reached;
      const reason = new Error('canceled by the test');
      controller.abort(reason);
      // Rejected while the call still hangs (it is let go only below).
      expect(await outcome).toBe(reason);
      expect(listed()).toBeLessThan(1_000);
    } finally {
      hold.gate = undefined;
      hold.release();
    }
  });

  it('a cancel while the walk hangs ends the run canceled at once, with no item planned', async () => {
    const worker = testWorker(env, [massImportHandler], { workerId: `plan-bounds-${process.pid}`, concurrency: 1 }, silentLog, {
      settings: { IMPORT_ROOT: root, IMPORT_ROOT_REQUIRE_MOUNT: 'false' },
    });
    const reached = new Promise<void>((resolve) => (hold.reached = resolve));
    hold.name = 'f0077';
    hold.gate = new Promise<void>((resolve) => (hold.release = resolve));
    try {
      const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: 'acme', payload: { prefix: 'plan-cancel', source: 'share' } });
      void worker.start();
      await reached;
      expect((await requireJob(env.pool, job.id)).state).toBe('running');
      expect((await cancelJob(env.pool, job.id)).pending).toBe(true);
      // Ends while the file-system call still hangs (it is let go only below): the cancel does not wait for the walk.
      const canceled = await settledJob(env.pool, job.id, 20_000);
      expect(canceled.state).toBe('canceled');
      const { rows } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM import_items WHERE job_id = $1', [job.id]);
      expect(rows[0]!.n).toBe(0);
    } finally {
      hold.gate = undefined;
      hold.release();
      await worker.stop();
    }
  });
});
