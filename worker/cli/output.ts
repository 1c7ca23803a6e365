// How every command prints: `--json` gives machine-readable JSON only; humans get aligned tables and short lines.
import { Transform } from 'node:stream';

export interface OutputOptions {
  json?: boolean;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printLine(line = ''): void {
  process.stdout.write(`${terminalSafe(line)}\n`);
}

// Control characters but tab and newline (C0, DEL, C1), and the bidirectional overrides and isolates.
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g;

/**
 * `text` with every control character but tab and newline shown as `\xHH` (`\u202E` for a bidirectional override).
 * What the CLI prints for people comes in part from rows, file names and error messages that others wrote: an ESC
 * in a CSV field would otherwise drive the operator's terminal (clear the screen, retitle it, write the clipboard),
 * a carriage return or an override would hide or reorder what is shown.
 */
export function terminalSafe(text: string): string {
  return text.replace(UNPRINTABLE, (char) => {
    const code = char.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).toUpperCase()}`;
  });
}

/** Renders rows as an aligned table with a header; cells are stringified, missing ones print as `-`. */
export function formatTable(columns: string[], rows: Array<Array<unknown>>): string {
  const cells = rows.map((row) => columns.map((_, index) => formatCell(row[index])));
  const widths = columns.map((column, index) => Math.max(column.length, ...cells.map((row) => row[index]!.length)));
  const line = (values: string[]) =>
    values
      .map((value, index) => (index === values.length - 1 ? value : value.padEnd(widths[index]!)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((column) => column.toUpperCase())), ...cells.map(line)].join('\n');
}

// Line breaks and tabs in a cell, written as their escapes: a table row stays one line, and a file named `a\nb`
// is not shown as the different file `a b`.
const CELL_BREAKS: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t', '\u2028': '\\u2028', '\u2029': '\\u2029' };

function formatCell(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  if (value instanceof Date) return value.toISOString().replace(/\.\d{3}Z$/, 'Z');
  if (typeof value === 'object') return JSON.stringify(value);
  return terminalSafe(String(value).replace(/[\n\r\t\u2028\u2029]/g, (char) => CELL_BREAKS[char]!));
}

/** Bytes as a short human figure: 1.5 MiB. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

/** Milliseconds as a short duration: 1h02m, 3m05s, 4.2s. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  const seconds = Math.round(ms / 1000);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${String(m).padStart(2, '0')}m`;
  return `${m}m${String(s).padStart(2, '0')}s`;
}

/**
 * What `--csv` writes to a terminal: each line (one write) with its control characters shown as text (terminalSafe)
 * and its line end kept. A CSV of others' values is meant for a file or a pipe, which get it byte for byte; printed to
 * a terminal, an ESC in a field would drive it like any other output of the CLI.
 */
export function terminalSafeLines(): Transform {
  return new Transform({
    transform(chunk: Buffer | string, _encoding, done) {
      const text = chunk.toString();
      const end = /\r?\n$/.exec(text)?.[0] ?? '';
      done(null, terminalSafe(text.slice(0, text.length - end.length)) + end);
    },
  });
}
