// Walks a source directory under the import root and reports every entry as a file to import or an unsafe entry to
// record as a failed item. Hostile trees are expected: symbolic links are never followed out of the run's source
// directory (a link from one tenant's directory into another's is refused like one out of the root), FIFOs, sockets
// and devices are never opened, unreadable entries are reported, and names may hold any character.
// Hard links cannot be told from the file they link to by any path check: a tree whose tenants share one file system
// must keep them in separate access points (DEPLOYMENT.md §6, one directory per tenant that no other can write to).
// The walk streams each directory (opendir) and holds at most a budget of names at once: a directory with more files
// than the run's ceiling is refused before it is read to its end, never loaded whole; the names of subdirectories (an
// empty directory is no entry of the plan, so they are not the ceiling's business) are bounded by a cap of their own,
// the same for every run (MAX_DIRECTORY_NAMES_HELD): a dry run and a real run of a tree agree on it.
import { constants, type OpenDirOptions, type Stats } from 'node:fs';
import { access, lstat, opendir, realpath, stat } from 'node:fs/promises';
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
/** Directory entries read per call (opendir's buffer). */
const LIST_AT_ONCE = 256;
/**
 * Names of subdirectories a walk may hold at once (listed, not yet walked: those of the directory being read and of
 * the directories above it). Not counted against the run's files (an empty directory is no entry of the plan), so
 * bounded by this cap instead, the same for every run and every dry run: about 360 B a held name with short names
 * (measured: a Buffer and its record), 600 B with 255-byte names, so at most ≈ 180–300 MB. A tree that needs more
 * is refused with TOO_MANY_SUBDIRECTORIES (import-plan.ts), never as over its files.
 */
export const MAX_DIRECTORY_NAMES_HELD = 500_000;

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
 * A directory holds more files (entries that are not directories) than the walk may still report: the tree is over
 * its ceiling. Thrown as soon as its listing passes the budget; the rest of the directory is never read.
 */
export class DirectoryOverBudgetError extends Error {
  constructor(
    /** Relative to the root, `.` for the root itself. */
    readonly relativePath: string,
    /** Names read from the directory before it was refused. */
    readonly listed: number,
    /**
     * The directory's own files passed the budget. Otherwise they did only with the files listed in the directories
     * above it and not yet reported (which the plan will report all the same: the verdict is as certain).
     */
    readonly alone: boolean,
  ) {
    super(`directory ${relativePath} holds more files than the walk may still report (${listed} names read)`);
    this.name = 'DirectoryOverBudgetError';
  }
}

/**
 * The walk would hold more names of subdirectories than MAX_DIRECTORY_NAMES_HELD (a memory bound, not a ceiling of
 * the run): thrown as soon as a directory's listing passes it; the rest is never read.
 */
export class TooManySubdirectoriesError extends Error {
  constructor(
    /** Relative to the root, `.` for the root itself. */
    readonly relativePath: string,
    /** Names of subdirectories held when it was refused (this directory's and those above it). */
    readonly held: number,
    readonly cap: number,
  ) {
    super(`directory ${relativePath}: more than ${cap} subdirectory names to hold at once`);
    this.name = 'TooManySubdirectoriesError';
  }
}

export interface WalkOptions {
  /** Checked between entries (and while a directory is read): the walk ends with its reason. */
  signal?: AbortSignal | undefined;
  /**
   * Entries the walk may still report before the tree is over its ceiling (the limit minus the entries reported so
   * far). A directory whose files (entries that are not directories), with those listed and not yet reported, pass it
   * ends the walk with DirectoryOverBudgetError. Unbounded when not given.
   */
  budget?: (() => number) | undefined;
  /** Called for every name read from a directory (the walk's work, for tests). */
  onListed?: (() => void) | undefined;
  /** MAX_DIRECTORY_NAMES_HELD unless given (tests). */
  maxDirectoryNames?: number | undefined;
}

interface WalkState {
  realRoot: string;
  /** Real path of the run's source directory: links may lead anywhere below it, nowhere else. */
  sourceDir: string;
  options: WalkOptions;
  /** Names listed and not yet reported, across the directories under way: files, and directories. */
  heldFiles: number;
  heldDirectories: number;
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason;
}

/**
 * Yields the entries below `sourceDir` (a real path inside `realRoot`) in a stable order: depth first, names sorted
 * by their bytes at each level (a directory's names are held while it is walked, within the budget). Paths are
 * relative to the root, with `/` separators.
 */
export async function* walkImportTree(realRoot: string, sourceDir: string, options: WalkOptions = {}): AsyncGenerator<WalkEntry> {
  const start = sourceDir === realRoot ? '' : sourceDir.slice(realRoot.length + 1);
  yield* walkDirectory({ realRoot, sourceDir, options, heldFiles: 0, heldDirectories: 0 }, start, 0);
}

interface ListedName {
  name: Buffer;
  directory: boolean;
}

