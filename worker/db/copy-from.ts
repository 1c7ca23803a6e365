// `COPY … FROM STDIN` on a connection the caller holds (inside its transaction): of data at hand, together with the
// statements around it in one round trip (runScriptWithCopyData), or of a stream too long to hold (copyFromSource).
// A failure (a refused value, a lost connection) rejects and leaves the transaction for the caller to roll back.
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { from as copyFrom } from 'pg-copy-streams';
import type pg from 'pg';

/** Streams `source` (COPY data in pieces, with backpressure) into `copySql`; resolves with the rows copied. */
export async function copyFromSource(
  client: pg.ClientBase,
  copySql: string,
  source: Iterable<Buffer> | AsyncIterable<Buffer>,
): Promise<number> {
  const stream = client.query(copyFrom(copySql));
  await pipeline(Readable.from(source), stream);
  return stream.rowCount;
}

// COPY's text format: a backslash, tab, line feed or carriage return inside a value is written as an escape.
const NEEDS_COPY_ESCAPE = /[\\\t\n\r]/;
const COPY_ESCAPES: Record<string, string> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

/** A value as COPY's text format writes it: null is `\N`, the four special characters are escaped. */
export function copyText(value: string | null): string {
  if (value === null) return '\\N';
  return NEEDS_COPY_ESCAPE.test(value) ? value.replace(/[\\\t\n\r]/g, (char) => COPY_ESCAPES[char]!) : value;
}

/** A text[] literal: every element quoted, `"` and `\` escaped. */
export function textArrayLiteral(elements: readonly string[]): string {
  return `{${elements.map((element) => `"${element.replace(/["\\]/g, (char) => `\\${char}`)}"`).join(',')}}`;
}

/** CopyData messages are cut at this size (the server takes up to 1 GB per message; smaller keeps buffers modest). */
const COPY_DATA_MESSAGE_BYTES = 1 << 20;
const COPY_DONE = Buffer.from([0x63, 0, 0, 0, 4]);

/** A Query message (simple protocol), then the CopyData messages of `data` and CopyDone, as one buffer. */
function queryAndCopyMessages(text: string, data: Buffer): Buffer {
  const query = Buffer.from(`${text}\0`);
  const head = Buffer.allocUnsafe(5);
  head[0] = 0x51;
  head.writeUInt32BE(query.length + 4, 1);
  const parts: Buffer[] = [head, query];
  for (let offset = 0; offset < data.length; offset += COPY_DATA_MESSAGE_BYTES) {
    const piece = data.subarray(offset, offset + COPY_DATA_MESSAGE_BYTES);
    const header = Buffer.allocUnsafe(5);
    header[0] = 0x64;
    header.writeUInt32BE(piece.length + 4, 1);
    parts.push(header, piece);
  }
  parts.push(COPY_DONE);
  return Buffer.concat(parts);
}

/** What the server said to a script: each statement's command tag (`COPY 500`, `UPDATE 1` …) in order. */
export interface ScriptResult {
  commandTags: string[];
}

/**
 * A simple-protocol query whose text holds one `COPY … FROM STDIN` among other statements, run as a query object
 * node-postgres treats like any other (its "submittable" interface, the one pg-cursor and pg-copy-streams use). The
 * query and all its COPY data go out in one socket write: the server reads the data when it reaches the COPY. When a
 * statement before the COPY fails, the server skips the rest of the text and drops the data (the protocol has it
 * ignore CopyData and CopyDone outside a COPY), so the data never lands anywhere else.
 * Why: a finalize batch as BEGIN, checks, COPY and COMMIT in separate round trips spends more time waiting on the
 * network than copying; here it is one round trip.
 */
class ScriptWithCopyData {
  private error: Error | undefined;
  private readonly commandTags: string[] = [];
  private settled = false;

  constructor(
    readonly text: string,
    private readonly messages: Buffer,
    private readonly done: (error: Error | undefined, result: ScriptResult) => void,
  ) {}

  submit(connection: { stream: { write(data: Buffer): boolean } }): void {
    connection.stream.write(this.messages);
  }

  handleCommandComplete(message: { text?: string }): void {
    this.commandTags.push(message.text ?? '');
  }

  handleError(error: Error): void {
    // node-postgres ends the query at its first error (it handles the ReadyForQuery that follows itself).
    this.error ??= error;
    this.finish();
  }

  handleReadyForQuery(): void {
    this.finish();
  }

  private finish(): void {
    if (this.settled) return;
    this.settled = true;
    this.done(this.error, { commandTags: this.commandTags });
  }

  // The data went out with the query; rows of the script's SELECTs are not needed (its checks raise errors).
  handleCopyInResponse(): void {}
  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handlePortalSuspended(): void {}
  handleCopyData(): void {}
}

/**
 * Runs `script` (statements separated by semicolons, exactly one of them `COPY … FROM STDIN`, no parameters) with
 * `lines` (COPY text, each ending in a newline) as the COPY's data, in one round trip. Rejects with the first error;
 * a transaction the script opened is then left aborted for the caller to roll back.
 */
export function runScriptWithCopyData(client: pg.ClientBase, script: string, lines: readonly string[]): Promise<ScriptResult> {
  const messages = queryAndCopyMessages(script, Buffer.from(lines.join('')));
  return new Promise((resolve, reject) => {
    const query = new ScriptWithCopyData(script, messages, (error, result) => (error ? reject(error) : resolve(result)));
    (client as unknown as { query(submittable: ScriptWithCopyData): unknown }).query(query);
  });
}
