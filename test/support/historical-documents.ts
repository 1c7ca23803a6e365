// Documents imported before `documents.file_extension` existed, for the backfill tests: the insert trigger that fills
// it is off while they go in, so every one of them lacks the field. All PDFs, over four tenants.
import type { Queryable } from '../../worker/db/pool.js';

export async function insertHistoricalDocuments(db: Queryable, count: number): Promise<void> {
  await db.query('ALTER TABLE documents DISABLE TRIGGER documents_file_extension_on_write');
  await db.query(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
     SELECT 'tenant-' || (g % 4), 'scans/doc-' || g || '.pdf', repeat('0', 64), g, 'application/pdf', 'bucket', 'documents/' || g
     FROM generate_series(1, $1::int) AS g`,
    [count],
  );
  await db.query('ALTER TABLE documents ENABLE TRIGGER documents_file_extension_on_write');
}
