// Splits CSV text into records (RFC 4180: quoted fields, "" inside quotes, CRLF/LF/CR line ends) as it streams in,
// and numbers each record by the line it starts on. Unlike a general-purpose parser it never gives up on a file: a
// malformed record becomes a record with a `problem`, and parsing carries on with the next line, so one bad line costs
// one row, not the rest of the file:
// - text after a closing quote (`"ab"c`) keeps the text and flags the record;
// - a quote that is never closed, or a record longer than `maxRecordChars`, flags the record at the line it starts
//   on and resumes at the next line (memory stays bounded by `maxRecordChars`, however long the line is);
// - a quoted field that runs over line breaks but leaves the record malformed (text after its closing quote, or
//   another number of fields than the first record, the header) is read as a stray quote too: the first line is flagged
//   and the lines after it are read as rows of their own, instead of being swallowed into one broken record;
// - a quote inside an unquoted field (`5" screen`) is kept as a character, as spreadsheet exports write it.
// Empty and blank lines are skipped (they still count for line numbers).
// A line that is a whole, well-formed record (the common case) is split on a fast path: indexOf finds its line break
// and delimiters and its fields are slices of the piece of text. parseRecord, a character-by-character reader, reads
// every other record (quoted fields over lines, malformed or over-long records, the unfinished one at a piece's end);
// both read a line the same way.

export interface CsvRecord {
  /** The line of the file on which the record starts (1-based). */
  line: number;
  /** The fields as read; null when the record could not be split into fields (see problem). */
  fields: string[] | null;
  /** Why the record is malformed, in words; undefined for a well-formed record. */
  problem?: string;
}

export interface CsvRecordParserOptions {
  /** A single character; default ",". */
  delimiter?: string;
  /** A record longer than this (in characters) is reported instead of read. */
  maxRecordChars: number;
}

const QUOTE = 34;
const CR = 13;
const LF = 10;
const EXCERPT_CHARS = 60;

type Attempt =
  | { kind: 'record'; end: number; lines: number; fields: string[]; problem: string | undefined }
  | { kind: 'incomplete' }
  | { kind: 'unclosed-quote' }
  | { kind: 'too-long'; inQuote: boolean };

const INCOMPLETE: Attempt = { kind: 'incomplete' };
const UNCLOSED: Attempt = { kind: 'unclosed-quote' };
const TOO_LONG_IN_QUOTE: Attempt = { kind: 'too-long', inQuote: true };
const TOO_LONG: Attempt = { kind: 'too-long', inQuote: false };

export class CsvRecordParser {
  private readonly delimiter: number;
  private readonly delimiterChar: string;
  private readonly maxChars: number;
  /** Text of the record being read, from its first character. */
  private pending = '';
  /** The line on which `pending` starts. */
  private line = 1;
  /** Discarding the rest of an over-long line: where it started and whether it was reported already. */
  private skipping: { line: number; reported: boolean; excerpt: string } | undefined;
  /** Fields a row must have: the count of the first record (the header). */
  private expectedFields: number | undefined;

