// Walks a source directory under the import root and reports every entry as a file to import or an unsafe entry to
// record as a failed item. Hostile trees are expected: symbolic links are never followed out of the root, FIFOs,
// sockets and devices are never opened, unreadable entries are reported, and names may hold any character.
import { constants, type Dirent, type Stats } from 'node:fs';
import { access, lstat, readdir, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SYMLINK_OUTSIDE_ROOT_CODE } from '../../queue/errors.js';

export type WalkEntry =
  | { kind: 'file'; relativePath: string; size: number }
  | { kind: 'unsafe'; relativePath: string; size: number; code: UnsafeCode; reason: string };

export type UnsafeCode =
  | typeof SYMLINK_OUTSIDE_ROOT_CODE
  | 'SYMLINK_DANGLING'
  | 'SYMLINK_TO_DIRECTORY'
  | 'SPECIAL_FILE'
  | 'UNREADABLE'
  | 'DIRECTORY_UNREADABLE'
  | 'NAME_NOT_UTF8'
  | 'TOO_DEEP';

/** Deeper trees are refused entry by entry: a share nested this deep is almost certainly a loop or an accident. */
const MAX_DEPTH = 64;
const EXAMINE_AT_ONCE = 32;

/** True when `path` is `root` or lies below it (both real paths). */
export function isInside(root: string, path: string): boolean {
  return path === root || path.startsWith(root.endsWith('/') ? root : `${root}/`);
}

function specialKind(stats: Stats): string {
  if (stats.isFIFO()) return 'a FIFO (named pipe)';
  if (stats.isSocket()) return 'a socket';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

/**
 * Yields the entries below `sourceDir` (a real path inside `realRoot`) in a stable order: depth first, names sorted
 * by their bytes at each level. Paths are relative to the root, with `/` separators.
 */
export async function* walkImportTree(realRoot: string, sourceDir: string): AsyncGenerator<WalkEntry> {
  const start = sourceDir === realRoot ? '' : sourceDir.slice(realRoot.length + 1);
  yield* walkDirectory(realRoot, start, 0);
}

async function* walkDirectory(realRoot: string, relativeDir: string, depth: number): AsyncGenerator<WalkEntry> {
  const absoluteDir = relativeDir === '' ? realRoot : join(realRoot, relativeDir);
  let dirents: Array<Dirent<Buffer>>;
  try {
    dirents = await readdir(absoluteDir, { withFileTypes: true, encoding: 'buffer' });
  } catch (error) {
    yield unsafe(relativeDir || '.', 'DIRECTORY_UNREADABLE', `directory cannot be listed (${(error as NodeJS.ErrnoException).code})`);
    return;
  }
  dirents.sort((a, b) => Buffer.compare(a.name, b.name));
  // Entries are examined several at a time (each is a stat or two on the file server), then reported in name order.
  for (let start = 0; start < dirents.length; start += EXAMINE_AT_ONCE) {
    const examined = await Promise.all(
      dirents.slice(start, start + EXAMINE_AT_ONCE).map((dirent) => examine(realRoot, absoluteDir, relativeDir, dirent)),
    );
    for (const entry of examined) {
      if (entry.kind !== 'directory') yield entry;
      else if (depth + 1 >= MAX_DEPTH) yield unsafe(entry.relativePath, 'TOO_DEEP', `directory nested deeper than ${MAX_DEPTH} levels`);
      else yield* walkDirectory(realRoot, entry.relativePath, depth + 1);
    }
  }
}

async function examine(
  realRoot: string,
  absoluteDir: string,
  relativeDir: string,
  dirent: Dirent<Buffer>,
): Promise<WalkEntry | { kind: 'directory'; relativePath: string }> {
  const name = dirent.name.toString('utf8');
  const relativePath = relativeDir === '' ? name : `${relativeDir}/${name}`;
  if (!Buffer.from(name, 'utf8').equals(dirent.name)) {
    // Such a name cannot be stored as text nor opened through a string path; it is reported, never guessed at.
    return unsafe(relativePath, 'NAME_NOT_UTF8', 'the name is not valid UTF-8');
  }
  const absolutePath = join(absoluteDir, name);
  let stats: Stats;
  try {
    stats = await lstat(absolutePath);
  } catch (error) {
    return unsafe(relativePath, 'UNREADABLE', `cannot be examined (${(error as NodeJS.ErrnoException).code})`);
  }
  if (stats.isDirectory()) return { kind: 'directory', relativePath };
  if (stats.isSymbolicLink()) return symlinkEntry(realRoot, absolutePath, relativePath);
  if (stats.isFile()) return fileEntry(absolutePath, relativePath, stats.size);
  return unsafe(relativePath, 'SPECIAL_FILE', `${specialKind(stats)}; only regular files are imported`);
}

async function fileEntry(absolutePath: string, relativePath: string, size: number): Promise<WalkEntry> {
  try {
    await access(absolutePath, constants.R_OK);
  } catch (error) {
    return unsafe(relativePath, 'UNREADABLE', `not readable by the worker (${(error as NodeJS.ErrnoException).code})`, size);
  }
  return { kind: 'file', relativePath, size };
}

/** A link is imported as the file it points to only when that is a regular file inside the root. */
async function symlinkEntry(realRoot: string, absolutePath: string, relativePath: string): Promise<WalkEntry> {
  let target: string;
  try {
    target = await realpath(absolutePath);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return unsafe(relativePath, 'SYMLINK_DANGLING', `symbolic link that cannot be resolved (${code})`);
  }
  if (!isInside(realRoot, target)) {
    return unsafe(relativePath, SYMLINK_OUTSIDE_ROOT_CODE, `symbolic link to ${target}, outside the import root; not followed`);
  }
  let stats: Stats;
  try {
    stats = await stat(target);
  } catch (error) {
    return unsafe(relativePath, 'SYMLINK_DANGLING', `symbolic link whose target vanished (${(error as NodeJS.ErrnoException).code})`);
  }
  if (stats.isDirectory()) {
    return unsafe(relativePath, 'SYMLINK_TO_DIRECTORY', 'symbolic link to a directory; directory links are not followed');
  }
  if (!stats.isFile()) return unsafe(relativePath, 'SPECIAL_FILE', `symbolic link to ${specialKind(stats)}`);
  return fileEntry(target, relativePath, stats.size);
}

function unsafe(relativePath: string, code: UnsafeCode, reason: string, size = 0): WalkEntry {
  return { kind: 'unsafe', relativePath, size, code, reason };
}
