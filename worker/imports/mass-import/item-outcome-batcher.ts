// Writes what became of each item — and, for an uploaded file, its documents row — in fenced transactions, several
// items per transaction: while one transaction commits, the outcomes that arrive queue up and go in the next one.
// Each file's row and its item's new state still commit together (all or nothing per transaction), so the crash
// argument of file-transfer.ts holds; a busy run just makes one commit (one WAL flush) per batch instead of per file.
import { withTransaction, type Pool, type Queryable } from '../../db/pool.js';
import type { ErrorClass } from '../../queue/types.js';
import { KEY_OF_OTHER_TENANT_CODE } from '../../queue/errors.js';
import { findDocumentsByKeys, insertDocuments, type DocumentRow } from './documents.js';
import { recordItemOutcomes, type ItemOutcomeRecord, type PendingItem } from './items-table.js';
import type { ItemOutcome } from './import-progress.js';

export const CHANGED_CONTENT_POLICY = 'docs/DEPLOYMENT.md §6.4 (changed content)';
const KEY_CONFLICT_POLICY = 'docs/DEPLOYMENT.md §6.4 (keys of another tenant)';

/** What a worker found out about one item, to be recorded. */
export type TransferOutcome =
  | { kind: 'uploaded'; item: PendingItem; tries: number; sha256: string; size: number; contentType: string }
  | { kind: 'same'; item: PendingItem; tries: number; sha256: string; size: number; document: DocumentRow }
  | { kind: 'changed'; item: PendingItem; tries: number; sha256: string | undefined; size: number; document: DocumentRow }
  /** The key holds another tenant's document: nothing was read or uploaded. */
  | { kind: 'other-tenant'; item: PendingItem; tries: number; document: DocumentRow }
  | { kind: 'failed'; item: PendingItem; tries: number; code: string; message: string; errorClass: ErrorClass };

export interface ItemResult {
  outcome: ItemOutcome;
  /** Bytes of the file (as read, or as planned when it could not be read). */
  bytes: number;
  /** Actual size minus planned size, to correct the run's byte total. */
  sizeDelta: number;
  errorClass?: ErrorClass;
  code?: string;
}

export interface ItemOutcomeBatcherOptions {
  pool: Pool;
  jobId: number;
  tenant: string;
  bucket: string;
  assertLeaseHeld(db: Queryable): Promise<void>;
  /** Most items per transaction. */
  maxBatch?: number;
}

interface Waiting {
  outcome: TransferOutcome;
  resolve(result: ItemResult): void;
  reject(error: unknown): void;
}

function changedMessage(item: PendingItem, document: DocumentRow, sha256: string | undefined, size: number): string {
  const was = `sha256 ${document.sha256.slice(0, 16)}…, ${document.size} bytes`;
  const now = sha256 ? `sha256 ${sha256.slice(0, 16)}…, ${size} bytes` : `${size} bytes`;
  const by = document.importJobId === null ? 'a run since deleted' : `job ${document.importJobId}`;
  return (
    `content changed since it was imported: document ${document.id} (imported ${document.createdAt.toISOString()} by ${by}) ` +
    `holds ${was}; ${item.relativePath} now has ${now}. The stored object and row were left untouched (${CHANGED_CONTENT_POLICY}).`
  );
}

function otherTenantMessage(item: PendingItem, document: DocumentRow, uploaded: boolean): string {
  const by = document.importJobId === null ? 'not by an import run still on record' : `by job ${document.importJobId}`;
  const what = uploaded
    ? "this run's upload may have replaced its object: check this key with `bulk-import audit`"
    : 'the file was not uploaded and that document and its object were left untouched';
  return (
    `the key ${item.objectKey} already belongs to document ${document.id} of another tenant (created ` +
    `${document.createdAt.toISOString()} ${by}); a key is never shared between tenants, so ${what} (${KEY_CONFLICT_POLICY})`
  );
}

export class ItemOutcomeBatcher {
  private readonly queue: Waiting[] = [];
  private flushing = false;
  private readonly maxBatch: number;

  constructor(private readonly options: ItemOutcomeBatcherOptions) {
    this.maxBatch = options.maxBatch ?? 100;
  }

