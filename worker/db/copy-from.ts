// `COPY … FROM STDIN` of text lines on a connection the caller holds (inside its transaction). Lines are sent in
// pieces of about a megabyte with backpressure; a failure (a refused value, a lost connection) rejects and leaves the
// transaction for the caller to roll back.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import type pg from 'pg';
import type { PoolClient } from './pool.js';

const PIECE_CHARS = 1 << 20;

function* pieces(lines: readonly string[]): Generator<Buffer> {
  let start = 0;
  let chars = 0;
  for (let index = 0; index < lines.length; index++) {
    chars += lines[index]!.length;
    if (chars >= PIECE_CHARS) {
      yield Buffer.from(lines.slice(start, index + 1).join(''));
      start = index + 1;
      chars = 0;
    }
  }
  if (start < lines.length) yield Buffer.from(lines.slice(start).join(''));
}

/** Streams `source` (COPY data in pieces) into `copySql`; resolves with the rows copied. */
export async function copyFromSource(
  client: pg.ClientBase,
  copySql: string,
  source: Iterable<Buffer> | AsyncIterable<Buffer>,
): Promise<number> {
  const stream = client.query(copyFrom(copySql));
  await pipeline(Readable.from(source), stream);
  return stream.rowCount;
}

/** Streams `lines` (COPY text: one or more lines each, every line ending in a newline) into `copySql`; resolves with the rows copied. */
export function copyLinesFrom(client: PoolClient, copySql: string, lines: readonly string[]): Promise<number> {
  return copyFromSource(client, copySql, pieces(lines));
}
