// One item of a mass import, exactly once: open the file (re-checked), then either
//   - no document at its key: stream it to S3 while hashing, then ONE fenced transaction inserts the documents row and
//     marks the item done (item-outcome-batcher.ts; several files may share that transaction). A crash between the
//     upload and the commit leaves only an object that the retry overwrites with the same bytes; a commit never
//     happens without its object.
//   - a document of the tenant already at its key: hash the file locally (no upload) — same content: the item is
//     skipped; changed content: the item fails with CONTENT_CHANGED and the stored object and row stay untouched.
//   - another tenant's document at its key: the item fails with KEY_OF_OTHER_TENANT, nothing is read or uploaded.
// S3 errors worth a retry are retried here with backoff; throttling lowers the run's parallelism.
// A file that changes while it is imported (fstat on the open descriptor before the first byte, after the last byte
// read and again once the object is written: size, mtime, ctime in ns) is never committed: s3-upload.ts refuses to
// finish an object from a torn read, and an object written from a read that was consistent but is no longer the
// file's content (changed while its bytes were sent) is deleted before the file is read again. After
// `changedReadsPerItem` such reads the item fails with FILE_CHANGED_DURING_IMPORT (permanent): no row, no object.
// A crash anywhere in there leaves the item pending and at most an object without a row — never torn bytes (those
// never become an object), never a row: the resumed run reads the file again and overwrites or deletes that object.
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { withTransaction, type Pool, type Queryable } from '../../db/pool.js';
import type { Logger } from '../../logger.js';
import { backoffDelayMs, type BackoffPolicy } from '../../queue/backoff.js';
import { classifyError, PermanentJobError, TRANSIENT_NODE_CODES } from '../../queue/errors.js';
import { LeaseLostError } from '../../queue/lease.js';
import {
  assertUnchanged, deleteObject, fileVersionOf, FileChangedDuringReadError, sameVersion, UploadTimeoutError, uploadFileWithSha256,
} from '../../storage/s3-upload.js';
import type { AdaptiveConcurrency } from './adaptive-concurrency.js';
import type { UploadCeiling } from './ceiling.js';
import { contentTypeFor } from './content-type.js';
import { findDocumentsByKeys, type DocumentRow } from './documents.js';
import { isCredentialsUnavailable, noCredentialsError } from './s3-outage-watch.js';
import { sha256OfFile } from './file-sha256.js';
import { openImportFile } from './import-file-access.js';
import type { PendingItem } from './items-table.js';
import { ItemFailure } from './item-failure.js';
import type { ItemOutcomeBatcher, TransferOutcome } from './item-outcome-batcher.js';

export interface ItemImportContext {
  /** Looks up the documents table before an object of the run is deleted. */
  pool: Pool;
  /** The run's lease check (JobContext.assertLeaseHeld): throws LeaseLostError once another attempt owns the run. */
  assertLeaseHeld: (db: Queryable) => Promise<void>;
  /**
   * Resolves while the run's lease is known to hold (JobContext.leaseConfirmed), awaited before an upload makes its
   * object: an attempt cut off from the database past its lease must not write over what the attempt that took the run
   * over wrote at the key (S3 writes are not fenced by the database).
   */
  leaseConfirmed: () => Promise<void>;
  jobId: number;
  tenant: string;
  bucket: string;
  realRoot: string;
  /** Real path of the run's source directory: files are read only below it (import-file-access.ts). */
  sourceDir: string;
  s3: S3Client;
  /** Stops the item's work at once (cancel, lease lost, the run failing): uploads are aborted, also on S3. */
  signal: AbortSignal;
  /**
   * Fires on every stop, shutdown included: work under way goes on (see import-loop.ts), but once it fired an item
   * starts no further try — it stays pending for the worker that resumes the run.
   */
  stopSignal: AbortSignal;
  log: Logger;
  /** Records outcomes in fenced, batched transactions. */
  outcomes: ItemOutcomeBatcher;
  limiter: AdaptiveConcurrency;
  /** The run's maxFileBytes and maxTotalBytes, applied to each file at the size it has when opened for upload. */
  ceiling: UploadCeiling;
  multipartThresholdBytes: number;
  bufferLimitBytes: number;
  requestTimeoutMs: number;
  /** Upload tries of one item within one attempt of the run. */
  triesPerAttempt: number;
  /** Reads of a file that keeps changing while it is imported, before it fails with FILE_CHANGED_DURING_IMPORT. */
  changedReadsPerItem: number;
  retryBackoff: BackoffPolicy;
  /** Bytes of the item's current try moved so far (0 when a try starts): progress while a big file uploads. */
  onTransferProgress?: ((item: PendingItem, bytes: number) => void) | undefined;
}

