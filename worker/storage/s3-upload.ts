// Uploads one open file to S3 while computing its SHA-256, with memory flat in the file's size:
//   small files (below min(threshold, BUFFER_LIMIT))  read into one buffer, hashed, one PutObject (the SDK can retry it)
//   middle files (only when the threshold is raised)   streamed through the hash into one PutObject
//   large files (from the multipart threshold)         streamed through the hash into a multipart upload
//                                                       (@aws-sdk/lib-storage: parts of ≤ 8 MiB, two in flight)
// The object is written in one piece or not at all (S3 PUT and CompleteMultipartUpload are atomic); an aborted
// multipart upload is aborted on S3 too. The caller records the hash only after the upload succeeded.
// A file rewritten while it is read (same size, `dd conv=notrunc`) would give an object of old and new bytes that
// never existed on disk. So the file's version — size, mtime and ctime from fstat on the open descriptor, in
// nanoseconds, as rsync and `aws s3 sync` judge a file — is taken before the first byte and again after the last one
// was read, and the last bytes are held back until both agree: the PUT's body, or the multipart upload's last part
// (hence its CompleteMultipartUpload), never leaves before the read is known to be a consistent copy. A change fails
// the upload with FileChangedDuringReadError before any object exists (multipart uploads are aborted on S3). The same
// hold lets the caller check, last, that it may still write the object (beforeObject: the run's lease).
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import {
  AbortMultipartUploadCommand, CreateMultipartUploadCommand, DeleteObjectCommand, PutObjectCommand, UploadPartCommand,
  type CreateMultipartUploadCommandOutput, type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';

const MiB = 1024 * 1024;
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
  /**
   * Files below this size (and below the multipart threshold) are read into memory whole: the SDK can then retry
   * them. Larger ones are streamed (MASS_IMPORT_BUFFER_LIMIT_BYTES).
   */
  bufferLimitBytes: number;
  /**
   * Awaited just before the upload can make the object (before the PUT of a buffered file; before the last bytes of a
   * streamed PUT or of a multipart upload's last part leave): a rejection stops the upload before any object exists.
   * The mass import confirms there that the run's lease still holds (JobContext.leaseConfirmed).
   */
  beforeObject?: (() => Promise<void>) | undefined;
  /**
   * The file's version when it was opened (before its first byte is read); the upload fails with
   * FileChangedDuringReadError unless the file still has it after the last byte. Taken here when not given.
   */
  version?: FileVersion | undefined;
  /**
   * Bytes of this upload moved so far (multipart: parts S3 acknowledged; single PUT: bytes read for the request), for
   * progress. Starts again from 0 on each call of uploadFileWithSha256.
   */
  onProgress?: ((bytes: number) => void) | undefined;
}

export interface UploadResult {
  sha256: string;
  size: number;
  method: 'put' | 'streamed-put' | 'multipart';
  etag: string | undefined;
  /** Requests the SDK needed for a single PUT: more than 1 means it retried (a throttling or server error). */
  sdkAttempts: number;
}

/**
 * What fstat says about whether a file's bytes changed: its size, and its mtime and ctime in nanoseconds (bigint
 * stats: a Number of milliseconds would round two writes in the same millisecond together). A write through any
 * descriptor, `dd conv=notrunc` included, moves mtime and ctime; setting mtime back (touch -d, rsync -t) still moves
 * ctime, which no user can set.
 */
export interface FileVersion {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export async function fileVersionOf(file: FileHandle): Promise<FileVersion> {
  const stats = await file.stat({ bigint: true });
  return { size: stats.size, mtimeNs: stats.mtimeNs, ctimeNs: stats.ctimeNs };
}

export function sameVersion(a: FileVersion, b: FileVersion): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}

function describeChange(before: FileVersion, after: FileVersion): string {
  const changes: string[] = [];
  if (before.size !== after.size) changes.push(`size ${before.size} → ${after.size} bytes`);
  if (before.mtimeNs !== after.mtimeNs) changes.push('mtime moved');
  if (before.ctimeNs !== after.ctimeNs) changes.push('ctime moved');
  return changes.join(', ');
}

/**
 * The file changed while it was read (or, see mass-import/file-transfer.ts, while its bytes were being sent): the bytes are not a
 * copy of one version of the file. Worth another read, a bounded number of times.
 */
export class FileChangedDuringReadError extends Error {
  readonly code = 'FILE_CHANGED_DURING_IMPORT';
  constructor(readonly detail: string) {
    super(`the file changed while it was read (${detail})`);
    this.name = 'FileChangedDuringReadError';
  }

  static ofVersions(before: FileVersion, after: FileVersion): FileChangedDuringReadError {
    return new FileChangedDuringReadError(describeChange(before, after));
  }

