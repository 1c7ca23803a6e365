// The import root a run planned from. The plan holds paths relative to the root: read from another root they name
// other files — another directory's bytes stored as this run's documents (a `bulk-import local` of another folder), or
// every file "vanished" (a campaign mount swapped before a requeue). So the plan records the root's identity with its
// items, and a resumed run whose root is not that one stops, once, ROOT_CHANGED, naming both, before it reads a file.
//
// The identity is the root's real path and its directory's inode number. Not its device number: a network file system
// is numbered anew at every mount (each EFS mount of each task gets a device number of its own), so a requeue during
// the next campaign would find a "different" root. The inode number is the file server's (NFS file id) and outlives
// mounts; another directory — an access point to another directory, a folder moved into the same place — has another
// one. Two file systems mounted at their own roots are not told apart (a root directory's inode is a constant of its
// file system type: ext4's is 2), nor two access points to the same directory (the same files).
import { stat } from 'node:fs/promises';
import type { Queryable } from '../../db/pool.js';
import { PermanentJobError } from '../../queue/errors.js';

const ROOT_CHANGED_CODE = 'ROOT_CHANGED';

export interface RootIdentity {
  /** The root's real path. */
  path: string;
  /** Its directory's inode number, in decimal (EFS uses all 64 bits: more than a Number holds exactly). */
  inode: string;
}

export async function rootIdentityOf(realRoot: string): Promise<RootIdentity> {
  const stats = await stat(realRoot, { bigint: true });
  return { path: realRoot, inode: stats.ino.toString() };
}

/**
 * Written in the transaction that writes the plan's items. A plan without items (an empty source) is made again by
 * the next attempt, which replaces its root.
 */
export async function recordPlanRoot(db: Queryable, jobId: number, root: RootIdentity): Promise<void> {
  await db.query(
    `INSERT INTO import_plan_roots (job_id, root_path, root_inode) VALUES ($1, $2, $3)
     ON CONFLICT (job_id) DO UPDATE SET root_path = excluded.root_path, root_inode = excluded.root_inode, planned_at = now()`,
    [jobId, root.path, root.inode],
  );
}

/** The roots the given runs planned from, by run (`bulk-import local` names the directory of a run it leaves alone). */
export async function plannedRoots(db: Queryable, jobIds: number[]): Promise<Map<number, RootIdentity>> {
  const { rows } = await db.query<{ job_id: number; root_path: string; root_inode: string }>(
    'SELECT job_id, root_path, root_inode::text AS root_inode FROM import_plan_roots WHERE job_id = ANY($1::bigint[])',
    [jobIds],
  );
  return new Map(rows.map((row) => [Number(row.job_id), { path: row.root_path, inode: row.root_inode }]));
}

/** The root the run planned from; undefined for a run not planned yet, or planned before roots were recorded. */
export async function plannedRoot(db: Queryable, jobId: number): Promise<RootIdentity | undefined> {
  return (await plannedRoots(db, [jobId])).get(jobId);
}

const describe = (root: RootIdentity) => `${root.path} (inode ${root.inode})`;

/**
 * Refuses a resumed run whose import root is not the one it planned from. Internal: the message names paths of the
 * worker's file system, which a tenant does not read (visible-errors.ts).
 */
export function checkPlanRoot(planned: RootIdentity | undefined, now: RootIdentity): void {
  if (planned === undefined || (planned.path === now.path && planned.inode === now.inode)) return;
  throw new PermanentJobError(
    `this run planned its files from the import root ${describe(planned)}, but the import root is now ${describe(now)}: ` +
      'another directory, or another file system mounted in its place. The plan\'s paths are relative to its root, so ' +
      'it is not read from another one (that would import other files under the same names); nothing more is imported ' +
      'by this run. Give the worker the root the run planned from and requeue the run, or enqueue a new run of the ' +
      'new root (files already imported with the same content are skipped)',
    ROOT_CHANGED_CODE,
    { planned, now },
    { internal: true },
  );
}
