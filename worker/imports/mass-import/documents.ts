// SQL on the backend's documents table, as the mass import uses it: find what is already imported (the tenant's own
// documents apart from other tenants'), insert a new document (idempotent on its object), count what an import left
// behind.
import type { Queryable } from '../../db/pool.js';

export interface DocumentRow {
  id: number;
  tenantId: string;
  sourcePath: string;
  sha256: string;
  size: number;
  contentType: string;
  bucket: string;
  objectKey: string;
  importJobId: number | null;
  createdAt: Date;
}

export type NewDocument = Omit<DocumentRow, 'id' | 'createdAt'>;

const COLUMNS = 'id, tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key, import_job_id, created_at';

function toDocument(row: Record<string, unknown>): DocumentRow {
  return {
    id: row.id as number,
    tenantId: row.tenant_id as string,
    sourcePath: row.source_path as string,
    sha256: row.sha256 as string,
    size: row.size_bytes as number,
    contentType: row.content_type as string,
    bucket: row.bucket as string,
    objectKey: row.object_key as string,
    importJobId: row.import_job_id as number | null,
    createdAt: row.created_at as Date,
  };
}

/** The documents already stored at some keys of a bucket, split by whether they belong to the importing tenant. */
export interface DocumentsAtKeys {
  /** The tenant's own documents, by key: a re-run compares the file with them (same content → skipped). */
  own: Map<string, DocumentRow>;
  /**
   * Documents of other tenants at these keys, by key. Keys are injective over (prefix, tenant, path), so only rows
   * written some other way (by hand, by the backend, or under the key layout before it was made injective) land
   * here. Such a key is never the run's to skip or to overwrite: the item fails as a conflict.
   */
  otherTenants: Map<string, DocumentRow>;
}

/** The documents already stored at these keys of the bucket, as seen by an import for `tenant`. */
export async function findDocumentsByKeys(db: Queryable, bucket: string, tenant: string, keys: string[]): Promise<DocumentsAtKeys> {
  const found: DocumentsAtKeys = { own: new Map(), otherTenants: new Map() };
  if (keys.length === 0) return found;
  const { rows } = await db.query(`SELECT ${COLUMNS} FROM documents WHERE bucket = $1 AND object_key = ANY($2::text[])`, [bucket, keys]);
  for (const row of rows) {
    const document = toDocument(row);
    (document.tenantId === tenant ? found.own : found.otherTenants).set(document.objectKey, document);
  }
  return found;
}

/**
 * Inserts the documents (all of one tenant, bucket and run) unless one already exists for their object; returns the
 * new rows' ids by object key. A key missing from the answer was committed by another run first: the caller then
 * compares the stored hash with its own.
 */
export async function insertDocuments(
  db: Queryable,
  common: Pick<NewDocument, 'tenantId' | 'bucket' | 'importJobId'>,
  documents: Array<Pick<NewDocument, 'sourcePath' | 'sha256' | 'size' | 'contentType' | 'objectKey'>>,
): Promise<Map<string, number>> {
  if (documents.length === 0) return new Map();
  const { rows } = await db.query<{ id: number; object_key: string }>(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key, import_job_id)
     SELECT $1, d.path, d.sha256, d.size, d.content_type, $2, d.object_key, $3
     FROM unnest($4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[]) AS d(path, sha256, size, content_type, object_key)
     ON CONFLICT ON CONSTRAINT documents_object DO NOTHING
     RETURNING id, object_key`,
    [
      common.tenantId,
      common.bucket,
      common.importJobId,
      documents.map((d) => d.sourcePath),
      documents.map((d) => d.sha256),
      documents.map((d) => d.size),
      documents.map((d) => d.contentType),
      documents.map((d) => d.objectKey),
    ],
  );
  return new Map(rows.map((row) => [row.object_key, row.id]));
}

/** How many documents live under a key prefix of a bucket (local summaries, tests, audits). */
export async function countDocuments(db: Queryable, bucket: string, keyPrefix: string): Promise<{ rows: number; bytes: number }> {
  const { rows } = await db.query<{ rows: number; bytes: number }>(
    `SELECT count(*)::int AS rows, coalesce(sum(size_bytes), 0)::bigint AS bytes FROM documents
     WHERE bucket = $1 AND starts_with(object_key, $2)`,
    [bucket, keyPrefix],
  );
  return rows[0]!;
}
