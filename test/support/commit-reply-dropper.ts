// A TCP proxy in front of the test Postgres that can lose the answer to a COMMIT: the server receives the COMMIT and
// commits, then the proxy cuts the client's connection before the reply reaches it. The client sees a connection
// error without a SQLSTATE, the case where a transaction's outcome is unknown (an RDS failover at the wrong moment).
// It reads the frontend protocol just enough to spot a simple-query `COMMIT` (what pg sends for client.query('COMMIT')).
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface CommitReplyDropper {
  /** A DATABASE_URL that goes through the proxy. */
  url: string;
  /** The reply to the `n`-th COMMIT from now (1 = the next one) is lost; resolves once that has happened. */
  dropReplyToCommit(n?: number): Promise<void>;
  /** COMMITs seen so far. */
  commits(): number;
  close(): Promise<void>;
}

export async function startCommitReplyDropper(databaseUrl: string): Promise<CommitReplyDropper> {
  const target = new URL(databaseUrl);
  let seen = 0;
  let armed: { at: number; done: () => void } | undefined;
  const sockets = new Set<Socket>();

  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    sockets.add(client).add(upstream);
    let buffered = Buffer.alloc(0);
    let startupDone = false;
    let dropNextReply: (() => void) | undefined;
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);

    client.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      // Forward whole messages only, noting any COMMIT among them.
      for (;;) {
        if (!startupDone) {
          if (buffered.length < 4) break;
          const length = buffered.readInt32BE(0);
          if (buffered.length < length) break;
          upstream.write(buffered.subarray(0, length));
          buffered = buffered.subarray(length);
          startupDone = true;
          continue;
        }
        if (buffered.length < 5) break;
        const length = buffered.readInt32BE(1) + 1;
        if (buffered.length < length) break;
        const message = buffered.subarray(0, length);
        buffered = buffered.subarray(length);
        if (message[0] === 0x51 /* Q */ && /^\s*COMMIT\s*;?\s*$/i.test(message.subarray(5, length - 1).toString('utf8'))) {
          seen += 1;
          if (armed && seen === armed.at) {
            const { done } = armed;
            armed = undefined;
            dropNextReply = done;
          }
        }
        upstream.write(message);
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (dropNextReply) {
        // The server has answered the COMMIT, so it has committed: the client never hears it.
        const done = dropNextReply;
        dropNextReply = undefined;
        end();
        done();
        return;
      }
      client.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('proxy has no address');
  const url = new URL(databaseUrl);
  url.hostname = '127.0.0.1';
  url.port = String(address.port);

  return {
    url: url.toString(),
    dropReplyToCommit: (n = 1) => new Promise<void>((resolve) => (armed = { at: seen + n, done: resolve })),
    commits: () => seen,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
