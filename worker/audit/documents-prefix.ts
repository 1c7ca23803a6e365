// The key prefix the data-consistency audit lists for its documents check (`documentsPrefix` of the audit payload,
// `bulk-import audit start --documents-prefix`, and the stack's scheduled audit, which passes its bucketPrefix: the
// task role may list only under it). One rule for all three, so the stack refuses at synth a prefix the audit would
// refuse every night. No imports: infra/ loads this file.

/** The documents prefix of an audit that names none (the stack's default bucketPrefix). */
export const DEFAULT_DOCUMENTS_PREFIX = 'imports/';
/** Longer prefixes are a mistake: S3 keys are at most 1,024 bytes, and documents keys still need the tenant and path. */
const MAX_DOCUMENTS_PREFIX_LENGTH = 200;
/** What documentsPrefixProblem accepts, in words, for error messages. */
export const DOCUMENTS_PREFIX_RULE =
  `a key prefix such as imports/: 1-${MAX_DOCUMENTS_PREFIX_LENGTH} characters, ending with "/", not starting with "/", ` +
  'without spaces or control characters';

/** Why `prefix` is not a documents prefix the audit lists, or null when it is one. */
export function documentsPrefixProblem(prefix: string): string | null {
  if (prefix === '') return 'must not be empty (the whole bucket holds more than documents)';
  if (prefix.length > MAX_DOCUMENTS_PREFIX_LENGTH) return `must be at most ${MAX_DOCUMENTS_PREFIX_LENGTH} characters, got ${prefix.length}`;
  if (prefix.startsWith('/')) return 'must not start with "/" (S3 keys have no leading slash)';
  if (!prefix.endsWith('/')) return 'must end with "/" (the folder the documents keys are under, e.g. imports/)';
  if (/[\s\p{Cc}]/u.test(prefix)) return 'must not contain spaces or control characters';
  return null;
}

/**
 * Whether `prefix` is a whole import root, one key segment such as imports/ — every mass import writes below the first
 * segment of its prefix (`imports/_2024-q4/<tenant>/…`, worker/imports/object-key.ts), and the stack's bucketPrefix is
 * one segment — rather than a part of one (imports/acme/, imports/_2024-q4/).
 */
export function isWholeImportRoot(prefix: string): boolean {
  return prefix.indexOf('/') === prefix.length - 1;
}
