// A TCP switch in front of the S3 server, to stop S3 as a whole and start it again: while off, every live connection
// is cut (a response body stops mid-stream) and every new connection is reset at once — the client sees what it sees
// when the S3 endpoint goes away. Counts the connections it turned away (tests wait for "the worker tried N more
// times" instead of guessing at time), can switch itself off once the clients have sent a number of bytes (an outage
// in the middle of an upload campaign, wherever the run is by then), and can hold a response once a number of its
// bytes went through (an outage in the middle of a read).
import { EventEmitter } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

export interface S3Switch extends EventEmitter<{ off: []; refused: [count: number]; held: [] }> {
  endpoint: string;
  readonly isOn: boolean;
  /** Connections turned away while off. */
  readonly refused: number;
  /** Bytes the clients sent through while on (requests and uploads). */
  readonly bytesUp: number;
  /** Switches off: cuts every connection, resets new ones. */
  stop(): void;
  /** Switches on again: connections go through. */
  start(): void;
  /** Switch off by itself once the clients have sent this many bytes in all. */
  offAfterBytesUp(bytes: number): void;
  /** Hold the response under way once this many more bytes have gone down (stop forwarding it, keep the connection); emits `held`. */
  holdResponseAfter(bytes: number): void;
  close(): Promise<void>;
}

export async function startS3Switch(target: string): Promise<S3Switch> {
  const upstream = new URL(target);
  const pairs = new Set<{ client: Socket; server: Socket }>();
  let on = true;
  let refused = 0;
  let bytesUp = 0;
  let offAt: number | undefined;
  let holdAfter: number | undefined;
  // Bytes sent down (every connection) since holdResponseAfter: a kept-alive connection may have carried a response
  // of its own before, so its own count says nothing of the response now under way.
  let downSinceArmed = 0;

  const cutAll = () => {
    for (const pair of pairs) {
      pair.client.destroy();
      pair.server.destroy();
    }
    pairs.clear();
  };

  const server = createServer((client) => {
    if (!on) {
      refused += 1;
      client.resetAndDestroy();
      emitter.emit('refused', refused);
      return;
    }
    const upstreamSocket = connect({ host: upstream.hostname, port: Number(upstream.port) });
    const pair = { client, server: upstreamSocket };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstreamSocket.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstreamSocket.on('error', drop).on('close', drop);
    client.on('data', (chunk: Buffer) => {
      bytesUp += chunk.length;
      upstreamSocket.write(chunk);
      if (offAt !== undefined && bytesUp >= offAt) {
        offAt = undefined;
        emitter.stop();
      }
    });
    upstreamSocket.on('data', (chunk: Buffer) => {
      if (holdAfter !== undefined && downSinceArmed + chunk.length > holdAfter) {
        // Pass what fits, then hold the rest of this response: the client has part of the body.
        const fits = Math.max(0, holdAfter - downSinceArmed);
        client.write(chunk.subarray(0, fits));
        holdAfter = undefined;
        upstreamSocket.pause();
        emitter.emit('held');
        return;
      }
      downSinceArmed += chunk.length;
      client.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

  // A plain object with accessors (Object.assign would copy the getters' values once).
  const emitter = new EventEmitter<{ off: []; refused: [count: number]; held: [] }>() as S3Switch;
  Object.defineProperties(emitter, {
    endpoint: { value: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, writable: true },
    isOn: { get: () => on },
    refused: { get: () => refused },
    bytesUp: { get: () => bytesUp },
  });
  Object.assign(emitter, {
    stop() {
      if (!on) return;
      on = false;
      cutAll();
      emitter.emit('off');
    },
    start() {
      on = true;
    },
    offAfterBytesUp(bytes: number) {
      offAt = bytesUp + bytes;
    },
    holdResponseAfter(bytes: number) {
      holdAfter = bytes;
      downSinceArmed = 0;
    },
    async close() {
      cutAll();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  });
  return emitter;
}