  constructor(options: CsvRecordParserOptions) {
    const delimiter = options.delimiter ?? ',';
    if (delimiter.length !== 1 || /["\r\n]/.test(delimiter)) {
      throw new Error(`CSV delimiter must be one character other than a quote or a line break, got ${JSON.stringify(delimiter)}`);
    }
    this.delimiter = delimiter.charCodeAt(0);
    this.delimiterChar = delimiter;
    this.maxChars = options.maxRecordChars;
  }

  /** Parses the next piece of text; completed records are appended to `out`. */
  push(text: string, out: CsvRecord[]): void {
    if (this.pending.length > 0) {
      // Finish the record cut by the piece boundary on a short string of its own (up to the first LF of `text`), so
      // that `text` is not copied into one string with it: the fields of the rows after it are slices of `text`.
      const head = text.indexOf('\n') + 1;
      if (head > 0) this.drain(this.pending + text.slice(0, head), false, out);
      // The rest of `text`, a slice of it, unless the record did not end at that LF (then joined to what is left).
      text = this.pending + text.slice(head);
    }
    this.drain(text, false, out);
  }

  /** End of input: the last record, and a report for a quote left open. */
  end(out: CsvRecord[]): void {
    this.drain(this.pending, true, out);
    this.pending = '';
  }

  private drain(buf: string, final: boolean, out: CsvRecord[]): void {
    let pos = 0;
    const length = buf.length;
    const lfs = new NextIndex(buf, '\n');
    const crs = new NextIndex(buf, '\r');
    const delimiters = new NextIndex(buf, this.delimiterChar);
    while (pos < length) {
      if (this.skipping) {
        const next = this.skipLine(buf, pos, final, out);
        if (next.wait) {
          pos = next.pos;
          break;
        }
        pos = next.pos;
        continue;
      }
      // Fast path, the common line: within the limit, its line break in `buf` (a CR at its end could be the first
      // half of a CRLF), its quoted fields, if any, closed on it. Anything else is left to parseRecord.
      const lf = lfs.from(pos);
      const lineEnd = Math.min(lf, crs.from(pos));
      const fields =
        lineEnd - pos <= this.maxChars && (lineEnd + 1 < length || (final && lineEnd < length))
          ? this.splitLine(buf, pos, lineEnd, delimiters)
          : undefined;
      if (fields) {
        if (!(fields.length === 1 && fields[0]!.trim() === '')) {
          out.push({ line: this.line, fields });
          this.expectedFields ??= fields.length;
        }
        this.line += 1;
        pos = lineEnd !== lf && buf.charCodeAt(lineEnd + 1) === LF ? lineEnd + 2 : lineEnd + 1;
        continue;
      }
      const next = this.readRecord(buf, pos, final, out);
      if (next === undefined) break;
      pos = next;
    }
    if (final && this.skipping) this.finishSkipping(out);
    this.pending = pos < length ? buf.slice(pos) : '';
  }

  /**
   * Reads the record at `pos` character by character (parseRecord) and appends it, or what makes it malformed, to
   * `out`. Returns where reading goes on, or undefined when the record is not complete in `buf` (wait for more text).
   */
  private readRecord(buf: string, pos: number, final: boolean, out: CsvRecord[]): number | undefined {
    const attempt = this.parseRecord(buf, pos, final);
    if (
      attempt.kind === 'record' &&
      attempt.lines > 1 &&
      (attempt.problem !== undefined || (this.expectedFields !== undefined && attempt.fields.length !== this.expectedFields))
    ) {
      out.push({
        line: this.line,
        fields: null,
        problem: `a quote on this line opens a field that runs over the next line(s) and leaves the row malformed (a stray quote?): ${excerptOf(buf, pos)}`,
      });
      pos = afterLineBreak(buf, findLineBreak(buf, pos));
      this.line += 1;
    } else if (attempt.kind === 'record') {
      const { fields } = attempt;
      if (!(fields.length === 1 && fields[0]!.trim() === '' && attempt.problem === undefined)) {
        out.push(attempt.problem === undefined ? { line: this.line, fields } : { line: this.line, fields, problem: attempt.problem });
        this.expectedFields ??= fields.length;
      }
      this.line += attempt.lines;
      pos = attempt.end;
    } else if (attempt.kind === 'incomplete') {
      return undefined;
    } else if (attempt.kind === 'unclosed-quote' || attempt.inQuote) {
      // Which quote opened the runaway field is unknown; the likeliest reading is a stray quote on the record's
      // first line, so report that line and read the file again from the next one.
      const excerpt = excerptOf(buf, pos);
      out.push({
        line: this.line,
        fields: null,
        problem:
          attempt.kind === 'unclosed-quote'
            ? `a quoted field on this line is never closed (the file ends inside it): ${excerpt}`
            : `a quoted field on this line is not closed within ${this.maxChars.toLocaleString('en')} characters: ${excerpt}`,
      });
      const lineEnd = findLineBreak(buf, pos);
      if (lineEnd === -1 || (buf.charCodeAt(lineEnd) === CR && lineEnd + 1 === buf.length && !final)) {
        this.skipping = { line: this.line, reported: true, excerpt };
        return lineEnd === -1 ? buf.length : lineEnd;
      }
      pos = afterLineBreak(buf, lineEnd);
      this.line += 1;
    } else {
      // Too long outside quotes: the record ends at the next line break; count the lines its quoted fields held.
      this.skipping = { line: this.line, reported: false, excerpt: excerptOf(buf, pos) };
      this.line += countLineBreaks(buf, pos, pos + this.maxChars + 1);
      pos += this.maxChars + 1;
    }
    return pos;
  }

  /**
   * Discards the rest of an over-long (or runaway) line: returns the position after its line break, or, when the
   * break is not in `buf` yet (`wait`), where to go on once the next piece arrives.
   */
  private skipLine(buf: string, pos: number, final: boolean, out: CsvRecord[]): { pos: number; wait: boolean } {
    const lineEnd = findLineBreak(buf, pos);
    if (lineEnd === -1) return { pos: buf.length, wait: true };
    // A CRLF may be split across pieces: decide with the next one.
    if (buf.charCodeAt(lineEnd) === CR && lineEnd + 1 === buf.length && !final) return { pos: lineEnd, wait: true };
    this.finishSkipping(out);
    this.line += 1;
    return { pos: afterLineBreak(buf, lineEnd), wait: false };
  }

  private finishSkipping(out: CsvRecord[]): void {
    const skipped = this.skipping!;
    this.skipping = undefined;
    if (!skipped.reported) {
      out.push({
        line: skipped.line,
        fields: null,
        problem: `the row is longer than ${this.maxChars.toLocaleString('en')} characters, so it was not read: ${skipped.excerpt}`,
      });
    }
  }

  /**
   * The fields of the line buf[start, end), as parseRecord reads them, when it is a plain one: each quoted field
   * closes on the line and is followed by a delimiter or the line's end. Otherwise undefined.
   */
  private splitLine(buf: string, start: number, end: number, delimiters: NextIndex): string[] | undefined {
    // Sized for the header's field count: a piece's records are kept until they are handled, and an array grown by
    // push() would reserve 17 slots.
    const fields: string[] = new Array(this.expectedFields ?? 0);
    let count = 0;
    let from = start;
    for (;;) {
      let next: number;
      if (buf.charCodeAt(from) === QUOTE) {
        let close = buf.indexOf('"', from + 1);
        let escaped = false;
        while (close !== -1 && close < end && buf.charCodeAt(close + 1) === QUOTE) {
          escaped = true;
          close = buf.indexOf('"', close + 2);
        }
        if (close === -1 || close >= end) return undefined; // the field runs over the line
        const value = buf.slice(from + 1, close);
        fields[count++] = escaped ? value.replaceAll('""', '"') : value;
        next = close + 1;
        if (next < end && buf.charCodeAt(next) !== this.delimiter) return undefined; // text after the closing quote
      } else {
        next = Math.min(delimiters.from(from), end);
        fields[count++] = buf.slice(from, next);
      }
      if (next === end) break;
      from = next + 1;
    }
    if (count !== fields.length) fields.length = count; // a row with fewer fields than the header
    return fields;
  }

  /** Reads one record starting at `start`, or says why it cannot yet (or ever). */
  private parseRecord(buf: string, start: number, final: boolean): Attempt {
    const length = buf.length;
    const limit = start + this.maxChars;
    const delimiter = this.delimiter;
    const fields: string[] = [];
    let lines = 1;
    let problem: string | undefined;
    let i = start;
    for (;;) {
      if (i < length && buf.charCodeAt(i) === QUOTE) {
        let value = '';
        let segment = i + 1;
        let from = segment;
        for (;;) {
          const quote = buf.indexOf('"', from);
          // The record's characters run up to and with the closing quote: one at `limit` or later makes it longer
          // than maxChars, the rule of an unquoted field (`k > limit`) and of the fast path.
          if (quote === -1 || quote >= limit) {
            if (quote >= limit || length >= limit) return TOO_LONG_IN_QUOTE;
            return final ? UNCLOSED : INCOMPLETE;
          }
          if (quote + 1 === length && !final) return INCOMPLETE; // is a second quote (an escaped one) next?
          if (buf.charCodeAt(quote + 1) === QUOTE) {
            value += buf.slice(segment, quote + 1);
            from = quote + 2;
            segment = from;
            continue;
          }
          value += buf.slice(segment, quote);
          i = quote + 1;
          break;
        }
        if (value.indexOf('\n') !== -1 || value.indexOf('\r') !== -1) lines += countLineBreaks(value, 0, value.length);
        if (i < length) {
          let code = buf.charCodeAt(i);
          if (code !== delimiter && code !== CR && code !== LF) {
            problem ??= `unexpected text after the closing quote of field ${fields.length + 1}`;
            let k = i;
            while (k < length && (code = buf.charCodeAt(k)) !== delimiter && code !== CR && code !== LF) k++;
            if (k > limit) return TOO_LONG;
            if (k === length && !final) return INCOMPLETE;
            value += buf.slice(i, k);
            i = k;
          }
        }
        fields.push(value);
      } else {
        // A field that starts at the end of the text so far: whether it is quoted (which decides how an over-long
        // record is skipped) is told by the next piece.
        if (i === length && !final) return INCOMPLETE;
        let k = i;
        while (k < length) {
          const code = buf.charCodeAt(k);
          if (code === delimiter || code === CR || code === LF) break;
          k++;
        }
        if (k > limit) return TOO_LONG;
        if (k === length && !final) return INCOMPLETE;
        fields.push(buf.slice(i, k));
        i = k;
      }
      if (i >= length) return { kind: 'record', end: i, lines, fields, problem };
      const code = buf.charCodeAt(i);
      if (code === delimiter) {
        i += 1;
        continue;
      }
      if (code === LF) return { kind: 'record', end: i + 1, lines, fields, problem };
      if (i + 1 === length && !final) return INCOMPLETE; // CR: is an LF next?
      return { kind: 'record', end: buf.charCodeAt(i + 1) === LF ? i + 2 : i + 1, lines, fields, problem };
    }
  }
}

/** Where `char` next occurs in `buf` at or after a position (`buf.length` if nowhere), remembered until passed. */
class NextIndex {
  private at = -1;

