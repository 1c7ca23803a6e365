// One item of a mass import, exactly once: open the file (re-checked), then either
//   - no document at its key: stream it to S3 while hashing, then ONE fenced transaction inserts the documents row and
//     marks the item done. A crash between the upload and the commit leaves only an object that the retry overwrites
//     with the same bytes; a commit never happens without its object.
//   - a document already at its key: hash the file locally (no upload) — same content: the item is skipped; changed
//     content: the item fails with CONTENT_CHANGED and the stored object and row stay untouched.
// S3 errors worth a retry are retried here with backoff; throttling lowers the run's parallelism.
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { withTransaction, type Pool, type Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { backoffDelayMs, type BackoffPolicy } from '../queue/backoff.js';
import { classifyError, PermanentJobError } from '../queue/errors.js';
import type { ErrorClass } from '../queue/types.js';
import { FileChangedDuringReadError, UploadTimeoutError, uploadFileWithSha256 } from '../storage/s3-upload.js';
import type { AdaptiveConcurrency } from './adaptive-concurrency.js';
import { contentTypeFor } from './content-type.js';
import { findDocumentsByKeys, insertDocument, type DocumentRow } from './documents.js';
import { sha256OfFile } from './file-sha256.js';
import { openImportFile } from './import-file-access.js';
import { markItemCompleted, markItemFailed, type PendingItem } from './import-items.js';
import type { ItemOutcome } from './import-progress.js';
import { ItemFailure } from './item-failure.js';

export const CHANGED_CONTENT_POLICY = 'docs/DEPLOYMENT.md §6.4 (changed content)';

export interface ItemImportContext {
  jobId: number;
  tenant: string;
  bucket: string;
  realRoot: string;
  s3: S3Client;
  pool: Pool;
  signal: AbortSignal;
  log: Logger;
  assertLeaseHeld(db: Queryable): Promise<void>;
  limiter: AdaptiveConcurrency;
  multipartThresholdBytes: number;
  requestTimeoutMs: number;
  /** Upload tries of one item within one attempt of the run. */
  triesPerAttempt: number;
  retryBackoff: BackoffPolicy;
}

export interface ItemResult {
  outcome: ItemOutcome;
  /** Bytes of the file (as read, or as planned when it could not be read). */
  bytes: number;
  /** Actual size minus planned size, to correct the run's byte total. */
  sizeDelta: number;
  errorClass?: ErrorClass;
  code?: string;
}

// Errors about the bucket or the credentials concern every file alike: the run fails instead of failing each item.
const RUN_LEVEL_S3_ERRORS = new Set([
  'NoSuchBucket', 'AccessDenied', 'AllAccessDisabled', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidBucketName',
  'AccountProblem', 'ExpiredToken', 'InvalidToken', 'CredentialsProviderError',
]);
const THROTTLING_NAMES = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'TooManyRequests', 'ServiceUnavailable']);
const FS_TRANSIENT = new Set(['EIO', 'ESTALE', 'EAGAIN', 'EINTR']);
const NETWORK_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH',
  'ENETDOWN', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT',
]);

