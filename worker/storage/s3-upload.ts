// Uploads one open file to S3 while computing its SHA-256, with memory flat in the file's size:
//   small files (below min(threshold, BUFFER_LIMIT))  read into one buffer, hashed, one PutObject (the SDK can retry it)
//   middle files (only when the threshold is raised)   streamed through the hash into one PutObject
//   large files (from the multipart threshold)         streamed through the hash into a multipart upload
//                                                       (@aws-sdk/lib-storage: parts of ≤ 8 MiB, two in flight)
// The object is written in one piece or not at all (S3 PUT and CompleteMultipartUpload are atomic); an aborted
// multipart upload is aborted on S3 too. The caller records the hash only after the upload succeeded.
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { AbortMultipartUploadCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

const MiB = 1024 * 1024;
/** Files below this size (and below the multipart threshold) are read into memory: the SDK can then retry them. */
export const BUFFER_LIMIT_BYTES = 16 * MiB;
const MIN_PART_BYTES = 5 * MiB;
const DEFAULT_PART_BYTES = 8 * MiB;
const MAX_PARTS = 10_000;
const PARTS_IN_FLIGHT = 2;

export interface UploadRequest {
  s3: S3Client;
  bucket: string;
  key: string;
  contentType: string;
  file: FileHandle;
  /** Size of the file when it was opened; the upload fails if the file does not hold exactly this many bytes. */
  size: number;
  multipartThresholdBytes: number;
  /** A request (or a multipart upload without progress) taking longer than this is aborted as a timeout. */
  timeoutMs: number;
  /** The job's signal: aborting it aborts the upload. */
  signal: AbortSignal;
  /** Override of BUFFER_LIMIT_BYTES (tests). */
  bufferLimitBytes?: number;
}

export interface UploadResult {
  sha256: string;
  size: number;
  method: 'put' | 'streamed-put' | 'multipart';
  etag: string | undefined;
  /** Requests the SDK needed for a single PUT: more than 1 means it retried (a throttling or server error). */
  sdkAttempts: number;
}

/** The file changed while it was read: the bytes sent are not a consistent copy. Worth another try. */
export class FileChangedDuringReadError extends Error {
  readonly code = 'FILE_CHANGED_DURING_READ';
  constructor(expected: number, actual: number) {
    super(`the file changed while it was read (expected ${expected} bytes, read ${actual})`);
    this.name = 'FileChangedDuringReadError';
  }
}

/** An S3 request (or a multipart upload) made no progress within the timeout. */
export class UploadTimeoutError extends Error {
  readonly code = 'S3_TIMEOUT';
  constructor(timeoutMs: number) {
    super(`S3 made no progress for ${timeoutMs} ms; the upload was aborted`);
    this.name = 'TimeoutError';
  }
}

export async function uploadFileWithSha256(request: UploadRequest): Promise<UploadResult> {
  const bufferLimit = request.bufferLimitBytes ?? BUFFER_LIMIT_BYTES;
  if (request.size >= request.multipartThresholdBytes) return uploadMultipart(request);
  if (request.size < bufferLimit) return uploadBuffered(request);
  return uploadStreamed(request);
}

/** Reads exactly `size` bytes and checks that the file ends there. */
async function readWhole(file: FileHandle, size: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(size + 1);
  let filled = 0;
  for (;;) {
    const { bytesRead } = await file.read(buffer, filled, buffer.length - filled, filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
    if (filled > size) throw new FileChangedDuringReadError(size, filled);
  }
  if (filled !== size) throw new FileChangedDuringReadError(size, filled);
  return buffer.subarray(0, size);
}

/**
 * The signal of one S3 request: it fires when the job's signal does, or after the timeout. Built from a timer of our
 * own, not AbortSignal.any([signal, AbortSignal.timeout()]): Node 20 holds the sources of such a signal weakly, so
 * the timeout signal can be garbage-collected while the request waits — and a stalled request then never times out.
 */
function requestDeadline(request: UploadRequest): { signal: AbortSignal; clear(): void } {
  const controller = new AbortController();
  const onAbort = () => controller.abort(request.signal.reason);
  const timer = setTimeout(() => controller.abort(new UploadTimeoutError(request.timeoutMs)), request.timeoutMs);
  if (request.signal.aborted) onAbort();
  else request.signal.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    clear: () => {
      clearTimeout(timer);
      request.signal.removeEventListener('abort', onAbort);
    },
  };
}

/** Turns the SDK's abort into the job's reason or a timeout, so callers can tell them apart. */
function explainAbort(error: unknown, request: UploadRequest, signal: AbortSignal): unknown {
  if (request.signal.aborted) return request.signal.reason;
  if (signal.aborted || (error as { name?: string }).name === 'AbortError') return new UploadTimeoutError(request.timeoutMs);
  return error;
}

async function uploadBuffered(request: UploadRequest): Promise<UploadResult> {
  const body = await readWhole(request.file, request.size);
  const sha256 = createHash('sha256').update(body).digest('hex');
  const deadline = requestDeadline(request);
  const command = new PutObjectCommand({
    Bucket: request.bucket,
    Key: request.key,
    Body: body,
    ContentLength: body.length,
    ContentType: request.contentType,
    // S3 verifies the object against our SHA-256 and stores it as the object's checksum; the SDK then computes no
    // checksum of its own (its default CRC32 against AWS would be another pass over the bytes).
    ChecksumSHA256: Buffer.from(sha256, 'hex').toString('base64'),
  });
  // SigV4 signs the payload's SHA-256 (x-amz-content-sha256); the SDK would hash the body a second time. Giving it
  // ours saves that pass, and S3 then refuses the PUT unless the bytes it received have exactly the hash we record.
  command.middlewareStack.add(
    (next) => async (args) => {
      const httpRequest = args.request as { headers?: Record<string, string> };
      if (httpRequest.headers) httpRequest.headers['x-amz-content-sha256'] = sha256;
      return next(args);
    },
    { step: 'build', name: 'massImportPayloadSha256' },
  );
  try {
    const output = await request.s3.send(command, { abortSignal: deadline.signal });
    return { sha256, size: body.length, method: 'put', etag: output.ETag, sdkAttempts: output.$metadata.attempts ?? 1 };
  } catch (error) {
    throw explainAbort(error, request, deadline.signal);
  } finally {
    deadline.clear();
  }
}

/** Counts and hashes the bytes that flow through it; remembers when the last byte passed (stall detection). */
class HashingStream extends Transform {
  private readonly hash = createHash('sha256');
  bytes = 0;
  lastProgressAt = Date.now();

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.lastProgressAt = Date.now();
    callback(null, chunk);
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

function hashingReader(request: UploadRequest): HashingStream {
  const hashing = new HashingStream({ highWaterMark: MiB });
  const source = request.file.createReadStream({ start: 0, autoClose: false, highWaterMark: MiB });
  source.on('error', (error) => hashing.destroy(error));
  source.pipe(hashing);
  return hashing;
}

async function checkUnchanged(request: UploadRequest, hashing: HashingStream): Promise<void> {
  const now = await request.file.stat();
  if (hashing.bytes !== request.size || now.size !== request.size) {
    throw new FileChangedDuringReadError(request.size, Math.max(hashing.bytes, now.size));
  }
}

async function uploadStreamed(request: UploadRequest): Promise<UploadResult> {
  const hashing = hashingReader(request);
  const deadline = requestDeadline(request);
  try {
    const output = await request.s3.send(
      new PutObjectCommand({
        Bucket: request.bucket,
        Key: request.key,
        Body: hashing,
        ContentLength: request.size,
        ContentType: request.contentType,
      }),
      { abortSignal: deadline.signal },
    );
    await checkUnchanged(request, hashing);
    return { sha256: hashing.digest(), size: hashing.bytes, method: 'streamed-put', etag: output.ETag, sdkAttempts: 1 };
  } catch (error) {
    hashing.destroy();
    throw explainAbort(error, request, deadline.signal);
  } finally {
    deadline.clear();
  }
}

/**
 * Best effort: frees the parts of a failed multipart upload. If this fails too (or the process dies first), the
 * parts stay invisible and billable until the bucket's AbortIncompleteMultipartUpload lifecycle rule removes them.
 */
async function abortMultipartUpload(request: UploadRequest, uploadId: string | undefined): Promise<void> {
  if (!uploadId) return;
  await request.s3
    .send(new AbortMultipartUploadCommand({ Bucket: request.bucket, Key: request.key, UploadId: uploadId }), {
      abortSignal: AbortSignal.timeout(request.timeoutMs),
    })
    .catch(() => {});
}

export function partSizeFor(size: number, multipartThresholdBytes: number): number {
  const forPartLimit = Math.ceil(size / MAX_PARTS / MiB) * MiB;
  return Math.max(MIN_PART_BYTES, Math.min(multipartThresholdBytes, DEFAULT_PART_BYTES), forPartLimit);
}

async function uploadMultipart(request: UploadRequest): Promise<UploadResult> {
  const hashing = hashingReader(request);
  const upload = new Upload({
    client: request.s3,
    params: { Bucket: request.bucket, Key: request.key, Body: hashing, ContentType: request.contentType },
    partSize: partSizeFor(request.size, request.multipartThresholdBytes),
    queueSize: PARTS_IN_FLIGHT,
    // We abort the multipart upload ourselves on failure: lib-storage would report a failure of its abort request
    // (e.g. a server without AbortMultipartUpload) instead of the error that made the upload fail.
    leavePartsOnError: true,
  });
  let timedOut = false;
  // A finished part is progress too (the last parts and the completion move no new bytes through the hash).
  upload.on('httpUploadProgress', () => {
    hashing.lastProgressAt = Date.now();
  });
  const onAbort = () => void upload.abort();
  request.signal.addEventListener('abort', onAbort, { once: true });
  // lib-storage has no per-request timeout: a stalled part would hang the item. Abort when no byte moved for a while.
  const watchdog = setInterval(() => {
    if (Date.now() - hashing.lastProgressAt > request.timeoutMs) {
      timedOut = true;
      void upload.abort();
    }
  }, Math.max(50, Math.floor(request.timeoutMs / 4)));
  try {
    const output = await upload.done();
    await checkUnchanged(request, hashing);
    return { sha256: hashing.digest(), size: hashing.bytes, method: 'multipart', etag: output.ETag, sdkAttempts: 1 };
  } catch (error) {
    hashing.destroy();
    await abortMultipartUpload(request, upload.uploadId);
    if (request.signal.aborted) throw request.signal.reason;
    if (timedOut) throw new UploadTimeoutError(request.timeoutMs);
    throw error;
  } finally {
    clearInterval(watchdog);
    request.signal.removeEventListener('abort', onAbort);
  }
}
