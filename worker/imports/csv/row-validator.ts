// Validates the fields of one CSV row against a profile and normalises them to the text that is written: trimmed,
// empty → null, integers without a `+` or leading zeros, decimals without a `+`, a trailing point or the sign of a
// zero (leading zeros stay: the database reads the value as numeric either way), enums and booleans in their
// canonical spelling. Every problem of the row is reported, not only the first. Each column's rules are compiled once
// into a checker. The number grammar (what is accepted, what is refused and why) is written down once, in
// docs/RUNBOOK.md, "Numbers in CSV files"; test/csv-number-grammar.test.ts checks every line of it.
import type { ColumnSpec } from './profile.js';
import type { HeaderLayout } from './header.js';

export interface RowIssue {
  /** The profile column, or null for a problem of the whole row (field count, malformed quotes …). */
  column: string | null;
  /**
   * required, type, scale, range, max_length, pattern, enum, encoding, nul_byte, field_count, malformed, duplicate,
   * database.
   */
  rule: string;
  message: string;
}

export type RowCheck =
  /** `values` in the layout's column order; `exact` when they equal the fields as written (no raw copy needed). */
  | { ok: true; values: Array<string | null>; exact: boolean }
  | { ok: false; issues: RowIssue[] };

class Issue {
  constructor(
    readonly rule: string,
    readonly message: string,
  ) {}
}

type Checker = (value: string) => string | Issue;

const SHOWN_CHARS = 40;
const REPLACEMENT_CHARACTER = '\uFFFD';
// Postgres text and jsonb cannot hold U+0000 (SQLSTATE 22P05): a row with one is a row error, never written.
const NUL = '\u0000';

function nulByteIssue(column: string | null, label: string): RowIssue {
  return {
    column,
    rule: 'nul_byte',
    message: `${label} holds a NUL byte (U+0000, shown as \uFFFD), which cannot be stored: remove it`,
  };
}

export function show(value: string): string {
  return JSON.stringify(value.length > SHOWN_CHARS ? `${value.slice(0, SHOWN_CHARS)}…` : value);
}

/** One profile column present in the file, compiled. */
interface Column {
  name: string;
  required: boolean;
  /** The index of its field in a row. */
  field: number;
  check: Checker;
}

export class RowValidator {
  private readonly columns: Column[];
  private readonly ignoredIndexes: number[];
  private readonly expectedFields: number;
  private readonly header: readonly string[];

  constructor(layout: HeaderLayout) {
    this.columns = layout.columns.map((column, index) => ({
      name: column.name,
      required: column.required === true,
      field: layout.fieldIndex[index]!,
      check: compileChecker(column),
    }));
    this.expectedFields = layout.header.length;
    this.header = layout.header;
    const mapped = new Set(layout.fieldIndex);
    this.ignoredIndexes = layout.header.map((_, index) => index).filter((index) => !mapped.has(index));
  }

  check(fields: readonly string[]): RowCheck {
    if (fields.length !== this.expectedFields) {
      return {
        ok: false,
        issues: [
          {
            column: null,
            rule: 'field_count',
            message: `the row has ${fields.length} field(s), the header has ${this.expectedFields}`,
          },
        ],
      };
    }
    const columns = this.columns;
    const values: Array<string | null> = new Array(columns.length);
    let issues: RowIssue[] | undefined;
    let exact = true;
    for (let index = 0; index < columns.length; index++) {
      const { name, required, field: fieldAt, check } = columns[index]!;
      const field = fields[fieldAt]!;
      if (field.indexOf(NUL) !== -1) {
        (issues ??= []).push(nulByteIssue(name, name));
        continue;
      }
      if (field.indexOf(REPLACEMENT_CHARACTER) !== -1) {
        (issues ??= []).push({
          column: name,
          rule: 'encoding',
          message: `${name} holds bytes that are not valid in the file's encoding (shown as \uFFFD): save the file as UTF-8 or give its encoding`,
        });
        continue;
      }
      const trimmed = hasPrintableEdges(field) ? field : field.trim();
      if (trimmed === '') {
        if (required) (issues ??= []).push({ column: name, rule: 'required', message: `${name} is required` });
        values[index] = null;
        if (field !== '') exact = false;
        continue;
      }
      const result = check(trimmed);
      if (typeof result !== 'string') {
        (issues ??= []).push({ column: name, rule: result.rule, message: `${name} ${result.message}` });
        continue;
      }
      values[index] = result;
      if (result !== field) exact = false;
    }
    // Ignored columns (_row, _errors of an export) are not imported, but a row's fields are kept as written whenever
    // the row ends up in the error list (a duplicate, a row refused at write time): one rule for the whole row.
    for (const index of this.ignoredIndexes) {
      if (fields[index]!.indexOf(NUL) !== -1) (issues ??= []).push(nulByteIssue(null, `column ${this.header[index]}`));
    }
    if (issues) return { ok: false, issues };
    for (const index of this.ignoredIndexes) if (fields[index] !== '') exact = false;
    return { ok: true, values, exact };
  }
}