interface ErrorShape {
  name?: string;
  code?: string;
  syscall?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

export function isThrottling(error: unknown): boolean {
  const e = (error ?? {}) as ErrorShape;
  const status = e.$metadata?.httpStatusCode;
  return (e.name !== undefined && THROTTLING_NAMES.has(e.name)) || status === 503 || status === 429;
}

/** Sorts an upload-stage error into an item failure; rethrows what concerns the whole run (or is a bug). */
function toItemFailure(error: unknown, item: PendingItem, context: ItemImportContext): ItemFailure {
  if (error instanceof ItemFailure) return error;
  if (error instanceof FileChangedDuringReadError) return new ItemFailure(error.code, `${item.relativePath}: ${error.message}`, 'transient');
  if (error instanceof UploadTimeoutError) return new ItemFailure(error.code, error.message, 'transient');
  const e = (error ?? {}) as ErrorShape;
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined || (e.name !== undefined && RUN_LEVEL_S3_ERRORS.has(e.name))) {
    if (e.name && RUN_LEVEL_S3_ERRORS.has(e.name)) {
      throw new PermanentJobError(`S3 refused the upload to bucket ${context.bucket}: ${e.name}: ${e.message}`, `S3_${e.name}`, {
        bucket: context.bucket,
        key: item.objectKey,
        file: item.relativePath,
      });
    }
    const { errorClass, code } = classifyError(error);
    return new ItemFailure(`S3_${code}`, `S3 ${status ?? ''} ${e.name ?? ''}: ${e.message ?? String(error)}`.replace(/\s+/g, ' '), errorClass);
  }
  if (typeof e.syscall === 'string' && typeof e.code === 'string') {
    if (NETWORK_CODES.has(e.code)) return new ItemFailure(`S3_${e.code}`, `S3 connection failed (${e.code})`, 'transient');
    if (e.code === 'EACCES' || e.code === 'EPERM') return new ItemFailure('UNREADABLE', `${item.relativePath} cannot be read (${e.code})`);
    if (e.code === 'ENOENT') return new ItemFailure('FILE_VANISHED', `${item.relativePath} no longer exists`);
    return new ItemFailure('READ_FAILED', `${item.relativePath} could not be read (${e.code})`, FS_TRANSIENT.has(e.code) ? 'transient' : 'permanent');
  }
  const { errorClass, code } = classifyError(error);
  if (errorClass === 'transient' && code !== 'UNKNOWN') {
    return new ItemFailure(`S3_${code}`, `S3 request failed: ${e.message ?? String(error)}`, 'transient');
  }
  throw error;
}

async function inFencedTransaction<T>(context: ItemImportContext, work: (tx: Queryable) => Promise<T>): Promise<T> {
  return withTransaction(context.pool, async (tx) => {
    await context.assertLeaseHeld(tx);
    return work(tx);
  });
}

type Uploaded = { kind: 'uploaded'; sha256: string; size: number; contentType: string };
type Verified = { kind: 'same'; sha256: string; size: number; document: DocumentRow } | { kind: 'changed'; sha256: string | undefined; size: number; document: DocumentRow };

