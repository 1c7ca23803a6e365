// The records of a CSV object, read from its S3 stream a piece at a time: decoded with the run's encoding and split
// by the record parser. Validation reads a file once (twice when a key may repeat: duplicates.ts) and finalize reads
// it again; all of them read it through here, so every reading of a file sees the same records with the same line
// numbers.
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { CsvRecordParser, type CsvRecord } from './record-parser.js';
import { unescapeFormula } from './formula-escape.js';
import { ANNOTATION_COLUMNS } from './profile.js';

/** A row longer than this (in characters) is reported as an error instead of being read. */
export const MAX_ROW_CHARS = 1_048_576;

export interface RecordStreamOptions {
  delimiter: string;
  encoding: string;
  signal: AbortSignal;
}

export interface RecordStreamPosition {
  /** Bytes of the object read so far. */
  bytes: number;
}

/**
 * Yields the records of each piece of `body` (the array is reused: use it before asking for the next). `position`
 * counts the bytes read, for progress.
 */
export async function* csvRecords(
  body: AsyncIterable<Buffer>,
  options: RecordStreamOptions,
  position: RecordStreamPosition = { bytes: 0 },
): AsyncGenerator<CsvRecord[]> {
  const decoder = new TextDecoder(options.encoding);
  const parser = new CsvRecordParser({ delimiter: options.delimiter, maxRecordChars: MAX_ROW_CHARS });
  const records: CsvRecord[] = [];
  for await (const chunk of body) {
    if (options.signal.aborted) throw options.signal.reason;
    position.bytes += chunk.length;
    parser.push(decoder.decode(chunk, { stream: true }), records);
    yield records;
    records.length = 0;
    // Buffered pieces of the S3 stream arrive as promise continuations, which never let the event loop reach the
    // database sockets: writes in flight would wait for the whole file. Yield once per piece.
    await yieldToEventLoop();
  }
  parser.push(decoder.decode(), records);
  parser.end(records);
  yield records;
}

/**
 * Whether a file is a failed-rows export (its header has `_row`/`_errors`): its cells carry the export's formula
 * escape, which {@link unescapeFields} takes off again.
 */
export function isErrorExport(header: readonly string[]): boolean {
  return header.some((name) => (ANNOTATION_COLUMNS as readonly string[]).includes(name.trim().toLowerCase()));
}

export function unescapeFields(fields: string[]): void {
  for (let index = 0; index < fields.length; index++) fields[index] = unescapeFormula(fields[index]!);
}