/**
 * Whether `value` starts and ends with printable ASCII, so trim() would return it as is: every character trim()
 * removes (ASCII and Unicode white space, line terminators, U+FEFF) lies outside that range, but the space.
 */
function hasPrintableEdges(value: string): boolean {
  const first = value.charCodeAt(0);
  const last = value.charCodeAt(value.length - 1);
  return first > 32 && first < 127 && last > 32 && last < 127;
}

function compileChecker(column: ColumnSpec): Checker {
  switch (column.type) {
    case 'text':
      return textChecker(column);
    case 'integer':
      return integerChecker(column);
    case 'decimal':
      return decimalChecker(column);
    case 'boolean':
      return booleanChecker;
    case 'date':
      return dateChecker;
    case 'enum':
      return enumChecker(column);
  }
}

function codePointLength(value: string): number {
  let count = 0;
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i);
    if (code < 0xd800 || code > 0xdbff) count++;
  }
  return count;
}

function textChecker(column: ColumnSpec): Checker {
  const { maxLength, pattern } = column;
  const hint = column.patternHint ?? `to match ${String(pattern)}`;
  return (value) => {
    if (maxLength !== undefined && value.length > maxLength) {
      const length = codePointLength(value);
      if (length > maxLength) return new Issue('max_length', `is ${length} characters long, at most ${maxLength} allowed`);
    }
    if (pattern && !pattern.test(value)) return new Issue('pattern', `must be ${hint}, got ${show(value)}`);
    return value;
  };
}

function rangeIssue(column: ColumnSpec, number: number, value: string): Issue | undefined {
  if (column.min !== undefined && number < column.min) return new Issue('range', `must be at least ${column.min}, got ${show(value)}`);
  if (column.max !== undefined && number > column.max) return new Issue('range', `must be at most ${column.max}, got ${show(value)}`);
  return undefined;
}

const INTEGER = /^[+-]?\d+$/;

function integerChecker(column: ColumnSpec): Checker {
  return (value) => {
    // Fast path: up to 15 digits (a safe integer) without a sign or a leading zero are already the canonical text.
    if (value.length <= 15 && (value.length === 1 || value.charCodeAt(0) !== ZERO)) {
      const number = digitsValue(value, 0, value.length);
      if (number !== -1) return rangeIssue(column, number, value) ?? value;
    }
    if (!INTEGER.test(value)) return new Issue('type', `must be a whole number, got ${show(value)}${numberHint(value)}`);
    const number = Number(value);
    if (!Number.isSafeInteger(number)) return new Issue('range', `is too large, got ${show(value)}`);
    return rangeIssue(column, number, value) ?? String(number);
  };
}

const ZERO = 48;

/** The number the ASCII digits of value[from, to) spell (exact up to 15 digits), or -1 if there is anything else. */
function digitsValue(value: string, from: number, to: number): number {
  let number = 0;
  for (let i = from; i < to; i++) {
    const digit = value.charCodeAt(i) - ZERO;
    if (digit < 0 || digit > 9) return -1;
    number = number * 10 + digit;
  }
  return number;
}

const DECIMAL = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$/;

