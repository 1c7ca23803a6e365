// `COPY … FROM STDIN` through node-postgres without an extra package: a submittable query that streams the given
// chunks to the server (with backpressure) and resolves with the number of rows copied. The raw-COPY baseline of
// bench/csv.ts: the fastest way Postgres has to load rows.
import type pg from 'pg';

interface Connection {
  query(text: string): void;
  sendCopyFromChunk(chunk: Buffer): boolean | undefined;
  endCopyFrom(): void;
  sendCopyFail(message: string): void;
  stream: NodeJS.EventEmitter;
}

class CopyFromStdin {
  callback?: (error: Error | null) => void;
  private connection: Connection | undefined;
  private readyResolve!: () => void;
  readonly ready = new Promise<void>((resolve) => (this.readyResolve = resolve));
  private error: Error | null = null;
  private rows = 0;
  private doneResolve!: (rows: number) => void;
  private doneReject!: (error: Error) => void;
  readonly done = new Promise<number>((resolve, reject) => {
    this.doneResolve = resolve;
    this.doneReject = reject;
  });

  constructor(readonly text: string) {
    this.done.catch(() => {});
  }

  submit(connection: Connection): void {
    this.connection = connection;
    connection.query(this.text);
  }

  handleCopyInResponse(): void {
    this.readyResolve();
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.error) throw this.error;
    if (this.connection!.sendCopyFromChunk(chunk) === false) await new Promise((resolve) => this.connection!.stream.once('drain', resolve));
  }

  end(): void {
    this.connection!.endCopyFrom();
  }

  fail(message: string): void {
    this.connection!.sendCopyFail(message);
  }

  handleCommandComplete(message: { text: string }): void {
    this.rows = Number(message.text.split(' ').pop());
  }

  handleError(error: Error): void {
    this.error = error;
    this.readyResolve();
  }

  handleReadyForQuery(): void {
    if (this.error) {
      this.doneReject(this.error);
      this.callback?.(this.error);
    } else {
      this.doneResolve(this.rows);
      this.callback?.(null);
    }
  }

  handleRowDescription(): void {}
  handleDataRow(): void {}
  handleEmptyQuery(): void {}
  handleCopyData(): void {}
  handlePortalSuspended(): void {}
}

/** Streams `source` into `COPY <target> FROM STDIN …`; returns the rows copied. */
export async function copyFromStdin(client: pg.Client, statement: string, source: AsyncIterable<Buffer>): Promise<number> {
  const copy = new CopyFromStdin(statement);
  // A submittable query: node-postgres hands it the connection and routes the COPY protocol messages to it.
  client.query(copy as unknown as pg.QueryConfig);
  await copy.ready;
  try {
    for await (const chunk of source) await copy.write(chunk);
    copy.end();
  } catch (error) {
    copy.fail(String(error));
    await copy.done.catch(() => {});
    throw error;
  }
  return copy.done;
}
