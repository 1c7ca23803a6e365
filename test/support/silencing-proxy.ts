// A TCP proxy in front of the test Postgres whose established connections can be made to go silent: from then on
// what either side sends is dropped and nothing is closed, as when a failover takes the old primary's address away
// and its packets vanish. Connections opened afterwards pass as usual (they reach "the new primary"). `cutSilenced()`
// closes the silent ones at last, as TCP does once its retransmissions time out.
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface SilencingProxy {
  /** A DATABASE_URL that goes through the proxy. */
  url: string;
  /** Silences every connection open now; returns how many. */
  silenceExisting(): number;
  /** Closes the silenced connections (both sides). */
  cutSilenced(): void;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  silent: boolean;
}

export async function startSilencingProxy(databaseUrl: string): Promise<SilencingProxy> {
  const target = new URL(databaseUrl);
  const pairs = new Set<Pair>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    const pair: Pair = { client, upstream, silent: false };
    pairs.add(pair);
    const end = () => {
      client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    // Forwarded only while the pair is not silent; read and dropped after, so no side sees back-pressure either.
    client.on('data', (chunk: Buffer) => {
      if (!pair.silent) upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!pair.silent) client.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('the proxy has no TCP address');
  const url = new URL(databaseUrl);
  url.hostname = '127.0.0.1';
  url.port = String(address.port);
  return {
    url: url.toString(),
    silenceExisting() {
      let count = 0;
      for (const pair of pairs) {
        if (!pair.silent) count += 1;
        pair.silent = true;
      }
      return count;
    },
    cutSilenced() {
      for (const pair of [...pairs]) {
        if (!pair.silent) continue;
        pair.client.destroy();
        pair.upstream.destroy();
        pairs.delete(pair);
      }
    },
    async close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
