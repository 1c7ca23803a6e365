// The header line decides how a file maps onto its profile. Every problem is collected and the import fails at once
// with one message that lists them all (missing required columns, unknown columns, duplicates), so the user fixes
// the header in one go.
import { PermanentJobError } from '../../queue/errors.js';
import { isAnnotationColumn, type ColumnSpec, type ImportProfile } from './profile.js';
import type { CsvRecord } from './record-parser.js';

export interface HeaderLayout {
  /** The header's names as written (trimmed), in file order. */
  header: string[];
  /** The profile columns present in the file, in profile order: the order of a row's values. */
  columns: ColumnSpec[];
  /** For each of `columns`, the index of its field in a row. */
  fieldIndex: number[];
}

export interface ObjectRef {
  bucket: string;
  key: string;
  encoding: string;
}

// Control characters other than tab and line breaks, or the replacement character of undecodable bytes.
// eslint-disable-next-line no-control-regex
const NOT_TEXT = /[\u0000-\u0008\u000e-\u001f\uFFFD]/;
const UTF8_BOM_AS_SINGLE_BYTES = '\u00ef\u00bb\u00bf';

// A header may hold any number of names of any length: the message names the first few, each cut short.
const LISTED_NAMES = 20;
const SHOWN_NAME_CHARS = 60;
/**
 * A header may have at most this many fields more than its profile has columns. Every field beyond the profile's
 * columns is an unknown or repeated name (refused anyway) or an annotation column (`_row`, `_errors`, twice at most),
 * so a wider header is refused without being analysed: a line of a million characters holds up to a million names.
 * Only its unknown names are counted (the first few named), in one pass that keeps nothing else.
 */
export const HEADER_EXTRA_FIELDS = 64;

/** The first LISTED_NAMES of `names`, and how many more there are of `total`. */
function listed(names: string[], total = names.length): string {
  const shown = names.slice(0, LISTED_NAMES).join(', ');
  return total > LISTED_NAMES ? `${shown} … and ${total - LISTED_NAMES} more` : shown;
}

function shownName(name: string): string {
  return JSON.stringify(name.length > SHOWN_NAME_CHARS ? `${name.slice(0, SHOWN_NAME_CHARS)}…` : name);
}

/** A header name as the profile's column names are written: trimmed, lower case. */
export function normaliseName(name: string): string {
  return name.trim().toLowerCase();
}

/** Reads the header record; throws a PermanentJobError naming every problem. */
export function readHeader(profile: ImportProfile, record: CsvRecord, object: ObjectRef): HeaderLayout {
  const where = `s3://${object.bucket}/${object.key}`;
  const context = { bucket: object.bucket, key: object.key, row: record.line };
  if (record.fields === null || record.problem !== undefined) {
    throw new PermanentJobError(`${where}: the header line (line ${record.line}) cannot be read: ${record.problem}`, 'CSV_HEADER_INVALID', context);
  }
  const header = record.fields.map((name) => name.trim());
  if (header.some((name) => NOT_TEXT.test(name))) {
    throw new PermanentJobError(
      `${where} does not look like a CSV text file in ${object.encoding}: its first line holds control characters or bytes ` +
        `that are not valid ${object.encoding} (a binary file, or another encoding: set "encoding" in the payload)`,
      'CSV_NOT_TEXT',
      context,
    );
  }
  const known = new Map(profile.columns.map((column) => [column.name, column]));
  const unnamedOrShown = (name: string, index: number) => (name === '' ? `(unnamed column ${index + 1})` : shownName(name));
  const mismatch = (problems: string[], details: Record<string, unknown>): PermanentJobError => {
    const hint = header[0]?.startsWith(UTF8_BOM_AS_SINGLE_BYTES)
      ? ' (the file starts with a UTF-8 byte order mark: import it with encoding utf-8)'
      : '';
    return new PermanentJobError(
      `${where}: the header does not match the "${profile.name}" profile: ${problems.join('; ')}${hint}. ` +
        `Expected columns: ${profile.columns.map((column) => `${column.name}${column.required ? '' : ' (optional)'}`).join(', ')}`,
      'CSV_HEADER_INVALID',
      { ...context, ...details },
    );
  };

  const maxFields = profile.columns.length + HEADER_EXTRA_FIELDS;
  if (header.length > maxFields) {
    const present = new Set<string>();
    const unknown: string[] = [];
    let unknownCount = 0;
    header.forEach((name, index) => {
      const normalised = normaliseName(name);
      if (known.has(normalised)) present.add(normalised);
      else if (!isAnnotationColumn(normalised) && (unknownCount += 1) <= LISTED_NAMES) unknown.push(unnamedOrShown(name, index));
    });
    const missing = profile.columns.filter((column) => column.required && !present.has(column.name)).map((column) => column.name);
    const problems = [
      `${header.length.toLocaleString('en')} columns, more than it can use (at most ${maxFields}: is the delimiter right, and is the first line the header?)`,
    ];
    if (missing.length > 0) problems.push(`missing required column(s): ${missing.join(', ')}`);
    if (unknownCount > 0) problems.push(`unknown column(s): ${listed(unknown, unknownCount)}`);
    throw mismatch(problems, {
      columns: header.length,
      maxColumns: maxFields,
      missing,
      unknown,
      duplicates: [],
      ...(unknownCount > LISTED_NAMES ? { unknownCount } : {}),
    });
  }

  const seen = new Map<string, number[]>();
  const unknown: string[] = [];
  header.forEach((name, index) => {
    const normalised = normaliseName(name);
    const positions = seen.get(normalised);
    if (positions) positions.push(index + 1);
    else seen.set(normalised, [index + 1]);
    if (!known.has(normalised) && !isAnnotationColumn(normalised)) unknown.push(unnamedOrShown(name, index));
  });
  // Repeated annotation columns are ignored like single ones: an export of an export written before its own `_row`
  // and `_errors` replaced the earlier ones carries them twice.
  const duplicates = [...seen.entries()]
    .filter(([name, positions]) => positions.length > 1 && !isAnnotationColumn(name))
    .map(([name, positions]) => `${shownName(name)} (columns ${listed(positions.map(String))})`);
  const missing = profile.columns.filter((column) => column.required && !seen.has(column.name)).map((column) => column.name);
  const problems: string[] = [];
  if (missing.length > 0) problems.push(`missing required column(s): ${missing.join(', ')}`);
  if (unknown.length > 0) problems.push(`unknown column(s): ${listed(unknown)}`);
  if (duplicates.length > 0) problems.push(`duplicate column(s): ${listed(duplicates)}`);
  if (problems.length > 0) {
    throw mismatch(problems, {
      missing,
      unknown: unknown.slice(0, LISTED_NAMES),
      duplicates: duplicates.slice(0, LISTED_NAMES),
      ...(unknown.length > LISTED_NAMES ? { unknownCount: unknown.length } : {}),
      ...(duplicates.length > LISTED_NAMES ? { duplicateCount: duplicates.length } : {}),
    });
  }
  const columns = profile.columns.filter((column) => seen.has(column.name));
  return { header, columns, fieldIndex: columns.map((column) => seen.get(column.name)![0]! - 1) };
}
