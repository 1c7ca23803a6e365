// Plan, then import: the walk records every entry of the source as an item (relative path, size, object key) so the
// run has a total and the ceiling is checked before anything is written. Unsafe entries become failed items.
// The walk stops as soon as the tree is known to be over the files or bytes it may hold (a `source` one level too
// high is refused after about a ceiling's worth of entries, not after walking years of archives), and as soon as the
// run is stopped (cancel, lost lease, shutdown): its signal is checked between entries, and a file-system call that
// hangs does not hold it up.
import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import { PermanentJobError } from '../../queue/errors.js';
import type { TreeMeasure } from './ceiling.js';
import { DirectoryOverBudgetError, isInside, TooManySubdirectoriesError, walkImportTree, type WalkEntry } from './directory-walk.js';
import type { PlannedItem } from './items-table.js';
import { keyByteLength, MAX_KEY_BYTES, objectKeyFor } from '../object-key.js';
import { inSpan } from '../../tracing/spans.js';

export interface TreePlan {
  /** Every entry in walk order, up to the files limit of the walk (PlanOptions.stopAbove). */
  items: PlannedItem[];
  /** What the walk saw; `measure.stopped` when it stopped early (its figures are then lower bounds). */
  measure: TreeMeasure;
  /** Entries planned as failed (unsafe, unreadable, key too long). */
  unsafe: number;
  /** The walk stopped before the end of the tree: it holds more than the limits the walk was given. */
  truncated: boolean;
}

/** Normalises a payload's `source`: a relative path below the import root, `.` for the root itself. */
export function normaliseSource(source: string): string | undefined {
  if (source.includes('\0') || isAbsolute(source)) return undefined;
  const normalised = posix.normalize(source.replace(/\/+$/, '') || '.');
  if (normalised === '..' || normalised.startsWith('../')) return undefined;
  return normalised;
}

/**
 * The real path of the source directory; refuses a source that is missing or leaves the root through a link. The
 * messages name the source as the submitter gave it, never a path of the worker's file system (the mount's own path,
 * or where a link leads outside it): they are the run's error, which its tenant reads.
 */
export async function resolveSourceDirectory(realRoot: string, source: string): Promise<string> {
  const requested = source === '.' ? realRoot : join(realRoot, source);
  let real: string;
  try {
    real = await realpath(requested);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new PermanentJobError(`source "${source}" does not exist under the import root (${code})`, 'SOURCE_NOT_FOUND', { source, errno: code });
  }
  if (!isInside(realRoot, real)) {
    throw new PermanentJobError(`source "${source}" leads outside the import root through a symbolic link; refused`, 'SOURCE_OUTSIDE_ROOT', { source });
  }
  if (!(await stat(real)).isDirectory()) {
    throw new PermanentJobError(`source "${source}" is not a directory`, 'SOURCE_NOT_DIRECTORY', { source });
  }
  return real;
}

/** The source's real path relative to the root (`` for the root itself), as the walk prefixes its entries. */
export function sourceRelativePath(realRoot: string, sourceDir: string): string {
  return sourceDir === realRoot ? '' : sourceDir.slice(realRoot.length + 1);
}

function insideRelative(directory: string, path: string): boolean {
  return directory === '' || path === directory || path.startsWith(`${directory}/`);
}

/** The deepest directory holding both paths (relative to the root, `` for the root). */
function commonDirectory(first: string, last: string): string {
  const a = posix.dirname(first).split('/');
  const b = posix.dirname(last).split('/');
  const common: string[] = [];
  for (let i = 0; i < Math.min(a.length, b.length) && a[i] === b[i] && a[i] !== '.'; i += 1) common.push(a[i]!);
  return common.join('/');
}

/**
 * A resumed run reads the files its plan holds, below the real path the source had when it was planned; files are
 * checked against the source's real path of this attempt (import-file-access.ts). A source that is a link repointed
 * since (acme/current → releases/r1, now → releases/r2) would fail every pending item SYMLINK_OUTSIDE_ROOT, though
 * none is a link. The plan's items lie below the planned real path (the walk prefixes them with it): when they are
 * not below the source's real path now, the run fails once, SOURCE_CHANGED, naming both (relative to the root).
 */
export function checkPlannedSource(
  source: string,
  realRoot: string,
  sourceDir: string,
  planned: { first: string; last: string },
): void {
  const now = sourceRelativePath(realRoot, sourceDir);
  if (insideRelative(now, planned.first) && insideRelative(now, planned.last)) return;
  const plannedUnder = commonDirectory(planned.first, planned.last);
  throw new PermanentJobError(
    `source "${source}" now leads to "${now || '.'}", but this run planned the files under "${plannedUnder || '.'}": the source ` +
      'changed since the plan (a link repointed), and the plan is not read from another directory. Nothing more is imported ' +
      'by this run; enqueue a new run of the source to import what it leads to now (files already imported with the same ' +
      'content are skipped)',
    'SOURCE_CHANGED',
    { source, now: now || '.', planned: plannedUnder || '.' },
  );
}

export interface PlanOptions {
  realRoot: string;
  /** Real path of the run's source directory (resolveSourceDirectory). */
  sourceDir: string;
  prefix: string;
  tenant: string;
  /**
   * The walk stops as soon as the tree holds more files (entries) or bytes than these: the ceiling's verdict is then
   * certain. At most `files` items are kept.
   */
  stopAbove: { files: number; totalBytes: number };
  /** The run's signal: the walk ends with its reason. */
  signal?: AbortSignal | undefined;
  /** Called every so often during a long walk, with the entries seen so far. */
  onProgress?: (entriesSeen: number) => void;
  /** Called for every name the walk reads from a directory (tests count the walk's work). */
  onListed?: () => void;
  /** The walk's cap on subdirectory names held at once (directory-walk.ts MAX_DIRECTORY_NAMES_HELD unless given: tests). */
  maxDirectoryNames?: number | undefined;
}

