// A small HTTP proxy in front of the real S3 server that injects faults: 503 SlowDown, 500 InternalError, 400
// ExpiredToken, connection
// resets and stalls (no answer at all), chosen per request by the test; plus latency, and a "hold" mode that lets a
// request reach S3 but keeps its answer back (the object is written, the client never hears so). `decide` may also
// answer with a promise: the request waits, unread, until it settles (a test acts on the moment an upload begins —
// rewrites the file, reads the progress — and then lets it go on). Headers (Host included, which SigV4 signs) are
// forwarded unchanged, so the S3 server still verifies every signature. `uploadBytesPerSecond` sends request bodies
// on at that rate at most, as a slow link does.
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { Transform } from 'node:stream';

/** 'cut': the request is forwarded, and its answer's connection is reset after `cutAfterBytes` of its body. */
export type Fault = 'pass' | 'slowdown' | 'internal' | 'expired-token' | 'access-denied' | 'reset' | 'stall' | 'cut';

export interface ProxiedRequest {
  method: string;
  /** Path and query as the client sent them. */
  url: string;
  /** How many requests with the same method and URL came before this one (0 for the first). */
  previousTries: number;
  /** Running number of the request. */
  seq: number;
}

export interface FaultyS3Proxy {
  endpoint: string;
  /** Decides each request's fate; default: pass everything. A promise holds the request until it settles. */
  decide: (request: ProxiedRequest) => Fault | Promise<Fault>;
  latencyMs: number;
  /** Request bodies are sent on at this rate at most (bytes per second); null: as fast as they come. */
  uploadBytesPerSecond: number | null;
  /** How much of an answer's body a 'cut' request gets before its connection is reset. */
  cutAfterBytes: number;
  /** While true, forwarded requests' answers are held back (see releaseHeld). */
  holdResponses: boolean;
  readonly stats: { requests: number; byMethod: Record<string, number>; faults: Record<Fault, number>; held: number };
  /** Drops every held answer (their clients are usually gone) and stops holding new ones. */
  dropHeld(): void;
  resetStats(): void;
  close(): Promise<void>;
}

const ERROR_BODIES: Record<'slowdown' | 'internal' | 'expired-token' | 'access-denied', { status: number; code: string; message: string }> = {
  slowdown: { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' },
  internal: { status: 500, code: 'InternalError', message: 'We encountered an internal error. Please try again.' },
  // S3's answer to a request signed with credentials that expired meanwhile.
  'expired-token': { status: 400, code: 'ExpiredToken', message: 'The provided token has expired.' },
  // What S3 answers for a missing key to a role that may not list the bucket, as for a key the role may not read.
  'access-denied': { status: 403, code: 'AccessDenied', message: 'Access Denied' },
};

export async function startFaultyS3Proxy(target: string): Promise<FaultyS3Proxy> {
  const upstream = new URL(target);
  const tries = new Map<string, number>();
  const sockets = new Set<Socket>();
  const held: Array<() => void> = [];
  let seq = 0;
  const emptyStats = () => ({
    requests: 0,
    byMethod: {} as Record<string, number>,
    faults: { pass: 0, slowdown: 0, internal: 0, 'expired-token': 0, 'access-denied': 0, reset: 0, stall: 0, cut: 0 } as Record<Fault, number>,
    held: 0,
  });

  const proxy: FaultyS3Proxy = {
    endpoint: '',
    decide: () => 'pass',
    latencyMs: 0,
    uploadBytesPerSecond: null,
    cutAfterBytes: 64 * 1024,
    holdResponses: false,
    stats: emptyStats(),
    dropHeld() {
      proxy.holdResponses = false;
      for (const drop of held.splice(0)) drop();
    },
    resetStats() {
      Object.assign(proxy.stats, emptyStats());
    },
    async close() {
      proxy.dropHeld();
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  const forward = (req: IncomingMessage, res: ServerResponse, cut = false) => {
    const outgoing = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        const reply = () => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          if (!cut) return answer.pipe(res);
          let left = proxy.cutAfterBytes;
          answer.on('data', (chunk: Buffer) => {
            if (left <= 0) return;
            res.write(chunk.subarray(0, left));
            left -= chunk.length;
            if (left <= 0) {
              answer.destroy();
              res.socket?.destroy();
            }
          });
          answer.on('end', () => res.end());
        };
        if (!proxy.holdResponses) return reply();
        proxy.stats.held += 1;
        held.push(() => {
          answer.resume();
          res.socket?.destroy();
        });
      },
    );
    outgoing.on('error', () => res.socket?.destroy());
    if (proxy.uploadBytesPerSecond === null) req.pipe(outgoing);
    else req.pipe(throttled(proxy.uploadBytesPerSecond)).pipe(outgoing);
  };

  const server = createServer((req, res) => {
    const method = req.method ?? 'GET';
    const id = `${method} ${req.url}`;
    const previousTries = tries.get(id) ?? 0;
    tries.set(id, previousTries + 1);
    proxy.stats.requests += 1;
    proxy.stats.byMethod[method] = (proxy.stats.byMethod[method] ?? 0) + 1;
    const decided = proxy.decide({ method, url: req.url ?? '/', previousTries, seq: seq++ });
    if (decided instanceof Promise) {
      req.pause();
      decided.then(
        (fault) => handle(req, res, fault),
        () => req.socket.destroy(),
      );
      return;
    }
    handle(req, res, decided);
  });
  const handle = (req: IncomingMessage, res: ServerResponse, fault: Fault) => {
    proxy.stats.faults[fault] += 1;
    const act = () => {
      if (fault === 'pass' || fault === 'cut') return forward(req, res, fault === 'cut');
      if (fault === 'reset') return req.socket.destroy();
      // Read the request body first, as a real server does before it answers.
      req.resume();
      req.on('end', () => {
        if (fault === 'stall') return; // no answer: the client's timeout has to notice
        const body = ERROR_BODIES[fault];
        const xml =
          `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${body.code}</Code><Message>${body.message}</Message>` +
          `<RequestId>faulty-proxy-${seq}</RequestId></Error>`;
        res.writeHead(body.status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(xml) });
        res.end(xml);
      });
    };
    if (proxy.latencyMs > 0) setTimeout(act, proxy.latencyMs);
    else act();
  };
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}

/** Passes bytes on no faster than `bytesPerSecond`, counted from the first. */
function throttled(bytesPerSecond: number): Transform {
  let started: number | undefined;
  let passed = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, done) {
      started ??= Date.now();
      passed += chunk.length;
      const due = started + (passed / bytesPerSecond) * 1000;
      setTimeout(() => done(null, chunk), Math.max(0, due - Date.now()));
    },
  });
}
