// What a tenant may read of a failure. A message we wrote for the run's owner (a JobError's) is shown as it is; one
// that quotes a dependency — the driver's, the AWS SDK's, a bug's, the rescuer's naming a worker — may name hosts,
// addresses, tables, accounts or roles, so a tenant reads a plain sentence with its code in its place. Operators read
// everything. Used by the API's views, the admin pages and the failed-files export.
import { CAMPAIGN_MOUNT_MISSING_CODE, KEY_OF_OTHER_TENANT_CODE, LEASE_EXPIRED_CODE, SYMLINK_OUTSIDE_ROOT_CODE } from './errors.js';
import { DEPENDENCY_OUTAGE_CODE } from './outage.js';
import type { JobErrorRecord } from './types.js';

/**
 * Whether a run's recorded error is an internal failure's. Records since JobErrorRecord.internal carry the answer;
 * older ones are judged by what only internal failures have: a stack (errors that are not JobErrors), the rescuer's
 * LEASE_EXPIRED, the outage's DEPENDENCY_OUTAGE, the S3 codes (a run-level refusal or an outage, whose messages quote
 * the SDK) and the backfill's (they quote Postgres or the compute). A mass import's errors that named the campaign
 * mount's path were recorded as not internal until they were changed, so they are judged by what they carry: the
 * missing mount by its code, a source error (SOURCE_*) by the mount's path in its context.
 */
export function isInternalError(error: Pick<JobErrorRecord, 'internal' | 'stack' | 'code' | 'context'>): boolean {
  if (error.code === CAMPAIGN_MOUNT_MISSING_CODE || (error.code.startsWith('SOURCE_') && error.context?.importRoot !== undefined)) return true;
  if (error.internal !== undefined) return error.internal === true;
  return (
    error.stack !== undefined ||
    error.code === LEASE_EXPIRED_CODE ||
    error.code === DEPENDENCY_OUTAGE_CODE ||
    error.code.startsWith('S3_') ||
    error.code.startsWith('BACKFILL_')
  );
}

/** What a tenant reads in place of an internal failure's message. */
export function internalErrorMessage(code: string): string {
  return `an internal error ended this attempt (${code}); the operators have its details`;
}

/**
 * A failed file's message (mass import) as the caller may read it. Operators read it whole. The S3 codes (`S3_<name>`)
 * carry S3's own text, which may name a KMS key, a role or an endpoint; KEY_OF_OTHER_TENANT names the other tenant's
 * document, its run and when it was made; SYMLINK_OUTSIDE_ROOT names where the link leads on the worker's file system
 * (out of the import root, or into another directory of it, perhaps another tenant's): a tenant reads a plain sentence
 * for those. Every other item code is ours (CONTENT_CHANGED, UNREADABLE, KEY_TOO_LONG
 * …) and says what happened to the tenant's own file, by its path under the import root.
 */
export function itemErrorMessage(code: string | null, message: string | null, operator: boolean): string | null {
  if (operator || code === null) return message;
  if (code === KEY_OF_OTHER_TENANT_CODE) return "this file's key is taken by another tenant's document: the file was not imported; the operators have the details";
  // The code covers links out of the root and links into another directory of it (another tenant's): the sentence
  // names neither the target nor whose directory it is in.
  if (code === SYMLINK_OUTSIDE_ROOT_CODE) return "a symbolic link to a file outside this run's source directory: not followed; the operators have the details";
  return code.startsWith('S3_') ? `S3 did not store this file (${code}); the operators have the details` : message;
}
