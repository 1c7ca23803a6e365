// Deterministic object keys for imported files: `<prefix>/<tenant>/<path relative to the import root>`, each path
// segment encoded so that any file name becomes a safe S3 key and two different names never share a key.
//
// The encoding keeps letters, digits and marks of any script, spaces and the punctuation S3 documents as safe, and
// writes every other character as %XX of its UTF-8 bytes — including `%` itself, so the mapping is injective and can
// be reversed with decodeURIComponent. Control characters (newlines, tabs), `\ { } ^ [ ] " < > # | ~ %` and backticks
// (the characters AWS says to avoid in keys) never reach S3 verbatim. Names are not Unicode-normalised on purpose:
// two files whose names differ only in normalisation are two files and get two keys.
//
// Keys are injective over (prefix, tenant, path), not only over paths. A prefix may have several segments (so a run
// can stay below the `imports/` grant of the task role, e.g. `imports/2024-q4`), and written as is, prefix
// `imports/acme` + tenant `x` + path `f` would share its key with prefix `imports` + tenant `acme` + path `x/f` — one
// tenant's run would find, skip or overwrite another tenant's documents. So every prefix segment after the first is
// written with a leading `_` (`imports/_2024-q4/acme/…`). Prefix segments and tenants must start with a letter or a
// digit, so a key reads back one way only: its first segment is the prefix's first, each following `_` segment
// belongs to the prefix, the next segment is the tenant, the rest is the path. A one-segment prefix (the default
// `imports`) gives the same keys as before: `imports/<tenant>/<path>`.
import { isValidTenant } from './tenant.js';

/** S3's limit on a key, in UTF-8 bytes. */
export const MAX_KEY_BYTES = 1024;

const PREFIX_SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
// Kept verbatim: ASCII letters and digits, the S3 "safe" punctuation, space, and non-ASCII letters, marks, numbers,
// punctuation and symbols. Everything else (controls, separators other than space, format characters, the ASCII
// characters S3 asks to avoid, and %) is percent-encoded.
const KEEP = /[A-Za-z0-9!\-_.*'() ,;:=+@&$?\p{L}\p{M}\p{N}]/u;
const KEEP_NON_ASCII = /[\p{L}\p{M}\p{N}\p{P}\p{S}]/u;
/** Marks the prefix's segments after the first (see above); neither a tenant nor a prefix segment can start with it. */
const PREFIX_CONTINUATION = '_';

/**
 * A prefix is one or more segments joined by `/`, each 1-128 letters, digits, `.`, `_` or `-` starting with a letter
 * or digit (so no segment is empty, `.`, `..`, or starts with the continuation mark).
 */
export function isValidPrefix(prefix: string): boolean {
  const segments = prefix.split('/');
  return segments.every((segment) => PREFIX_SEGMENT.test(segment) && segment !== '.' && segment !== '..');
}

function encodeCharacter(character: string): string {
  const code = character.codePointAt(0)!;
  if (code < 0x80 ? KEEP.test(character) : KEEP_NON_ASCII.test(character)) return character;
  return [...Buffer.from(character, 'utf8')].map((byte) => `%${byte.toString(16).toUpperCase().padStart(2, '0')}`).join('');
}

/** Encodes one path segment (a file or folder name). */
export function encodeKeySegment(segment: string): string {
  let encoded = '';
  for (const character of segment) encoded += encodeCharacter(character);
  return encoded;
}

/** The object key of a file: prefix/tenant/encoded relative path (POSIX separators). */
export function objectKeyFor(prefix: string, tenant: string, relativePath: string): string {
  const path = relativePath.split('/').map(encodeKeySegment).join('/');
  return `${keyPrefixFor(prefix, tenant)}${path}`;
}

/**
 * The key prefix under which every object of a tenant's import with this prefix lives (ends with `/`): the prefix's
 * first segment, its further segments marked with `_`, then the tenant. No other (prefix, tenant) has it as a prefix
 * of its keys.
 */
export function keyPrefixFor(prefix: string, tenant: string): string {
  if (!isValidPrefix(prefix)) throw new Error(`invalid key prefix ${JSON.stringify(prefix)}`);
  if (!isValidTenant(tenant)) throw new Error(`invalid tenant ${JSON.stringify(tenant)}`);
  const [first, ...rest] = prefix.split('/');
  return [first, ...rest.map((segment) => `${PREFIX_CONTINUATION}${segment}`), tenant, ''].join('/');
}

export function keyByteLength(key: string): number {
  return Buffer.byteLength(key, 'utf8');
}
