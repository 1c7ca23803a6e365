// A TCP proxy in front of the test Postgres whose established connections can be made to go silent: from then on
// what either side sends is dropped and nothing is closed, as when a failover takes the old primary's address away
// and its packets vanish. Connections opened afterwards pass as usual (they reach "the new primary"). `cutSilenced()`
// closes the silent ones at last, as TCP does once its retransmissions time out. `holdReplies()` delays instead of
// dropping: what the server sends on the connections open now waits in the proxy until `releaseReplies()`.
// `stallReplies(bytes)` lets that much more of the server's data through and then stops reading it, so the server's
// sends block, as when the path fails in the middle of a large answer.
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface SilencingProxy {
  /** A DATABASE_URL that goes through the proxy. */
  url: string;
  /**
   * Silences every connection open now; returns how many. 'to-server': only what the client sends is dropped (the
   * server's answers still arrive), as when the path fails just as a statement goes out.
   */
  silenceExisting(direction?: 'both' | 'to-server'): number;
  /** From now on, each new connection goes silent (both ways) at its first statement, after the handshake. */
  silenceNewAtFirstStatement(on: boolean): void;
  /** Closes the silenced connections (both sides). */
  cutSilenced(): void;
  /** Holds what the server sends on every connection open now (in order) until releaseReplies(); returns how many. */
  holdReplies(): number;
  /** How many chunks of the server's data wait in the proxy now: a test knows from it that a reply was held. */
  heldChunks(): number;
  /** Delivers what was held, and lets the server's data through again. */
  releaseReplies(): void;
  /**
   * On every connection open now: passes the next `bytes` of what the server sends, then reads nothing more from it
   * (the server's sends block once the buffers between are full). Returns how many connections.
   */
  stallReplies(bytes: number): number;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream: Socket;
  /** What the client sends is dropped. */
  silent: boolean;
  /** What the server sends is dropped. */
  deaf: boolean;
  /** Goes silent both ways at its first statement. */
  atFirstStatement: boolean;
  /** What the server sent while its replies are held; null when they pass. */
  held: Buffer[] | null;
  /** Bytes of the server's data still let through before it is no longer read; null: no stall. */
  stallAfter: number | null;
}

/** The frontend messages that start a statement: Query, Parse. (Startup and password messages come before.) */
const STATEMENT_MESSAGES = new Set(['Q'.charCodeAt(0), 'P'.charCodeAt(0)]);

export async function startSilencingProxy(databaseUrl: string): Promise<SilencingProxy> {
  const target = new URL(databaseUrl);
  const pairs = new Set<Pair>();
  let silenceAtFirstStatement = false;
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port || 5432), target.hostname);
    const pair: Pair = { client, upstream, silent: false, deaf: false, atFirstStatement: silenceAtFirstStatement, held: null, stallAfter: null };
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
      if (pair.atFirstStatement && STATEMENT_MESSAGES.has(chunk[0]!)) pair.silent = pair.deaf = true;
      if (!pair.silent) upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (pair.deaf) return;
      if (pair.stallAfter !== null) {
        const passed = chunk.subarray(0, pair.stallAfter);
        pair.stallAfter -= passed.length;
        if (passed.length > 0) client.write(passed);
        // The rest of this chunk is dropped, and nothing more is read: the server's sends fill the buffers and block.
        if (pair.stallAfter === 0) upstream.pause();
        return;
      }
      if (pair.held) pair.held.push(chunk);
      else client.write(chunk);
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
    silenceExisting(direction = 'both') {
      let count = 0;
      for (const pair of pairs) {
        if (!pair.silent) count += 1;
        pair.silent = true;
        if (direction === 'both') pair.deaf = true;
      }
      return count;
    },
    silenceNewAtFirstStatement(on) {
      silenceAtFirstStatement = on;
    },
    holdReplies() {
      for (const pair of pairs) pair.held ??= [];
      return pairs.size;
    },
    heldChunks() {
      let count = 0;
      for (const pair of pairs) count += pair.held?.length ?? 0;
      return count;
    },
    stallReplies(bytes) {
      for (const pair of pairs) pair.stallAfter = bytes;
      return pairs.size;
    },
    releaseReplies() {
      for (const pair of pairs) {
        const held = pair.held ?? [];
        pair.held = null;
        for (const chunk of held) pair.client.write(chunk);
      }
    },
    cutSilenced() {
      for (const pair of [...pairs]) {
        if (!pair.silent && !pair.deaf) continue;
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
