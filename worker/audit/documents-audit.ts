// The documents audit: objects in the bucket without a `documents` row (orphan objects), and rows whose object is
// missing. With `fix`, orphan objects are deleted — the only direction that is safe to repair automatically:
//
// - An orphan object is referenced by nothing: the backend only reaches objects through `documents` rows, so
//   deleting it cannot break anything a user sees. It is also the expected residue of a crash: a mass import
//   uploads first and commits the row second, and a run that died between the two leaves exactly this. Guards:
//   only objects older than `minAgeMs` (an import in flight uploads a moment before it commits), only under an
//   explicit key prefix (other objects in the bucket, such as CSV uploads, have no documents row by design), never
//   an object whose key a job's payload names (a CSV upload waiting for review), a re-check of the rows right before
//   each delete, and the command refuses to fix while any job is running.
// - An object whose key a job's payload names (a CSV upload under `imports/<tenant>/`) is not an orphan: it belongs
//   to that run and has no documents row by design. The report counts these apart (`jobInputs`), never among the
//   orphans, and `--fix` never deletes them. Once retention has deleted the run, nothing names the object any more
//   and it is an orphan like any other.
// - A row without its object is a reference to lost data. Deleting the row would erase the last record of what
//   should be there (tenant, source path, checksum, the run that imported it); the repair is to restore or
//   re-import the file, which needs a person. The audit reports these rows and never changes them.
import { DeleteObjectsCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Pool } from '../db/pool.js';
import {
  addListedObjects,
  countDocumentRows,
  createListingTable,
  databaseNow,
  keysNamedByJobs,
  keysWithDocumentRow,
  orphanObjectsPage,
  tenantKeyTest,
  rowsWithoutObject,
  type OrphanObject,
  type RowWithoutObject,
} from './audit-store.js';
import { listObjectPages } from './bucket-listing.js';

export interface AuditProgress {
  phase: 'listing' | 'comparing' | 'fixing';
  objectsListed: number;
  orphansFound: number;
  jobInputsFound: number;
  deleted: number;
}

export interface AuditOptions {
  pool: Pool;
  s3: S3Client;
  bucket: string;
  /** Only keys starting with this ('' for the whole bucket). */
  prefix: string;
  /**
   * Only this tenant's documents: its rows under the prefix, and the listed objects whose key names it as their
   * tenant (`<prefix>[_segment/…]<tenant>/…`, the layout of worker/imports/object-key.ts, so a multi-segment import
   * prefix such as `imports/_2024-q4/acme/` is included). The whole prefix is listed: a row's object is found
   * wherever it is, and memory stays bounded by the listing table as for a full audit. Needs a prefix ending in `/`.
   */
  tenantId?: string | null | undefined;
  /** Cancel or shutdown: checked per page, and ends a listing request in flight. */
  signal?: AbortSignal | undefined;
  /** How many findings of each kind the report lists (all are counted). */
  limit: number;
  /** Delete orphan objects older than minAgeMs. */
  fix?: { minAgeMs: number } | undefined;
  onProgress?: ((progress: AuditProgress) => void) | undefined;
  /** Keys per listing request (S3's maximum, 1,000, by default). */
  listPageSize?: number | undefined;
}

export interface FixReport {
  minAgeMs: number;
  deleted: number;
  /** Orphans younger than minAgeMs: possibly an import in flight. */
  skippedTooYoung: number;
  /** Orphans that had gained a row by the time of the re-check. */
  skippedNowReferenced: number;
  /** Orphans that a job's payload had come to name by the time of the re-check (enqueued meanwhile). */
  skippedNamedByJob: number;
  failed: Array<{ key: string; error: string }>;
}

export interface AuditReport {
  bucket: string;
  prefix: string;
  startedAt: Date;
  objectsListed: number;
  documentRows: number;
  /** Objects without a documents row that no job's payload names. */
  orphanObjects: { total: number; listed: OrphanObject[] };
  /** Objects without a documents row that a job's payload names (CSV uploads): not orphans, never deleted. */
  jobInputs: { total: number; listed: OrphanObject[] };
  rowsWithoutObject: { total: number; listed: RowWithoutObject[] };
  fix?: FixReport;
}

const PAGE = 1000;