  static ofSize(expected: number, read: number): FileChangedDuringReadError {
    return new FileChangedDuringReadError(`expected ${expected} bytes, read ${read}`);
  }
}

/** Throws FileChangedDuringReadError unless the open file still has the version `before` and `bytesRead` bytes. */
export async function assertUnchanged(file: FileHandle, before: FileVersion, bytesRead?: number): Promise<void> {
  const after = await fileVersionOf(file);
  if (!sameVersion(before, after)) throw FileChangedDuringReadError.ofVersions(before, after);
  if (bytesRead !== undefined && BigInt(bytesRead) !== before.size) throw FileChangedDuringReadError.ofSize(Number(before.size), bytesRead);
}

/** An S3 request (or a multipart upload) made no progress within the timeout, or a PUT did not finish within its deadline. */
export class UploadTimeoutError extends Error {
  readonly code = 'S3_TIMEOUT';
  constructor(timeoutMs: number, what = 'made no progress for') {
    super(`S3 ${what} ${timeoutMs} ms; the upload was aborted`);
    this.name = 'TimeoutError';
  }
}

type VersionedRequest = UploadRequest & { version: FileVersion };

/** The S3 client's request timeout fired (requestTimeout, socketTimeout): no answer from S3 at all, not an error answer. */
function isRequestTimeout(error: unknown): boolean {
  const e = error as { name?: unknown; $metadata?: { httpStatusCode?: number } } | null;
  return e?.name === 'TimeoutError' && e.$metadata?.httpStatusCode === undefined;
}

export async function uploadFileWithSha256(request: UploadRequest): Promise<UploadResult> {
  const versioned: VersionedRequest = { ...request, version: request.version ?? (await fileVersionOf(request.file)) };
  versioned.onProgress?.(0);
  if (request.size >= request.multipartThresholdBytes) return uploadMultipart(versioned);
  if (request.size < request.bufferLimitBytes) return uploadBuffered(versioned);
  return uploadStreamed(versioned);
}

/** Reads exactly `size` bytes, checks that the file ends there and did not change meanwhile. */
async function readWhole(request: VersionedRequest): Promise<Buffer> {
  const { file, size } = request;
  const buffer = Buffer.allocUnsafe(size + 1);
  let filled = 0;
  for (;;) {
    const { bytesRead } = await file.read(buffer, filled, buffer.length - filled, filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
    if (filled > size) throw FileChangedDuringReadError.ofSize(size, filled);
    request.onProgress?.(filled);
  }
  await assertUnchanged(file, request.version, filled);
  return buffer.subarray(0, size);
}

/** How a single PUT's timeout reads: its deadline covers the whole body (partTimeoutFor), not idle time. */
const PUT_DEADLINE = 'did not finish the PUT within';

/**
 * The signal of one S3 request: it fires when the job's signal does, or after the timeout. Built from a timer of our
 * own, not AbortSignal.any([signal, AbortSignal.timeout()]): Node 20 holds the sources of such a signal weakly, so
 * the timeout signal can be garbage-collected while the request waits — and a stalled request then never times out.
 */
function requestDeadline(request: UploadRequest, timeoutMs: number): { signal: AbortSignal; abort(reason: unknown): void; clear(): void } {
  const controller = new AbortController();
  const onAbort = () => controller.abort(request.signal.reason);
  const timer = setTimeout(() => controller.abort(new UploadTimeoutError(timeoutMs, PUT_DEADLINE)), timeoutMs);
  if (request.signal.aborted) onAbort();
  else request.signal.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    abort: (reason) => controller.abort(reason),
    clear: () => {
      clearTimeout(timer);
      request.signal.removeEventListener('abort', onAbort);
    },
  };
}

/** Turns the SDK's abort into the job's reason, a change of the file or a timeout, so callers can tell them apart. */
function explainAbort(error: unknown, request: UploadRequest, signal: AbortSignal, timeoutMs: number): unknown {
  if (request.signal.aborted) return request.signal.reason;
  // The deadline's own reasons: its timeout, or the body failing (the file changed, or could not be read).
  if (signal.aborted) return signal.reason instanceof Error ? signal.reason : new UploadTimeoutError(timeoutMs, PUT_DEADLINE);
  if ((error as { name?: string }).name === 'AbortError') return new UploadTimeoutError(timeoutMs, PUT_DEADLINE);
  return error;
}

async function uploadBuffered(request: VersionedRequest): Promise<UploadResult> {
  const body = await readWhole(request);
  const sha256 = createHash('sha256').update(body).digest('hex');
  await request.beforeObject?.();
  // A PUT's deadline covers sending its whole body: the time of a part of its size (partTimeoutFor).
  const timeoutMs = partTimeoutFor(body.length, request.timeoutMs);
  const deadline = requestDeadline(request, timeoutMs);
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
    throw explainAbort(error, request, deadline.signal, timeoutMs);
  } finally {
    deadline.clear();
  }
}

