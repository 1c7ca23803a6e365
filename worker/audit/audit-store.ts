// The SQL of the documents audit. The bucket listing is loaded into a temporary table of the audit's own session,
// and Postgres compares it with `documents` in both directions: no ordering assumption about the S3 server's
// listing, and the comparison of millions of keys runs in the database (hash joins spill to disk), not in memory.
import type { Queryable } from '../db/pool.js';
import type { ListedObject } from './bucket-listing.js';

/**
 * The database's clock now: what the audits compare the database's own timestamps with (created_at, finalized_at).
 * Never the local clock — the CLI may run on a laptop whose clock is off by minutes.
 */
export async function databaseNow(db: Queryable): Promise<Date> {
  const { rows } = await db.query<{ now: Date }>('SELECT now()');
  return rows[0]!.now;
}

/** Creates the session's listing table. The session must be a dedicated connection, closed after the audit. */
export async function createListingTable(session: Queryable): Promise<void> {
  await session.query(
    `CREATE TEMPORARY TABLE audit_listed_objects (key text PRIMARY KEY, size_bytes bigint NOT NULL, last_modified timestamptz)`,
  );
}

export async function addListedObjects(session: Queryable, objects: ListedObject[]): Promise<void> {
  await session.query(
    `INSERT INTO audit_listed_objects (key, size_bytes, last_modified)
     SELECT * FROM unnest($1::text[], $2::bigint[], $3::timestamptz[]) ON CONFLICT (key) DO NOTHING`,
    [objects.map((o) => o.key), objects.map((o) => o.sizeBytes), objects.map((o) => o.lastModified)],
  );
}

/**
 * Whether an object key is one of the tenant's: an import key is <first segment of the import prefix>/<further
 * segments, each starting with `_`>/<tenant>/… (worker/imports/object-key.ts), whatever prefix the audit lists
 * (`imports/`, `imports/_2024-q4/`, `imports/acme/`). Tenants never start with `_`, so `imports/globex/acme/x.pdf`
 * (globex's folder acme) is not acme's.
 */
export function tenantKeyTest(tenantId: string): (key: string) => boolean {
  const pattern = new RegExp(`^(_[^/]*/)*${tenantId.replace(/[\\^$.*+?()[\]{}|-]/g, '\\$&')}/`);
  return (key) => pattern.test(key.slice(key.indexOf('/') + 1));
}

export interface OrphanObject {
  key: string;
  sizeBytes: number;
  lastModified: Date | null;
}

/**
 * Listed objects without a documents row, in key order after `afterKey` (keyset paging over the listing table, which
 * holds only the keys the audit is about: a tenant's audit stores only its own).
 */
export async function orphanObjectsPage(
  session: Queryable,
  bucket: string,
  afterKey: string | null,
  limit: number,
): Promise<OrphanObject[]> {
  const { rows } = await session.query<{ key: string; size_bytes: number; last_modified: Date | null }>(
    `SELECT l.key, l.size_bytes, l.last_modified FROM audit_listed_objects l
     WHERE ($2::text IS NULL OR l.key > $2)
       AND NOT EXISTS (SELECT 1 FROM documents d WHERE d.bucket = $1 AND d.object_key = l.key)
     ORDER BY l.key LIMIT $3`,
    [bucket, afterKey, limit],
  );
  return rows.map((row) => ({ key: row.key, sizeBytes: row.size_bytes, lastModified: row.last_modified }));
}

export interface RowWithoutObject {
  documentId: number;
  tenantId: string;
  key: string;
  importJobId: number | null;
  createdAt: Date;
}

/**
 * Documents rows under the prefix (of the tenant, when one is given) whose object the listing did not contain:
 * all counted, `limit` of them listed. Rows created after `listedSince` are left out: their object may have been
 * uploaded after the listing passed its key (an import running meanwhile).
 */
export async function rowsWithoutObject(
  session: Queryable,
  bucket: string,
  prefix: string,
  listedSince: Date,
  limit: number,
  tenantId: string | null = null,
): Promise<{ total: number; rows: RowWithoutObject[] }> {
  const { rows } = await session.query<{
    id: number;
    tenant_id: string;
    object_key: string;
    import_job_id: number | null;
    created_at: Date;
    total: number;
  }>(
    `SELECT d.id, d.tenant_id, d.object_key, d.import_job_id, d.created_at, count(*) OVER ()::int AS total
     FROM documents d
     WHERE d.bucket = $1 AND starts_with(d.object_key, $2) AND d.created_at < $3 ${tenantId === null ? '' : 'AND d.tenant_id = $5'}
       AND NOT EXISTS (SELECT 1 FROM audit_listed_objects l WHERE l.key = d.object_key)
     ORDER BY d.object_key LIMIT greatest($4, 1)`,
    // At least one row, which carries the count: with `limit` 0 there would be none to carry it.
    [bucket, prefix, listedSince, limit, ...(tenantId === null ? [] : [tenantId])],
  );
  return {
    total: rows[0]?.total ?? 0,
    rows: rows.slice(0, limit).map((row) => ({
      documentId: row.id,
      tenantId: row.tenant_id,
      key: row.object_key,
      importJobId: row.import_job_id,
      createdAt: row.created_at,
    })),
  };
}

/** Rows of `documents` under the prefix, of the tenant when one is given (what the audit compared the listing with). */
export async function countDocumentRows(db: Queryable, bucket: string, prefix: string, tenantId: string | null = null): Promise<number> {
  const { rows } = await db.query<{ count: number }>(
    `SELECT count(*)::int AS count FROM documents WHERE bucket = $1 AND starts_with(object_key, $2) ${tenantId === null ? '' : 'AND tenant_id = $3'}`,
    [bucket, prefix, ...(tenantId === null ? [] : [tenantId])],
  );
  return rows[0]?.count ?? 0;
}

/** Which of these keys have a documents row now (the re-check right before a deletion). */
export async function keysWithDocumentRow(db: Queryable, bucket: string, keys: string[]): Promise<Set<string>> {
  const { rows } = await db.query<{ object_key: string }>(
    'SELECT object_key FROM documents WHERE bucket = $1 AND object_key = ANY($2::text[])',
    [bucket, keys],
  );
  return new Set(rows.map((row) => row.object_key));
}

/**
 * Which of these keys some job's payload names (any string value anywhere in it, e.g. a CSV import's upload key):
 * such an object belongs to a run, not to `documents`, even without a row. One pass over the payloads per call.
 */
export async function keysNamedByJobs(db: Queryable, keys: string[]): Promise<Set<string>> {
  const { rows } = await db.query<{ key: string }>(
    `SELECT key FROM unnest($1::text[]) AS candidate(key)
     WHERE key IN (
       SELECT value #>> '{}' FROM jobs, jsonb_path_query(jobs.payload, 'strict $.** ? (@.type() == "string")') AS value
     )`,
    [keys],
  );
  return new Set(rows.map((row) => row.key));
}
