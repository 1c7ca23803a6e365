// The size of a CSV import's upload, read from S3 when the run is submitted over the API. The queued-bytes limits
// (queue/admission.ts) count a run's sizeBytes; a caller could declare 0 and queue any amount. So the API measures the
// object itself: a HEAD, after the key is checked to be the tenant's (a HEAD of another tenant's key would tell
// whether that upload exists).
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import type { FastifyBaseLogger } from 'fastify';
import { assertCsvObjectAllowed, type CsvImportPayload } from '../imports/csv/payload.js';
import { PermanentJobError } from '../queue/errors.js';
import { ApiError } from './errors.js';
import type { ApiDependencies } from './server.js';

/**
 * The object's size in bytes. Refuses (400, naming the field) a key outside the tenant's upload prefix, an upload that
 * is not there, and a declared `sizeBytes` that is not the object's size; a failing S3 is a 503 to retry.
 */
export async function measureCsvUpload(
  deps: Pick<ApiDependencies, 's3' | 'bucket' | 'limits'>,
  log: FastifyBaseLogger,
  kind: string,
  payload: CsvImportPayload,
  tenant: string,
  declared: number | undefined,
): Promise<number> {
  if (!deps.s3 || !deps.bucket) throw new ApiError(503, 'S3_NOT_CONFIGURED', 'CSV imports need S3: set S3_BUCKET (and S3_ENDPOINT for an S3-compatible server)');
  assertCsvObjectAllowed(kind, payload, tenant, deps.bucket);
  let size: number | undefined;
  try {
    // Bounded: a HEAD that never answers would otherwise hold the request until the client gave up, and the run
    // could still be submitted after the client saw a failure.
    const head = new HeadObjectCommand({ Bucket: payload.bucket, Key: payload.key });
    size = (await deps.s3.send(head, { abortSignal: AbortSignal.timeout(deps.limits.s3HeadTimeoutMs) })).ContentLength;
  } catch (error) {
    // S3 answers a HEAD of a missing key with 403 to a role that may not list the bucket (the stack's, on purpose).
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
    // A 403 is also what a role without s3:GetObject gets: said at warn, so a broken grant shows in the logs.
    if (status === 403) log.warn({ key: payload.key }, "S3 refused the HEAD of a CSV upload (403): a missing upload, or the API's role may not read it");
    if (status === 404 || status === 403) {
      throw new PermanentJobError(`no upload at ${payload.key}: PUT the file to the URL POST /v1/uploads gave, then submit`, 'UPLOAD_NOT_FOUND', {
        field: 'payload.key',
      });
    }
    log.warn({ err: error, key: payload.key }, 'the size of a CSV upload could not be read from S3');
    throw new ApiError(503, 'S3_UNAVAILABLE', "the upload's size could not be read from S3; try again shortly", undefined, { 'retry-after': '5' });
  }
  if (size === undefined) throw new ApiError(503, 'S3_UNAVAILABLE', 'S3 did not give the size of the upload; try again shortly', undefined, { 'retry-after': '5' });
  if (declared !== undefined && declared !== size) {
    throw new PermanentJobError(`sizeBytes is ${declared} but the upload at ${payload.key} is ${size} bytes: leave it out or give the real size`, 'SIZE_MISMATCH', {
      field: 'sizeBytes',
    });
  }
  return size;
}