/**
 * Counts and hashes the bytes that flow through it; remembers when the last byte passed (stall detection). The
 * latest chunk is held back until the next one arrives, and the last one until the file is known not to have changed
 * since `version` (fstat after the last byte): a consumer never sees the end of a torn read, so neither a PUT's body
 * nor a multipart upload's last part goes out, and the stream fails with FileChangedDuringReadError instead.
 */
class HashingStream extends Transform {
  private readonly hash = createHash('sha256');
  private held: Buffer | undefined;
  bytes = 0;
  lastProgressAt = Date.now();

  constructor(
    private readonly request: VersionedRequest,
    /** Report the bytes read as progress (a streamed PUT; a multipart upload reports acknowledged parts instead). */
    private readonly reportsRead = false,
  ) {
    super({ highWaterMark: MiB });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    this.lastProgressAt = Date.now();
    // Bytes beyond the size the upload announced (Content-Length) would be cut off by S3: the file grew. Fail now.
    if (this.bytes > this.request.size) return callback(FileChangedDuringReadError.ofSize(this.request.size, this.bytes));
    if (this.reportsRead) this.request.onProgress?.(this.bytes);
    const previous = this.held;
    this.held = chunk;
    callback(null, previous);
  }

  override _flush(callback: TransformCallback): void {
    assertUnchanged(this.request.file, this.request.version, this.bytes)
      .then(() => this.request.beforeObject?.())
      .then(
        () => callback(null, this.held),
        (error: unknown) => callback(error as Error),
      );
  }

  digest(): string {
    return this.hash.digest('hex');
  }
}

function hashingReader(request: VersionedRequest, reportsRead = false): HashingStream {
  const hashing = new HashingStream(request, reportsRead);
  const source = request.file.createReadStream({ start: 0, autoClose: false, highWaterMark: MiB });
  source.on('error', (error) => hashing.destroy(error));
  source.pipe(hashing);
  return hashing;
}

async function uploadStreamed(request: VersionedRequest): Promise<UploadResult> {
  const hashing = hashingReader(request, true);
  const timeoutMs = partTimeoutFor(request.size, request.timeoutMs);
  const deadline = requestDeadline(request, timeoutMs);
  // A body stream that fails does not end the HTTP request by itself (it would wait for the missing bytes): abort it,
  // with the file's change as the reason. S3 stores nothing for a PUT whose body ended short of its Content-Length.
  hashing.once('error', (error) => deadline.abort(error));
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
    return { sha256: hashing.digest(), size: hashing.bytes, method: 'streamed-put', etag: output.ETag, sdkAttempts: 1 };
  } catch (error) {
    hashing.destroy();
    throw explainAbort(error, request, deadline.signal, timeoutMs);
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
      requestTimeout: request.timeoutMs,
    })
    .catch(() => {});
}

export function partSizeFor(size: number, multipartThresholdBytes: number): number {
  const forPartLimit = Math.ceil(size / MAX_PARTS / MiB) * MiB;
  return Math.max(MIN_PART_BYTES, Math.min(multipartThresholdBytes, DEFAULT_PART_BYTES), forPartLimit);
}

/**
 * How long one request that sends `bytes` may take: the request timeout for up to the default part size (8 MiB), in
 * proportion for more (a 525 MiB part of a 5 TiB file: 66 times as long), so every request is asked the same slowest
 * rate — a part, and a single PUT alike. The SDK's `requestTimeout` (and our deadline) bounds a request until its
 * answer's headers, the whole upload of its body included, not idle time: a fixed one cut off a large single PUT
 * (MASS_IMPORT_MULTIPART_THRESHOLD_BYTES may be up to 5 GiB) on a link that would carry every part in time.
 */
export function partTimeoutFor(partSize: number, timeoutMs: number): number {
  return Math.max(timeoutMs, Math.ceil((timeoutMs * partSize) / DEFAULT_PART_BYTES));
}

/**
 * Deletes an object this run wrote but will not commit (the file changed while it was sent). A document may point to
 * the key by now only if another run of the tenant committed it meanwhile; the caller checks that first.
 */
export async function deleteObject(s3: S3Client, bucket: string, key: string, timeoutMs: number): Promise<void> {
  await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: AbortSignal.timeout(timeoutMs), requestTimeout: timeoutMs });
}

/**
 * The client one multipart upload's requests go through. lib-storage passes no signal and no timeout to its requests:
 * aborted, it stops starting parts but leaves the ones under way open (a stalled part for ever, its buffer with it),
 * and a CompleteMultipartUpload under way may still make the object after the abort. Through this client every
 * request carries the upload's own signal and a timeout (the request timeout; a part, partTimeoutFor: its body is
 * sent within the SDK's timer), none starts once the upload is aborted, and the requests under way can be waited for:
 * AbortMultipartUpload goes out only after the last of them ended.
 */