export const TOO_MANY_SUBDIRECTORIES_CODE = 'TOO_MANY_SUBDIRECTORIES';

/**
 * The walk would hold more subdirectory names at once than its memory cap: not a ceiling of the run (no payload
 * raises it), and the same verdict for a dry run and a real run. Nothing was written.
 */
function tooManySubdirectories(error: TooManySubdirectoriesError): PermanentJobError {
  return new PermanentJobError(
    `the plan would hold more than ${error.cap.toLocaleString('en-US')} names of subdirectories at once (directory "${error.relativePath}" ` +
      'and the directories above it); the walk holds them in memory to keep its order, so such a tree is refused whatever ' +
      'the run\'s limits, and nothing was written. Import it in parts: one run per subdirectory as its "source"',
    TOO_MANY_SUBDIRECTORIES_CODE,
    { directory: error.relativePath, cap: error.cap },
  );
}

/** Walks the tree in a `mass-import plan` span, with the files, bytes and unsafe entries it found. */
export function planTree(options: PlanOptions): Promise<TreePlan> {
  return inSpan('mass-import plan', { tenant: options.tenant }, async (span) => {
    const plan = await walkPlan(options);
    span.setAttributes({ files: plan.measure.files, bytes: plan.measure.totalBytes, 'files.unsafe': plan.unsafe, truncated: plan.truncated });
    return plan;
  });
}

/**
 * The next entry of the walk, or the run's stop: a file-system call that hangs (an NFS server away) holds the walk,
 * not the run. The walk itself then ends at its next check of the signal (its directory closed).
 */
async function nextEntry(walk: AsyncGenerator<WalkEntry>, signal: AbortSignal | undefined): Promise<IteratorResult<WalkEntry>> {
  if (!signal) return walk.next();
  if (signal.aborted) throw signal.reason;
  let onAbort: (() => void) | undefined;
  const stopped = new Promise<never>((_resolve, reject) => {
    onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([walk.next(), stopped]);
  } finally {
    signal.removeEventListener('abort', onAbort!);
  }
}

async function walkPlan(options: PlanOptions): Promise<TreePlan> {
  const items: PlannedItem[] = [];
  const measure: TreeMeasure = { files: 0, totalBytes: 0, largestFile: null };
  const { stopAbove, signal } = options;
  let unsafe = 0;
  const walk = walkImportTree(options.realRoot, options.sourceDir, {
    signal,
    budget: () => stopAbove.files - measure.files,
    onListed: options.onListed,
    maxDirectoryNames: options.maxDirectoryNames,
  });
  try {
    for (;;) {
      let next: IteratorResult<WalkEntry>;
      try {
        next = await nextEntry(walk, signal);
      } catch (error) {
        if (error instanceof TooManySubdirectoriesError) throw tooManySubdirectories(error);
        if (!(error instanceof DirectoryOverBudgetError)) throw error;
        // The directory's files (with those still to report above it) pass the files left to the limit: the tree is over it.
        measure.stopped = { limit: 'maxFiles', above: stopAbove.files, directory: { path: error.relativePath, alone: error.alone } };
        break;
      }
      if (next.done) break;
      const entry = next.value;
      const itemNo = measure.files;
      measure.files += 1;
      if (entry.kind === 'file') {
        measure.totalBytes += entry.size;
        if (!measure.largestFile || entry.size > measure.largestFile.size) {
          measure.largestFile = { path: entry.relativePath, size: entry.size };
        }
      } else {
        unsafe += 1;
      }
      if (measure.files % 5_000 === 0) options.onProgress?.(measure.files);
      // Over a limit: the verdict is certain, the rest of the tree is not walked (nor kept).
      if (measure.files > stopAbove.files) {
        measure.stopped = { limit: 'maxFiles', above: stopAbove.files };
        break;
      }
      if (measure.totalBytes > stopAbove.totalBytes) {
        measure.stopped = { limit: 'maxTotalBytes', above: stopAbove.totalBytes };
        break;
      }
      items.push(planItem(options, itemNo, entry));
      if (items[items.length - 1]!.failure?.code === 'KEY_TOO_LONG') unsafe += 1;
    }
  } finally {
    // Ends the walk. After a stop while a file-system call hangs, this waits (detached) for that call: the walk then
    // goes no further (it checks the signal before it reads or examines more), and its directory handle is closed.
    void walk.return(undefined).catch(() => {});
  }
  if (signal?.aborted) throw signal.reason;
  return { items, measure, unsafe, truncated: measure.stopped !== undefined };
}

function planItem(options: PlanOptions, itemNo: number, entry: WalkEntry): PlannedItem {
  if (entry.kind === 'unsafe') {
    return { itemNo, relativePath: entry.relativePath, size: entry.size, objectKey: null, failure: { code: entry.code, message: entry.reason } };
  }
  const objectKey = objectKeyFor(options.prefix, options.tenant, entry.relativePath);
  if (keyByteLength(objectKey) > MAX_KEY_BYTES) {
    return {
      itemNo,
      relativePath: entry.relativePath,
      size: entry.size,
      objectKey: null,
      failure: { code: 'KEY_TOO_LONG', message: `its object key would be ${keyByteLength(objectKey)} bytes; S3 allows ${MAX_KEY_BYTES}` },
    };
  }
  return { itemNo, relativePath: entry.relativePath, size: entry.size, objectKey };
}
