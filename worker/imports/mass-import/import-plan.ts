// Plan, then import: the walk records every entry of the source as an item (relative path, size, object key) so the
// run has a total and the ceiling is checked before anything is written. Unsafe entries become failed items.
import { realpath, stat } from 'node:fs/promises';
import { isAbsolute, join, posix } from 'node:path';
import { PermanentJobError } from '../../queue/errors.js';
import type { TreeMeasure } from './ceiling.js';
import { isInside, walkImportTree } from './directory-walk.js';
import type { PlannedItem } from './items-table.js';
import { keyByteLength, MAX_KEY_BYTES, objectKeyFor } from '../object-key.js';
import { inSpan } from '../../tracing/spans.js';

export interface TreePlan {
  /** Every entry in walk order, up to `keepAtMost` (further entries are only measured). */
  items: PlannedItem[];
  measure: TreeMeasure;
  /** Entries planned as failed (unsafe, unreadable, key too long). */
  unsafe: number;
  /** The walk found more entries than it kept. */
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

export interface PlanOptions {
  realRoot: string;
  sourceDir: string;
  prefix: string;
  tenant: string;
  /** Entries beyond this are measured (so the ceiling message has the true figures) but not kept in memory. */
  keepAtMost: number;
  /** Called every so often during a long walk, with the entries seen so far. */
  onProgress?: (entriesSeen: number) => void;
}

/** Walks the tree in a `mass-import plan` span, with the files, bytes and unsafe entries it found. */
export function planTree(options: PlanOptions): Promise<TreePlan> {
  return inSpan('mass-import plan', { tenant: options.tenant }, async (span) => {
    const plan = await walkPlan(options);
    span.setAttributes({ files: plan.measure.files, bytes: plan.measure.totalBytes, 'files.unsafe': plan.unsafe, truncated: plan.truncated });
    return plan;
  });
}

async function walkPlan(options: PlanOptions): Promise<TreePlan> {
  const items: PlannedItem[] = [];
  const measure: TreeMeasure = { files: 0, totalBytes: 0, largestFile: null };
  let unsafe = 0;
  let truncated = false;
  for await (const entry of walkImportTree(options.realRoot, options.sourceDir)) {
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
    if (items.length >= options.keepAtMost) {
      truncated = true;
      continue;
    }
    if (entry.kind === 'unsafe') {
      items.push({ itemNo, relativePath: entry.relativePath, size: entry.size, objectKey: null, failure: { code: entry.code, message: entry.reason } });
      continue;
    }
    const objectKey = objectKeyFor(options.prefix, options.tenant, entry.relativePath);
    if (keyByteLength(objectKey) > MAX_KEY_BYTES) {
      unsafe += 1;
      items.push({
        itemNo,
        relativePath: entry.relativePath,
        size: entry.size,
        objectKey: null,
        failure: { code: 'KEY_TOO_LONG', message: `its object key would be ${keyByteLength(objectKey)} bytes; S3 allows ${MAX_KEY_BYTES}` },
      });
      continue;
    }
    items.push({ itemNo, relativePath: entry.relativePath, size: entry.size, objectKey });
  }
  return { items, measure, unsafe, truncated };
}