/** Reads (and, for new files, uploads) the item; every error here is the item's, unless it concerns the run. */
async function transfer(context: ItemImportContext, item: PendingItem, existing: DocumentRow | undefined): Promise<Uploaded | Verified> {
  const opened = await openImportFile(context.realRoot, item.relativePath);
  try {
    if (existing) {
      if (opened.size !== existing.size) return { kind: 'changed', sha256: undefined, size: opened.size, document: existing };
      const local = await sha256OfFile(opened.handle, context.signal);
      return { kind: local.sha256 === existing.sha256 ? 'same' : 'changed', sha256: local.sha256, size: local.size, document: existing };
    }
    const contentType = contentTypeFor(item.relativePath);
    const upload = await uploadFileWithSha256({
      s3: context.s3,
      bucket: context.bucket,
      key: item.objectKey,
      contentType,
      file: opened.handle,
      size: opened.size,
      multipartThresholdBytes: context.multipartThresholdBytes,
      timeoutMs: context.requestTimeoutMs,
      signal: context.signal,
    });
    if (upload.sdkAttempts > 1) context.limiter.throttled();
    return { kind: 'uploaded', sha256: upload.sha256, size: upload.size, contentType };
  } finally {
    await opened.handle.close().catch(() => {});
  }
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

/** Writes the outcome of a transfer in one fenced transaction. */
async function commit(context: ItemImportContext, item: PendingItem, transferred: Uploaded | Verified, tries: number): Promise<ItemResult> {
  const sizeDelta = transferred.size - item.size;
  return inFencedTransaction(context, async (tx) => {
    if (transferred.kind === 'changed') {
      await markItemFailed(tx, context.jobId, item.itemNo, {
        code: 'CONTENT_CHANGED',
        message: changedMessage(item, transferred.document, transferred.sha256, transferred.size),
        errorClass: 'permanent',
        tries,
        sha256: transferred.sha256,
      });
      return { outcome: 'failed', bytes: transferred.size, sizeDelta, errorClass: 'permanent', code: 'CONTENT_CHANGED' };
    }
    if (transferred.kind === 'same') {
      const completion = { sha256: transferred.sha256, size: transferred.size, documentId: transferred.document.id, tries };
      await markItemCompleted(tx, context.jobId, item.itemNo, 'skipped', completion);
      return { outcome: 'skipped', bytes: transferred.size, sizeDelta };
    }
    const documentId = await insertDocument(tx, {
      tenantId: context.tenant,
      sourcePath: item.relativePath,
      sha256: transferred.sha256,
      size: transferred.size,
      contentType: transferred.contentType,
      bucket: context.bucket,
      objectKey: item.objectKey,
      importJobId: context.jobId,
    });
    if (documentId !== null) {
      await markItemCompleted(tx, context.jobId, item.itemNo, 'done', { sha256: transferred.sha256, size: transferred.size, documentId, tries });
      return { outcome: 'done', bytes: transferred.size, sizeDelta };
    }
    // Another run committed this key between our look-up and now (runs of overlapping sources at the same time).
    const other = (await findDocumentsByKeys(tx, context.bucket, [item.objectKey])).get(item.objectKey)!;
    if (other.sha256 === transferred.sha256) {
      await markItemCompleted(tx, context.jobId, item.itemNo, 'skipped', { sha256: other.sha256, size: other.size, documentId: other.id, tries });
      return { outcome: 'skipped', bytes: transferred.size, sizeDelta };
    }
    await markItemFailed(tx, context.jobId, item.itemNo, {
      code: 'CONCURRENT_CONFLICT',
      message:
        `job ${other.importJobId ?? '?'} imported ${item.objectKey} at the same time with different content (sha256 ` +
        `${other.sha256.slice(0, 16)}…); this run's upload (sha256 ${transferred.sha256.slice(0, 16)}…) may have replaced ` +
        'its object: check this key with `bulk-import audit` and import the file again',
      errorClass: 'permanent',
      tries,
      sha256: transferred.sha256,
    });
    return { outcome: 'failed', bytes: transferred.size, sizeDelta, errorClass: 'permanent', code: 'CONCURRENT_CONFLICT' };
  });
}

export async function importItem(context: ItemImportContext, item: PendingItem, existing: DocumentRow | undefined): Promise<ItemResult> {
  let tries = item.tries;
  for (let attempt = 1; ; attempt += 1) {
    tries += 1;
    let transferred: Uploaded | Verified;
    try {
      transferred = await transfer(context, item, existing);
    } catch (error) {
      if (context.signal.aborted) throw context.signal.reason;
      const failure = toItemFailure(error, item, context);
      if (failure.errorClass === 'transient' && attempt < context.triesPerAttempt) {
        if (isThrottling(error)) context.limiter.throttled();
        const delay = backoffDelayMs(context.retryBackoff, attempt);
        context.log.debug({ file: item.relativePath, key: item.objectKey, code: failure.code, retry_in_ms: delay }, 'file upload failed; retrying');
        await sleep(delay, undefined, { signal: context.signal }).catch(() => {
          throw context.signal.reason;
        });
        continue;
      }
      if (isThrottling(error)) context.limiter.throttled();
      context.log.warn({ file: item.relativePath, key: item.objectKey, code: failure.code, tries }, `file failed: ${failure.message}`);
      await inFencedTransaction(context, (tx) =>
        markItemFailed(tx, context.jobId, item.itemNo, { code: failure.code, message: failure.message, errorClass: failure.errorClass, tries }),
      );
      return { outcome: 'failed', bytes: item.size, sizeDelta: 0, errorClass: failure.errorClass, code: failure.code };
    }
    return commit(context, item, transferred, tries);
  }
}