// Errors about the bucket or the credentials concern every file alike: the run fails instead of failing each item.
const RUN_LEVEL_S3_ERRORS = new Set([
  'NoSuchBucket', 'AccessDenied', 'AllAccessDisabled', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'InvalidBucketName',
  'AccountProblem', 'InvalidToken',
]);
const THROTTLING_NAMES = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'TooManyRequests', 'ServiceUnavailable']);
// The bytes S3 received did not match what was sent (signed SHA-256, Content-Length): a transfer fault, worth a retry.
const CORRUPTED_IN_TRANSIT = new Set(['XAmzContentSHA256Mismatch', 'BadDigest', 'IncompleteBody']);
const FS_TRANSIENT = new Set(['EIO', 'ESTALE', 'EAGAIN', 'EINTR']);

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
  if (error instanceof UploadTimeoutError) return new ItemFailure(error.code, error.message, 'transient');
  const e = (error ?? {}) as ErrorShape;
  const status = e.$metadata?.httpStatusCode;
  // No credentials to sign with just now (the task role's endpoint did not answer a refresh), or ones that expired on
  // the way: nothing about the file nor the bucket, and gone at the next refresh. Transient, and an S3 outage when
  // file after file fails so (s3-outage-watch.ts): the run waits without spending an attempt, within the outage budget.
  // Only once the client has had credentials: a worker that never had any fails the run at once (noCredentialsError).
  const missing = noCredentialsError(context.s3, context.bucket, error);
  if (missing) throw missing;
  if (isCredentialsUnavailable(error)) {
    return new ItemFailure(`S3_${e.name}`, `S3 credentials unavailable: ${e.name}: ${e.message ?? String(error)}`, 'transient');
  }
  if (status !== undefined || (e.name !== undefined && RUN_LEVEL_S3_ERRORS.has(e.name))) {
    if (e.name && RUN_LEVEL_S3_ERRORS.has(e.name)) {
      throw new PermanentJobError(`S3 refused the upload to bucket ${context.bucket}: ${e.name}: ${e.message}`, `S3_${e.name}`, {
        bucket: context.bucket,
        key: item.objectKey,
        file: item.relativePath,
      }, { internal: true });
    }
    const { errorClass, code } = classifyError(error);
    const retryable = errorClass === 'transient' || (e.name !== undefined && CORRUPTED_IN_TRANSIT.has(e.name));
    return new ItemFailure(`S3_${code}`, `S3 ${status ?? ''} ${e.name ?? ''}: ${e.message ?? String(error)}`.replace(/\s+/g, ' '), retryable ? 'transient' : 'permanent');
  }
  if (typeof e.syscall === 'string' && typeof e.code === 'string') {
    if (TRANSIENT_NODE_CODES.has(e.code)) return new ItemFailure(`S3_${e.code}`, `S3 connection failed (${e.code})`, 'transient');
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

/** What the documents table holds at an item's key when its page was looked up (documents.ts). */
export interface ExistingAtKey {
  own: DocumentRow | undefined;
  otherTenant: DocumentRow | undefined;
}

/** The longest a discard's DeleteObject may take, inside its transaction. */
const DISCARD_TIMEOUT_MS = 15_000;

/**
 * Deletes the object a try wrote from a file that changed while it was sent, unless a document points to the key by
 * now (another run of the tenant committed it meanwhile: its row is not ours to orphan; CONCURRENT_CONFLICT applies),
 * or this worker lost the run: a worker that froze past its lease must not delete what the attempt that took the run
 * over may have written at the key since (its row not yet committed).
 * Best effort: left behind, the object is one without a row — overwritten by the next read, or reported by `audit`.
 */
async function discardObject(context: ItemImportContext, item: PendingItem): Promise<void> {
  try {
    // In one transaction that holds the lease check's lock (FOR KEY SHARE on the job row) until the delete is done: a
    // claim of the run takes FOR UPDATE, so no other attempt can take it over, and commit at the key, in between.
    await withTransaction(context.pool, async (tx) => {
      await context.assertLeaseHeld(tx);
      const found = await findDocumentsByKeys(tx, context.bucket, context.tenant, [item.objectKey]);
      if (found.own.size > 0 || found.otherTenants.size > 0) return;
      // Bounded well under the session's idle-in-transaction timeout (2 min): the lock also holds up a cancel.
      await deleteObject(context.s3, context.bucket, item.objectKey, Math.min(context.requestTimeoutMs, DISCARD_TIMEOUT_MS));
    });
  } catch (error) {
    if (context.signal.aborted) throw context.signal.reason;
    if (error instanceof LeaseLostError) throw error;
    context.log.warn({ file: item.relativePath, key: item.objectKey, err: error }, 'could not delete the object of a file that changed while it was sent');
  }
}

/** Reads (and, for new files, uploads) the item; every error here is the item's, unless it concerns the run. */
async function transfer(context: ItemImportContext, item: PendingItem, found: ExistingAtKey, tries: number): Promise<TransferOutcome> {
  if (found.otherTenant) return { kind: 'other-tenant', item, tries, document: found.otherTenant };
  const existing = found.own;
  const opened = await openImportFile(context, item.relativePath);
  try {
    if (existing) {
      if (opened.size !== existing.size) return { kind: 'changed', item, tries, sha256: undefined, size: opened.size, document: existing };
      const local = await sha256OfFile(opened.handle, context.signal);
      // A hash of a torn read would call an unchanged file changed (or the reverse): read it again instead.
      await assertUnchanged(opened.handle, opened.version, local.size);
      const kind = local.sha256 === existing.sha256 ? 'same' : 'changed';
      return { kind, item, tries, sha256: local.sha256, size: local.size, document: existing };
    }
    // The plan checked the sizes it saw; the upload sends the size the file has now.
    context.ceiling.admit(item, opened.size);
    const contentType = contentTypeFor(item.relativePath);
    const upload = await uploadFileWithSha256({
      s3: context.s3,
      bucket: context.bucket,
      key: item.objectKey,
      contentType,
      file: opened.handle,
      size: opened.size,
      version: opened.version,
      multipartThresholdBytes: context.multipartThresholdBytes,
      bufferLimitBytes: context.bufferLimitBytes,
      timeoutMs: context.requestTimeoutMs,
      signal: context.signal,
      beforeObject: context.leaseConfirmed,
      onProgress: context.onTransferProgress && ((bytes) => context.onTransferProgress!(item, bytes)),
    });
    // The object holds one consistent read (s3-upload.ts checked it). If the file changed since, while those bytes
    // were being sent, the object is not the file's content any more: delete it and read the file again, rather than
    // record a document of a version that is already gone. (A crash before the delete leaves an object without a row
    // and the item pending: the next attempt reads the file again and overwrites it.)
    const after = await fileVersionOf(opened.handle);
    if (!sameVersion(opened.version, after)) {
      await discardObject(context, item);
      throw FileChangedDuringReadError.ofVersions(opened.version, after);
    }
    if (upload.sdkAttempts > 1) context.limiter.throttled();
    return { kind: 'uploaded', item, tries, sha256: upload.sha256, size: upload.size, contentType };
  } finally {
    await opened.handle.close().catch(() => {});
  }
}

/** Waits before the next try of an item; shutting down, there is none (the item stays pending for the next worker). */
async function beforeNextTry(context: ItemImportContext, delayMs: number): Promise<void> {
  if (context.stopSignal.aborted) throw context.stopSignal.reason;
  await sleep(delayMs, undefined, { signal: context.stopSignal }).catch(() => {
    throw context.signal.aborted ? context.signal.reason : context.stopSignal.reason;
  });
}

/**
 * Transfers one item — with retries — and says what became of it; the caller records that outcome (the upload slot
 * is free again before the commit, so S3 never waits for the database).
 */
export async function transferItem(context: ItemImportContext, item: PendingItem, found: ExistingAtKey): Promise<TransferOutcome> {
  let tries = item.tries;
  let transientFailures = 0;
  let changedReads = 0;
  for (;;) {
    tries += 1;
    try {
      return await transfer(context, item, found, tries);
    } catch (error) {
      if (context.signal.aborted) throw context.signal.reason;
      if (error instanceof LeaseLostError) throw error;
      if (error instanceof FileChangedDuringReadError) {
        changedReads += 1;
        if (changedReads < context.changedReadsPerItem) {
          const delay = backoffDelayMs(context.retryBackoff, changedReads);
          context.log.info({ file: item.relativePath, key: item.objectKey, change: error.detail, retry_in_ms: delay }, 'file changed while it was imported; reading it again');
          await beforeNextTry(context, delay);
          continue;
        }
        const message =
          `${item.relativePath} changed while it was imported, on each of ${changedReads} reads (last: ${error.detail}); ` +
          'it was not imported — no document (an object of an earlier read may stay, reported by audit) — since the bytes read were not one version of the file. ' +
          'Import it again once it is no longer being written';
        // Logged where the failure is recorded (import-loop.ts): an S3 outage holds failures back instead.
        return { kind: 'failed', item, tries, code: error.code, message, errorClass: 'permanent' };
      }
      const failure = toItemFailure(error, item, context);
      const throttling = isThrottling(error);
      transientFailures += failure.errorClass === 'transient' ? 1 : 0;
      if (failure.errorClass === 'transient' && transientFailures < context.triesPerAttempt) {
        if (throttling) context.limiter.throttled();
        const delay = backoffDelayMs(context.retryBackoff, transientFailures);
        context.log.debug({ file: item.relativePath, key: item.objectKey, code: failure.code, retry_in_ms: delay }, 'file upload failed; retrying');
        // Shutting down: no new try. The item stays pending (this try is not recorded) for the worker that resumes.
        await beforeNextTry(context, delay);
        continue;
      }
      if (throttling) context.limiter.throttled();
      return { kind: 'failed', item, tries, code: failure.code, message: failure.message, errorClass: failure.errorClass };
    }
  }
}