function decimalChecker(column: ColumnSpec): Checker {
  const { scale } = column;
  return (value) => {
    const point = value.indexOf('.');
    const decimals = point === -1 ? 0 : value.length - point - 1;
    const digits = point === -1 ? value.length : value.length - 1;
    // Fast path: 1 to 15 digits around at most one point, no sign. N / 10^decimals is rounded once from exact
    // operands, so it is the same double as Number(value) (both the nearest to the decimal).
    if (digits >= 1 && digits <= 15) {
      const integer = digitsValue(value, 0, point === -1 ? value.length : point);
      const fraction = digitsValue(value, value.length - decimals, value.length);
      if (integer !== -1 && fraction !== -1) {
        if (scale !== undefined && decimals > scale) return scaleIssue(scale, value);
        const number = (integer * POWERS_OF_TEN[decimals]! + fraction) / POWERS_OF_TEN[decimals]!;
        return rangeIssue(column, number, value) ?? (decimals === 0 && point !== -1 ? value.slice(0, -1) : value);
      }
    }
    if (!DECIMAL.test(value)) return new Issue('type', `must be a number such as 12.50, got ${show(value)}${numberHint(value)}`);
    if (scale !== undefined && decimals > scale) return scaleIssue(scale, value);
    const number = Number(value);
    const issue = rangeIssue(column, number, value);
    if (issue) return issue;
    // No `+`, and no `-` on a zero: the text written is the value the database stores (numeric has no -0).
    let normalised = value.charCodeAt(0) === 43 /* + */ || (number === 0 && value.charCodeAt(0) === 45) /* - */ ? value.slice(1) : value;
    if (normalised.endsWith('.')) normalised = normalised.slice(0, -1);
    return normalised;
  };
}

const POWERS_OF_TEN = Array.from({ length: 16 }, (_, power) => 10 ** power);

// Why a value that is not a number in our grammar was refused, when a common form explains it (RUNBOOK, "Numbers in
// CSV files"). Only for the message: what is accepted is decided by INTEGER and DECIMAL alone.
const NON_ASCII_DIGIT = /[^\P{Nd}0-9]/u;
const THOUSANDS = /^[+-]?\d{1,3}(?:[,'’_\s\u00a0\u202f]\d{3})+(?:\.\d*)?$/;
const DECIMAL_COMMA = /^[+-]?\d*,\d+$/;
const EXPONENT = /^[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d+$/;
const NOT_FINITE = /^[+-]?(?:nan|inf|infinity|∞)$/i;
const OTHER_SIGN = /^[\u2212\u2012\u2013\u2014\ufe63\uff0d\uff0b]/;

function numberHint(value: string): string {
  if (NON_ASCII_DIGIT.test(value)) return ' (write the digits 0-9: digits of other scripts and full-width digits are not read)';
  if (OTHER_SIGN.test(value)) return ' (write the sign as "-" or "+")';
  if (DECIMAL_COMMA.test(value) && !THOUSANDS.test(value)) return ' (use "." as the decimal point)';
  if (THOUSANDS.test(value)) return ' (no thousands separators; "." is the decimal point)';
  if (EXPONENT.test(value)) return ' (write the number out: no exponent)';
  if (NOT_FINITE.test(value)) return ' (only finite numbers)';
  return '';
}

function scaleIssue(scale: number, value: string): Issue {
  return new Issue('scale', `may have at most ${scale} digit(s) after the point, got ${show(value)}`);
}

const BOOLEANS = new Map<string, string>([
  ['true', 'true'], ['t', 'true'], ['yes', 'true'], ['y', 'true'], ['1', 'true'],
  ['false', 'false'], ['f', 'false'], ['no', 'false'], ['n', 'false'], ['0', 'false'],
]);

function booleanChecker(value: string): string | Issue {
  return BOOLEANS.get(value.toLowerCase()) ?? new Issue('type', `must be true or false (or yes/no, 1/0), got ${show(value)}`);
}

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;

function dateChecker(value: string): string | Issue {
  const match = DATE.exec(value);
  if (match) {
    const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
    const date = new Date(Date.UTC(year, month - 1, day));
    if (year >= 1 && date.getUTCFullYear() === year && date.getUTCMonth() === month - 1 && date.getUTCDate() === day) return value;
  }
  return new Issue('type', `must be a date written YYYY-MM-DD, got ${show(value)}`);
}

function enumChecker(column: ColumnSpec): Checker {
  const allowed = column.values ?? [];
  const byLowerCase = new Map(allowed.map((value) => [value.toLowerCase(), value]));
  // A value written exactly as it is stored maps to itself: found without lowercasing it.
  const stored = new Set(byLowerCase.values());
  const listed = allowed.join(', ');
  return (value) =>
    stored.has(value) ? value : (byLowerCase.get(value.toLowerCase()) ?? new Issue('enum', `must be one of ${listed}, got ${show(value)}`));
}