class MultipartRequests {
  readonly controller = new AbortController();
  readonly client: S3Client;
  /** From the CreateMultipartUpload answer (lib-storage's own uploadId is set a step later). */
  uploadId: string | undefined;
  private readonly underWay = new Set<Promise<unknown>>();

  constructor(s3: S3Client, timeoutMs: number, partTimeoutMs: number) {
    const send = (command: Parameters<S3Client['send']>[0]): Promise<unknown> => {
      const { signal } = this.controller;
      if (signal.aborted) return Promise.reject(Object.assign(new Error('Upload aborted.'), { name: 'AbortError' }));
      const requestTimeout = command instanceof UploadPartCommand ? partTimeoutMs : timeoutMs;
      const sent = s3.send(command, { abortSignal: signal, requestTimeout }).then((output: unknown) => {
        if (command instanceof CreateMultipartUploadCommand) this.uploadId = (output as CreateMultipartUploadCommandOutput).UploadId;
        return output;
      });
      const tracked = sent.catch(() => {}).finally(() => this.underWay.delete(tracked));
      this.underWay.add(tracked);
      return sent;
    };
    // The client itself for everything else lib-storage reads (its configuration, the endpoint).
    this.client = Object.create(s3, { send: { value: send } }) as S3Client;
  }

  /** Stops the upload's requests: those under way are aborted, no new one starts. */
  abort(): void {
    this.controller.abort();
  }

  /** Resolves once no request of the upload is under way (and, aborted, none can start). */
  async ended(): Promise<void> {
    while (this.underWay.size > 0) await Promise.allSettled([...this.underWay]);
  }
}

async function uploadMultipart(request: VersionedRequest): Promise<UploadResult> {
  const hashing = hashingReader(request);
  const partSize = partSizeFor(request.size, request.multipartThresholdBytes);
  const partTimeoutMs = partTimeoutFor(partSize, request.timeoutMs);
  const requests = new MultipartRequests(request.s3, request.timeoutMs, partTimeoutMs);
  const upload = new Upload({
    client: requests.client,
    params: { Bucket: request.bucket, Key: request.key, Body: hashing, ContentType: request.contentType },
    partSize,
    queueSize: PARTS_IN_FLIGHT,
    // We abort the multipart upload ourselves on failure: lib-storage would report a failure of its abort request
    // (e.g. a server without AbortMultipartUpload) instead of the error that made the upload fail.
    leavePartsOnError: true,
    // One signal for lib-storage and for its requests (MultipartRequests): aborting it ends both.
    abortController: requests.controller,
  });
  let timedOut = false;
  // A finished part is progress too (the last parts and the completion move no new bytes through the hash).
  upload.on('httpUploadProgress', (progress) => {
    hashing.lastProgressAt = Date.now();
    if (progress.loaded !== undefined) request.onProgress?.(progress.loaded);
  });
  const onAbort = () => requests.abort();
  request.signal.addEventListener('abort', onAbort, { once: true });
  // A read of the file that hangs (no request under way then) would hang the item: abort when neither a byte was read
  // nor a part finished for a while. Progress is seen at those two points only (no event while a part's body is
  // sent), so the while is a part's time (partTimeoutFor), not the request timeout: a big part is not cut short.
  const watchdog = setInterval(() => {
    if (Date.now() - hashing.lastProgressAt > partTimeoutMs) {
      timedOut = true;
      requests.abort();
    }
  }, Math.max(50, Math.floor(partTimeoutMs / 4)));
  try {
    const output = await upload.done();
    return { sha256: hashing.digest(), size: hashing.bytes, method: 'multipart', etag: output.ETag, sdkAttempts: 1 };
  } catch (error) {
    hashing.destroy();
    // Whatever failed, the other parts under way stop too; AbortMultipartUpload goes out once they all ended — a part
    // S3 receives after it would be stored again (and billed), a completion after it would make the object.
    requests.abort();
    await requests.ended();
    await abortMultipartUpload(request, requests.uploadId ?? upload.uploadId);
    if (request.signal.aborted) throw request.signal.reason;
    // The watchdog, or a part's own request timeout (MultipartRequests): S3 made no progress in time either way.
    // The watchdog waited a part's time, and a part's own request the same (the create's or the completion's, less).
    if (timedOut || isRequestTimeout(error)) throw new UploadTimeoutError(partTimeoutMs);
    // lib-storage reports the body's failure as is (a change of the file is one).
    throw error;
  } finally {
    clearInterval(watchdog);
    request.signal.removeEventListener('abort', onAbort);
  }
}
