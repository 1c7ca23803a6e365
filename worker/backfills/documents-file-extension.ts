// documents.file_extension, for documents imported before the column existed. The value is the lowercase
// extension of the file name in source_path ("pdf" for "scans/2019/Invoice.PDF", "gz" for "a.tar.gz"), or "" when
// the name has none (no dot, a dotfile such as ".env", or a suffix that is not 1-16 ASCII letters and digits).
// NULL means "not computed yet". The rule lives in one SQL function, documents_file_extension(text), created by
// migration 20261128000400: the insert trigger uses it for new rows and this backfill for the old ones, so both
// always agree.
import type { BackfillDefinition } from './types.js';

export const documentsFileExtension: BackfillDefinition = {
  name: 'documents-file-extension',
  description: 'documents.file_extension from source_path (lowercase extension, "" when none)',
  table: 'documents',
  key: { column: 'id', type: 'bigint' },
  tenantColumn: 'tenant_id',
  targetColumn: 'file_extension',
  sourceColumns: ['source_path'],
  compute: { language: 'sql', expression: (row) => `documents_file_extension(${row}.source_path)` },
};
