// Opens a planned file for reading at import time, re-checking what the plan saw: the tree may have changed since,
// and a path that was a regular file may now be a link out of the root or a FIFO. What is read is what was checked:
// the check runs on the opened descriptor itself. What is read must lie in the run's source directory, not merely in
// the import root: a link (or a directory replaced by one) from one tenant's directory into another's is refused.
import { constants } from 'node:fs';
import { lstat, open, readlink, realpath, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { FileVersion } from '../../storage/s3-upload.js';
import { SYMLINK_OUTSIDE_ROOT_CODE } from '../../queue/errors.js';
import { isInside } from './directory-walk.js';
import { ItemFailure } from './item-failure.js';

export interface OpenedImportFile {
  handle: FileHandle;
  /** Size of the file when it was opened. */
  size: number;
  /** Size, mtime and ctime (ns) when it was opened, before any byte was read: a later fstat tells a change. */
  version: FileVersion;
}

function errnoCode(error: unknown): string {
  return (error as NodeJS.ErrnoException).code ?? 'UNKNOWN';
}

function openFailure(relativePath: string, error: unknown): ItemFailure {
  const code = errnoCode(error);
  if (code === 'ENOENT') return new ItemFailure('FILE_VANISHED', `${relativePath} no longer exists (it was removed after the plan)`);
  if (code === 'EACCES' || code === 'EPERM') return new ItemFailure('UNREADABLE', `${relativePath} is not readable by the worker (${code})`);
  if (code === 'ELOOP') return new ItemFailure('SYMLINK_LOOP', `${relativePath} is a symbolic link loop`);
  return new ItemFailure('OPEN_FAILED', `${relativePath} cannot be opened (${code})`, code === 'EIO' ? 'transient' : 'permanent');
}

/** The real path of an open descriptor (Linux /proc), or of the path when /proc is not available. */
async function descriptorPath(handle: FileHandle, fallbackPath: string): Promise<string> {
  try {
    return await readlink(`/proc/self/fd/${handle.fd}`);
  } catch {
    return realpath(fallbackPath);
  }
}

/** Where a run reads: the import root (paths are relative to it) and its source directory below it (real paths). */
export interface ImportTree {
  realRoot: string;
  /** Real path of the run's source directory: nothing outside it is read. */
  sourceDir: string;
}

export async function openImportFile(tree: ImportTree, relativePath: string): Promise<OpenedImportFile> {
  const absolutePath = join(tree.realRoot, relativePath);
  try {
    // Never open anything but a regular file: opening a device can have side effects, a FIFO can block forever.
    const linkStats = await lstat(absolutePath);
    const targetStats = linkStats.isSymbolicLink() ? await stat(absolutePath) : linkStats;
    if (!targetStats.isFile()) {
      throw new ItemFailure('SPECIAL_FILE', `${relativePath} is no longer a regular file; only regular files are imported`);
    }
  } catch (error) {
    if (error instanceof ItemFailure) throw error;
    throw openFailure(relativePath, error);
  }
  let handle: FileHandle;
  try {
    handle = await open(absolutePath, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (error) {
    throw openFailure(relativePath, error);
  }
  try {
    const real = await descriptorPath(handle, absolutePath);
    if (!isInside(tree.realRoot, real)) {
      throw new ItemFailure(SYMLINK_OUTSIDE_ROOT_CODE, `${relativePath} now leads to ${real}, outside the import root; not read`);
    }
    if (!isInside(tree.sourceDir, real)) {
      throw new ItemFailure(SYMLINK_OUTSIDE_ROOT_CODE, `${relativePath} now leads to ${real}, outside the run's source directory; not read`);
    }
    const stats = await handle.stat({ bigint: true });
    if (!stats.isFile()) throw new ItemFailure('SPECIAL_FILE', `${relativePath} is not a regular file; only regular files are imported`);
    return { handle, size: Number(stats.size), version: { size: stats.size, mtimeNs: stats.mtimeNs, ctimeNs: stats.ctimeNs } };
  } catch (error) {
    await handle.close().catch(() => {});
    throw error;
  }
}