  constructor(
    private readonly buf: string,
    private readonly char: string,
  ) {}

  from(position: number): number {
    if (this.at < position) {
      const at = this.buf.indexOf(this.char, position);
      this.at = at === -1 ? this.buf.length : at;
    }
    return this.at;
  }
}

function findLineBreak(buf: string, from: number): number {
  const lf = buf.indexOf('\n', from);
  const cr = buf.indexOf('\r', from);
  if (lf === -1) return cr;
  if (cr === -1) return lf;
  return Math.min(lf, cr);
}

function afterLineBreak(buf: string, at: number): number {
  return buf.charCodeAt(at) === CR && buf.charCodeAt(at + 1) === LF ? at + 2 : at + 1;
}

/** Line breaks (CRLF, LF or CR) in buf[from, to). */
function countLineBreaks(buf: string, from: number, to: number): number {
  let count = 0;
  for (let i = from; i < to; i++) {
    const code = buf.charCodeAt(i);
    if (code === LF) count++;
    else if (code === CR) {
      count++;
      if (buf.charCodeAt(i + 1) === LF) i++;
    }
  }
  return count;
}

function excerptOf(buf: string, start: number): string {
  const lineEnd = findLineBreak(buf, start);
  const end = Math.min(lineEnd === -1 ? buf.length : lineEnd, start + EXCERPT_CHARS);
  const text = buf.slice(start, end);
  return JSON.stringify(end - start === EXCERPT_CHARS ? `${text}…` : text);
}