  /** Resolves once the outcome is committed (with the final result: an upload may still turn out a conflict). */
  record(outcome: TransferOutcome): Promise<ItemResult> {
    return new Promise((resolve, reject) => {
      this.queue.push({ outcome, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatch);
        try {
          const results = await this.write(batch.map((waiting) => waiting.outcome));
          batch.forEach((waiting, index) => waiting.resolve(results[index]!));
        } catch (error) {
          for (const waiting of batch) waiting.reject(error);
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  private write(outcomes: TransferOutcome[]): Promise<ItemResult[]> {
    const { jobId, tenant, bucket } = this.options;
    return withTransaction(this.options.pool, async (tx) => {
      await this.options.assertLeaseHeld(tx);
      const uploads = outcomes.filter((outcome) => outcome.kind === 'uploaded');
      const inserted = await insertDocuments(
        tx,
        { tenantId: tenant, bucket, importJobId: jobId },
        uploads.map((upload) => ({
          sourcePath: upload.item.relativePath,
          sha256: upload.sha256,
          size: upload.size,
          contentType: upload.contentType,
          objectKey: upload.item.objectKey,
        })),
      );
      // A key another run committed between our look-up and now (overlapping sources imported at the same time).
      const raced = uploads.filter((upload) => !inserted.has(upload.item.objectKey)).map((upload) => upload.item.objectKey);
      const others = raced.length > 0 ? await findDocumentsByKeys(tx, bucket, tenant, raced) : undefined;
      const records: ItemOutcomeRecord[] = [];
      const results = outcomes.map((outcome): ItemResult => {
        const { item, tries } = outcome;
        const base = { itemNo: item.itemNo, tries };
        if (outcome.kind === 'failed') {
          const error = { code: outcome.code, message: outcome.message, errorClass: outcome.errorClass };
          records.push({ ...base, state: 'failed', size: item.size, sha256: null, documentId: null, error });
          return { outcome: 'failed', bytes: item.size, sizeDelta: 0, errorClass: outcome.errorClass, code: outcome.code };
        }
        if (outcome.kind === 'other-tenant') {
          const error = { code: KEY_OF_OTHER_TENANT_CODE, message: otherTenantMessage(item, outcome.document, false), errorClass: 'permanent' as const };
          records.push({ ...base, state: 'failed', size: item.size, sha256: null, documentId: null, error });
          return { outcome: 'failed', bytes: item.size, sizeDelta: 0, errorClass: 'permanent', code: KEY_OF_OTHER_TENANT_CODE };
        }
        const sizeDelta = outcome.size - item.size;
        if (outcome.kind === 'changed') {
          const error = { code: 'CONTENT_CHANGED', message: changedMessage(item, outcome.document, outcome.sha256, outcome.size), errorClass: 'permanent' as const };
          records.push({ ...base, state: 'failed', size: outcome.size, sha256: outcome.sha256 ?? null, documentId: null, error });
          return { outcome: 'failed', bytes: outcome.size, sizeDelta, errorClass: 'permanent', code: 'CONTENT_CHANGED' };
        }
        if (outcome.kind === 'same') {
          records.push({ ...base, state: 'skipped', size: outcome.size, sha256: outcome.sha256, documentId: outcome.document.id, error: null });
          return { outcome: 'skipped', bytes: outcome.size, sizeDelta };
        }
        const documentId = inserted.get(item.objectKey);
        if (documentId !== undefined) {
          records.push({ ...base, state: 'done', size: outcome.size, sha256: outcome.sha256, documentId, error: null });
          return { outcome: 'done', bytes: outcome.size, sizeDelta };
        }
        const otherTenant = others?.otherTenants.get(item.objectKey);
        if (otherTenant) {
          // Never a skip, even with the same bytes: the row is another tenant's document, not this run's.
          const error = { code: KEY_OF_OTHER_TENANT_CODE, message: otherTenantMessage(item, otherTenant, true), errorClass: 'permanent' as const };
          records.push({ ...base, state: 'failed', size: outcome.size, sha256: outcome.sha256, documentId: null, error });
          return { outcome: 'failed', bytes: outcome.size, sizeDelta, errorClass: 'permanent', code: KEY_OF_OTHER_TENANT_CODE };
        }
        const other = others!.own.get(item.objectKey)!;
        if (other.sha256 === outcome.sha256) {
          records.push({ ...base, state: 'skipped', size: outcome.size, sha256: outcome.sha256, documentId: other.id, error: null });
          return { outcome: 'skipped', bytes: outcome.size, sizeDelta };
        }
        const message =
          `job ${other.importJobId ?? '?'} imported ${item.objectKey} at the same time with different content (sha256 ` +
          `${other.sha256.slice(0, 16)}…); this run's upload (sha256 ${outcome.sha256.slice(0, 16)}…) may have replaced its ` +
          'object: check this key with `bulk-import audit` and import the file again';
        records.push({
          ...base,
          state: 'failed',
          size: outcome.size,
          sha256: outcome.sha256,
          documentId: null,
          error: { code: 'CONCURRENT_CONFLICT', message, errorClass: 'permanent' },
        });
        return { outcome: 'failed', bytes: outcome.size, sizeDelta, errorClass: 'permanent', code: 'CONCURRENT_CONFLICT' };
      });
      await recordItemOutcomes(tx, jobId, records);
      return results;
    });
  }
}
