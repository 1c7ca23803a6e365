// SQL on the backend's documents table, as the mass import uses it: find what is already imported, insert a new
// document (idempotent on its object), count what an import left behind.
import type { Queryable } from '../db/pool.js';

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

/** The documents already stored at these keys of the bucket, by key. */
export async function findDocumentsByKeys(db: Queryable, bucket: string, keys: string[]): Promise<Map<string, DocumentRow>> {
  if (keys.length === 0) return new Map();
  const { rows } = await db.query(`SELECT ${COLUMNS} FROM documents WHERE bucket = $1 AND object_key = ANY($2::text[])`, [bucket, keys]);
  return new Map(rows.map((row) => [row.object_key as string, toDocument(row)]));
}

/**
 * Inserts the document unless one already exists for its object; returns the new row's id, or null when another
 * run got there first (the caller then compares the stored hash with its own).
 */
export async function insertDocument(db: Queryable, document: NewDocument): Promise<number | null> {
  const { rows } = await db.query<{ id: number }>(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key, import_job_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT ON CONSTRAINT documents_object DO NOTHING
     RETURNING id`,
    [
      document.tenantId,
      document.sourcePath,
      document.sha256,
      document.size,
      document.contentType,
      document.bucket,
      document.objectKey,
      document.importJobId,
    ],
  );
  return rows[0]?.id ?? null;
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