export async function auditDocuments(options: AuditOptions): Promise<AuditReport> {
  const { pool, s3, bucket, prefix, limit, signal } = options;
  const tenantId = options.tenantId ?? null;
  if (tenantId !== null && !prefix.endsWith('/')) throw new Error(`a tenant's documents audit needs a prefix ending in "/", got ${JSON.stringify(prefix)}`);
  const progress: AuditProgress = { phase: 'listing', objectsListed: 0, orphansFound: 0, jobInputsFound: 0, deleted: 0 };
  // A session of its own for the temporary listing table; destroyed (not returned to the pool) afterwards.
  const session = await pool.connect();
  try {
    // The database's clock: rows' created_at is compared with it (and S3's LastModified, on servers kept in time).
    const startedAt = await databaseNow(session);
    await createListingTable(session);
    // A tenant's audit lists the whole prefix (its keys may sit below `_` segments of any import prefix) but keeps,
    // stores and counts only the keys that name the tenant: nothing of another tenant's objects reaches its result.
    const ofTenant = tenantId === null ? null : tenantKeyTest(tenantId);
    for await (const listed of listObjectPages(s3, bucket, prefix, options.listPageSize, signal)) {
      signal?.throwIfAborted();
      const page = ofTenant === null ? listed : listed.filter((object) => ofTenant(object.key));
      await addListedObjects(session, page);
      progress.objectsListed += page.length;
      options.onProgress?.({ ...progress });
    }
    progress.phase = options.fix ? 'fixing' : 'comparing';
    options.onProgress?.({ ...progress });

    const orphans: OrphanObject[] = [];
    const jobInputs: OrphanObject[] = [];
    const fix: FixReport | undefined = options.fix
      ? { minAgeMs: options.fix.minAgeMs, deleted: 0, skippedTooYoung: 0, skippedNowReferenced: 0, skippedNamedByJob: 0, failed: [] }
      : undefined;
    let total = 0;
    let inputsTotal = 0;
    let after: string | null = null;
    for (;;) {
      signal?.throwIfAborted();
      const unreferenced = await orphanObjectsPage(session, bucket, after, PAGE);
      if (unreferenced.length === 0) break;
      after = unreferenced[unreferenced.length - 1]!.key;
      const named = await keysNamedByJobs(session, unreferenced.map((object) => object.key));
      const page = unreferenced.filter((object) => !named.has(object.key));
      total += page.length;
      inputsTotal += unreferenced.length - page.length;
      for (const object of unreferenced) {
        const list = named.has(object.key) ? jobInputs : orphans;
        if (list.length < limit) list.push(object);
      }
      if (fix && options.fix && page.length > 0) await deleteOrphans(options, startedAt, page, fix);
      progress.orphansFound = total;
      progress.jobInputsFound = inputsTotal;
      progress.deleted = fix?.deleted ?? 0;
      options.onProgress?.({ ...progress });
    }

    signal?.throwIfAborted();
    const missing = await rowsWithoutObject(session, bucket, prefix, startedAt, limit, tenantId);
    return {
      bucket,
      prefix,
      startedAt,
      objectsListed: progress.objectsListed,
      documentRows: await countDocumentRows(session, bucket, prefix, tenantId),
      orphanObjects: { total, listed: orphans },
      jobInputs: { total: inputsTotal, listed: jobInputs },
      rowsWithoutObject: { total: missing.total, listed: missing.rows },
      ...(fix ? { fix } : {}),
    };
  } finally {
    session.release(true);
  }
}

async function deleteOrphans(options: AuditOptions, startedAt: Date, page: OrphanObject[], fix: FixReport): Promise<void> {
  const cutoff = startedAt.getTime() - fix.minAgeMs;
  const oldEnough = page.filter((orphan) => orphan.lastModified !== null && orphan.lastModified.getTime() < cutoff);
  fix.skippedTooYoung += page.length - oldEnough.length;
  if (oldEnough.length === 0) return;
  const candidates = oldEnough.map((orphan) => orphan.key);
  const named = await keysNamedByJobs(options.pool, candidates);
  fix.skippedNamedByJob += named.size;
  const referenced = await keysWithDocumentRow(options.pool, options.bucket, candidates.filter((key) => !named.has(key)));
  fix.skippedNowReferenced += referenced.size;
  const keys = candidates.filter((key) => !named.has(key) && !referenced.has(key));
  if (keys.length === 0) return;
  const result = await options.s3.send(
    new DeleteObjectsCommand({ Bucket: options.bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } }),
  );
  const errors = (result.Errors ?? []).map((error) => ({ key: error.Key ?? '?', error: `${error.Code ?? 'Error'}: ${error.Message ?? ''}` }));
  fix.failed.push(...errors);
  fix.deleted += keys.length - errors.length;
}