/** Reads a directory's names one buffer at a time, refusing it once it passes the walk's budget. */
async function listDirectory(walk: WalkState, absoluteDir: string, relativeDir: string): Promise<ListedName[]> {
  const { budget, onListed, signal } = walk.options;
  // Names as their bytes (a name that is not UTF-8 is reported, never guessed at); Node takes 'buffer' here, its
  // types do not say so.
  const dir = await opendir(absoluteDir, { encoding: 'buffer', bufferSize: LIST_AT_ONCE } as unknown as OpenDirOptions);
  const names: ListedName[] = [];
  const maxDirectoryNames = walk.options.maxDirectoryNames ?? MAX_DIRECTORY_NAMES_HELD;
  let files = 0;
  try {
    for (;;) {
      const dirent = await dir.read();
      if (dirent === null) break;
      onListed?.();
      const directory = dirent.isDirectory();
      names.push({ name: dirent.name as unknown as Buffer, directory });
      if (!directory) {
        files += 1;
        // Files held from the directories above are reported before the walk ends, each an entry: over the budget
        // with them is over it for certain.
        if (budget) {
          const left = budget();
          if (walk.heldFiles + files > left) throw new DirectoryOverBudgetError(relativeDir || '.', names.length, files > left);
        }
      } else if (walk.heldDirectories + names.length - files > maxDirectoryNames) {
        throw new TooManySubdirectoriesError(relativeDir || '.', walk.heldDirectories + names.length - files, maxDirectoryNames);
      }
      if (names.length % LIST_AT_ONCE === 0) checkAborted(signal);
    }
  } finally {
    await dir.close().catch(() => {});
  }
  walk.heldFiles += files;
  walk.heldDirectories += names.length - files;
  return names;
}

async function* walkDirectory(walk: WalkState, relativeDir: string, depth: number): AsyncGenerator<WalkEntry> {
  const absoluteDir = relativeDir === '' ? walk.realRoot : join(walk.realRoot, relativeDir);
  let listed: ListedName[];
  try {
    listed = await listDirectory(walk, absoluteDir, relativeDir);
  } catch (error) {
    if (error instanceof DirectoryOverBudgetError || error instanceof TooManySubdirectoriesError || walk.options.signal?.aborted) throw error;
    yield unsafe(relativeDir || '.', 'DIRECTORY_UNREADABLE', `directory cannot be listed (${(error as NodeJS.ErrnoException).code})`);
    return;
  }
  // Sorted: the plan (its item numbers, the dry run's samples) is the same for the same tree, whatever order the file
  // server lists it in. The sort needs the directory's names at once; the budget bounds how many that can be.
  listed.sort((a, b) => Buffer.compare(a.name, b.name));
  const names: Array<ListedName | undefined> = listed;
  // Entries are examined several at a time (each is a stat or two on the file server), then reported in name order.
  for (let start = 0; start < names.length; start += EXAMINE_AT_ONCE) {
    checkAborted(walk.options.signal);
    const batch = names.slice(start, start + EXAMINE_AT_ONCE) as ListedName[];
    const examined = await Promise.all(batch.map(({ name }) => examine(walk, absoluteDir, relativeDir, name)));
    for (const [index, entry] of examined.entries()) {
      if (batch[index]!.directory) walk.heldDirectories -= 1;
      else walk.heldFiles -= 1;
      // Each name is let go once reported: the names still to report are all the walk holds of a directory.
      names[start + index] = undefined;
      if (entry.kind !== 'directory') yield entry;
      else if (depth + 1 >= MAX_DEPTH) yield unsafe(entry.relativePath, 'TOO_DEEP', `directory nested deeper than ${MAX_DEPTH} levels`);
      else yield* walkDirectory(walk, entry.relativePath, depth + 1);
    }
  }
}

async function examine(
  walk: WalkState,
  absoluteDir: string,
  relativeDir: string,
  rawName: Buffer,
): Promise<WalkEntry | { kind: 'directory'; relativePath: string }> {
  const name = rawName.toString('utf8');
  const relativePath = relativeDir === '' ? name : `${relativeDir}/${name}`;
  if (!Buffer.from(name, 'utf8').equals(rawName)) {
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
  if (stats.isSymbolicLink()) return symlinkEntry(walk, absolutePath, relativePath);
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

/**
 * A link is imported as the file it points to only when that is a regular file inside the run's source directory: a
 * link from one tenant's directory to another's file (both inside the root) would import the other tenant's bytes
 * under this tenant's keys. Such a link is refused with the code of a link out of the root (SYMLINK_OUTSIDE_ROOT:
 * a tenant reads that code's sentence, never the target).
 */
async function symlinkEntry(walk: WalkState, absolutePath: string, relativePath: string): Promise<WalkEntry> {
  let target: string;
  try {
    target = await realpath(absolutePath);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return unsafe(relativePath, 'SYMLINK_DANGLING', `symbolic link that cannot be resolved (${code})`);
  }
  if (!isInside(walk.realRoot, target)) {
    return unsafe(relativePath, SYMLINK_OUTSIDE_ROOT_CODE, `symbolic link to ${target}, outside the import root; not followed`);
  }
  if (!isInside(walk.sourceDir, target)) {
    return unsafe(relativePath, SYMLINK_OUTSIDE_ROOT_CODE, `symbolic link to ${target}, outside the run's source directory; not followed`);
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
