// Opens the uploaded CSV object as a stream. Missing or forbidden objects fail the run at once with a message that
// names the object; other S3 errors keep their classification (5xx, throttling and network errors are retried).
import { GetObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { PermanentJobError } from '../../queue/errors.js';

export interface OpenedObject {
  body: Readable;
  /** Bytes in the object, when S3 says. */
  size: number | undefined;
  etag: string | undefined;
}

export async function openObject(s3: S3Client, bucket: string, key: string, signal: AbortSignal): Promise<OpenedObject> {
  try {
    const response = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
    if (!response.Body) throw new PermanentJobError(`s3://${bucket}/${key} has no body`, 'CSV_OBJECT_EMPTY', { bucket, key });
    return { body: response.Body as Readable, size: response.ContentLength, etag: response.ETag };
  } catch (error) {
    const name = (error as { name?: string }).name;
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    if (name === 'NoSuchKey' || name === 'NotFound' || status === 404) {
      throw new PermanentJobError(`s3://${bucket}/${key} does not exist (upload the file first, or check bucket and key)`, 'CSV_OBJECT_NOT_FOUND', {
        bucket,
        key,
      });
    }
    if (name === 'NoSuchBucket') {
      throw new PermanentJobError(`bucket ${bucket} does not exist`, 'CSV_BUCKET_NOT_FOUND', { bucket, key });
    }
    if (name === 'AccessDenied' || status === 403) {
      throw new PermanentJobError(`the worker may not read s3://${bucket}/${key} (access denied)`, 'CSV_OBJECT_FORBIDDEN', { bucket, key });
    }
    throw error;
  }
}
