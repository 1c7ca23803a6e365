// The payload of a CSV import run, shared by its two kinds: `csv-import` (validation) and `csv-finalize` (the same
// run resumed after review). Payload: { bucket, key, profile, tenant?, delimiter?, encoding?, autoFinalize? }.
import { PayloadReader } from '../../handlers/payload.js';
import { PermanentJobError } from '../../queue/errors.js';
import { keyPrefixFor } from '../object-key.js';
import { isValidTenant } from '../tenant.js';
import { findProfile, profileNames } from './profiles/index.js';

export const CSV_ENCODINGS = ['utf-8', 'utf-16le', 'latin1', 'windows-1252'] as const;
export type CsvEncoding = (typeof CSV_ENCODINGS)[number];
export const CSV_DELIMITERS = [',', ';', '\t', '|'] as const;

export interface CsvImportPayload {
  bucket: string;
  key: string;
  profile: string;
  /** Tenant the rows belong to; defaults to the job's tenant. */
  tenant: string | undefined;
  delimiter: string;
  encoding: CsvEncoding;
  /** Finalize right after validation instead of stopping for review. */
  autoFinalize: boolean;
}

const BUCKET = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

export function parseCsvImportPayload(kind: string, raw: Record<string, unknown>): CsvImportPayload {
  const read = new PayloadReader(kind, raw);
  read.onlyKnown(['bucket', 'key', 'profile', 'tenant', 'delimiter', 'encoding', 'autoFinalize']);
  const bucket = read.string('bucket', BUCKET, 'an S3 bucket name');
  const key = read.string('key', undefined, 'an S3 object key', 1024);
  const profile = read.string('profile', /^[a-z][a-z0-9-]*$/, `a profile name: ${profileNames().join(', ')}`);
  if (!findProfile(profile)) {
    throw new PermanentJobError(
      `invalid ${kind} payload: unknown profile "${profile}"; profiles: ${profileNames().join(', ')}`,
      'INVALID_PAYLOAD',
      { field: 'profile' },
    );
  }
  const tenant = read.optionalString('tenant', /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, '1-128 letters, digits, ".", "_" or "-"');
  const delimiter = read.optionalString('delimiter', /^(?:,|;|\t|\|)$/, 'one of "," ";" "|" or a tab') ?? ',';
  const encoding = (read.optionalString('encoding', new RegExp(`^(?:${CSV_ENCODINGS.join('|')})$`), CSV_ENCODINGS.join(', ')) ??
    'utf-8') as CsvEncoding;
  return { bucket, key, profile, tenant, delimiter, encoding, autoFinalize: read.boolean('autoFinalize', false) };
}

/** The payload's tenant, or the job's; both given must agree. */
export function resolveCsvTenant(kind: string, payload: CsvImportPayload, jobTenant: string | null): string {
  if (payload.tenant !== undefined && jobTenant !== null && payload.tenant !== jobTenant) {
    throw new PermanentJobError(
      `${kind} payload tenant "${payload.tenant}" differs from the job's tenant "${jobTenant}"; give one or make them equal`,
      'TENANT_MISMATCH',
    );
  }
  const tenant = payload.tenant ?? jobTenant;
  if (tenant === null || !isValidTenant(tenant)) {
    throw new PermanentJobError(
      `${kind} needs a tenant: set "tenant" in the payload or enqueue with --tenant (1-128 letters, digits, ".", "_" or "-")`,
      'TENANT_REQUIRED',
    );
  }
  return tenant;
}

/**
 * Where a tenant's CSV uploads live: `imports/<tenant>/…` in the configured bucket (S3_BUCKET). `imports/` is what the
 * task role may read (docs/DEPLOYMENT.md), and `<tenant>/` is the same per-tenant prefix mass imports write under
 * (object-key.ts), so a tenant's import can only read that tenant's objects, never another tenant's upload.
 */
export const CSV_UPLOAD_PREFIX = 'imports';

/** The key prefix a tenant's CSV uploads must start with (ends with `/`). */
export function csvUploadPrefixFor(tenant: string): string {
  return keyPrefixFor(CSV_UPLOAD_PREFIX, tenant);
}

/**
 * Refuses an object the run may not read: a bucket other than the configured one, or a key outside the tenant's
 * upload prefix (including `.`/`..`/empty segments, which some S3-compatible servers resolve).
 */
export function assertCsvObjectAllowed(kind: string, payload: CsvImportPayload, tenant: string, configuredBucket: string): void {
  if (payload.bucket !== configuredBucket) {
    throw new PermanentJobError(
      `${kind} may read only the configured import bucket "${configuredBucket}" (S3_BUCKET), not "${payload.bucket}"`,
      'CSV_BUCKET_NOT_ALLOWED',
      { field: 'payload.bucket', bucket: payload.bucket, configuredBucket, key: payload.key },
    );
  }
  const prefix = csvUploadPrefixFor(tenant);
  const rest = payload.key.startsWith(prefix) ? payload.key.slice(prefix.length) : undefined;
  const segments = rest?.split('/') ?? [];
  if (rest === undefined || segments.some((segment) => segment === '' || segment === '.' || segment === '..')) {
    throw new PermanentJobError(
      `${kind} of tenant "${tenant}" may read only objects under "${prefix}" (a file name after it, no empty, "." or ".." ` +
        `segments), not "${payload.key}"`,
      'CSV_KEY_NOT_ALLOWED',
      { field: 'payload.key', bucket: payload.bucket, key: payload.key, tenant, prefix },
    );
  }
}
