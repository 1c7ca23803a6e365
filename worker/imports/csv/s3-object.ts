// Opens the uploaded CSV object as a stream. Missing or forbidden objects fail the run at once with a message that
// names the object; other S3 errors keep their classification (5xx, throttling and network errors are retried).
// `ifMatch` pins the read to the ETag validation saw: a re-uploaded object is refused by S3 itself (412), so finalize
// never writes rows nobody reviewed.
// S3 being unavailable (network errors, timeouts, 5xx — when the object is opened or while its body streams) is marked
// as an outage of S3 (queue/outage.ts): the run waits for S3 without spending its attempts.
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { Transform, type Readable } from 'node:stream';
import { PermanentJobError } from '../../queue/errors.js';
import { isS3OutageError, markOutage } from '../../queue/outage.js';

export interface OpenedObject {
  body: Readable;
  /** Bytes in the object, when S3 says. */
  size: number | undefined;
  etag: string | undefined;
}

export interface OpenOptions {
  /** Pin the read to this ETag (finalize). */
  ifMatch?: string | undefined;
  /**
   * A read that receives no byte for this long — before the response or while its body streams — is aborted as an S3
   * outage. Without it a stalled connection would hold the run `running` for ever, heartbeats and all.
   */
  stallTimeoutMs: number;
}

/** No byte of an S3 read for the stall timeout. */
export class S3ReadStalledError extends Error {
  readonly code = 'ETIMEDOUT';
  constructor(bucket: string, key: string, timeoutMs: number) {
    super(`no byte of s3://${bucket}/${key} arrived for ${timeoutMs} ms (S3_STALL_TIMEOUT_MS): the read was aborted`);
    this.name = 'TimeoutError';
  }
}

export async function openObject(s3: S3Client, bucket: string, key: string, signal: AbortSignal, options: OpenOptions): Promise<OpenedObject> {
  const { ifMatch } = options;
  // A timer of our own, re-armed by every chunk: Node 20 holds the sources of AbortSignal.any weakly (see
  // storage/s3-upload.ts), and the SDK has no inactivity timeout for a body that stops flowing.
  const stall = new AbortController();
  const onAbort = () => stall.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  let stalled: S3ReadStalledError | undefined;
  let timer: NodeJS.Timeout | undefined;
  let body: Readable | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = new S3ReadStalledError(bucket, key, options.stallTimeoutMs);
      markOutage(stalled, { dependency: 's3', progressed: body !== undefined });
      stall.abort(stalled);
      body?.destroy(stalled);
    }, options.stallTimeoutMs);
  };
  const disarm = () => {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  };
  arm();
  try {
    const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key, IfMatch: ifMatch }), { abortSignal: stall.signal });
    if (!response.Body) throw new PermanentJobError(`s3://${bucket}/${key} has no body`, 'CSV_OBJECT_EMPTY', { bucket, key });
    // S3 refuses a changed object itself; some S3-compatible servers ignore If-Match, so look at what was sent too.
    if (ifMatch !== undefined && response.ETag !== undefined && response.ETag !== ifMatch) {
      (response.Body as Readable).destroy();
      throw objectChanged(bucket, key, ifMatch);
    }
    const source = response.Body as Readable;
    body = source;
    arm();
    // Every chunk re-arms the stall timer on its way through; the reader reads the watched stream.
    const watched = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        arm();
        done(null, chunk);
      },
      flush(done) {
        disarm();
        done();
      },
    });
    // The reader sees the same error object the stream emits (for await … of body): a reset while the bytes flow is
    // S3's outage, after the object was read in part.
    source.on('error', (error) => {
      if (isS3OutageError(error)) markOutage(error, { dependency: 's3', progressed: true });
      disarm();
      watched.destroy(error);
    });
    watched.on('close', () => {
      disarm();
      if (!source.destroyed) source.destroy();
    });
    source.pipe(watched);
    return { body: watched, size: response.ContentLength, etag: response.ETag };
  } catch (error) {
    disarm();
    if (stalled) throw stalled;
    if (error instanceof PermanentJobError) throw error;
    if (isS3OutageError(error)) throw markOutage(error, { dependency: 's3', progressed: false });
    const name = (error as { name?: string }).name;
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (ifMatch !== undefined && (name === 'PreconditionFailed' || status === 412)) throw objectChanged(bucket, key, ifMatch);
    if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) {
      const hint = ifMatch !== undefined ? 'it was deleted after validation; upload it again and import it again' : 'upload the file first, or check bucket and key';
      throw new PermanentJobError(`s3://${bucket}/${key} does not exist (${hint})`, 'CSV_OBJECT_NOT_FOUND', {
        bucket,
        key,
      });
    }
    if (name === 'NoSuchBucket') {
      throw new PermanentJobError(`bucket ${bucket} does not exist`, 'CSV_BUCKET_NOT_FOUND', { bucket, key });
    }
    // S3 answers a missing key with 403, not 404, to a reader that may not list the bucket: the deployed task role may
    // list only under its prefix, so an upload that expired during a long review reads as "access denied".
    if (name === 'AccessDenied' || status === 403) {
      const hint = ifMatch !== undefined ? 'deleted after validation (an expired upload?), or' : 'missing, or';
      throw new PermanentJobError(
        `S3 refused to read s3://${bucket}/${key} (access denied): the object is ${hint} the worker's role may not read it ` +
          '(S3 answers 403 for a missing object to a role that may not list the bucket)',
        'CSV_OBJECT_FORBIDDEN',
        { bucket, key },
      );
    }
    throw error;
  }
}

function objectChanged(bucket: string, key: string, etag: string): PermanentJobError {
  return new PermanentJobError(
    `s3://${bucket}/${key} changed after it was validated (its ETag is no longer ${etag}): nothing more of it is ` +
      'written; import the new file (rows already written are upserted, so they come out unchanged)',
    'CSV_OBJECT_CHANGED',
    { bucket, key, etag },
  );
}
