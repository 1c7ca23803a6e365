// A multipart upload that S3 stops answering, against a local endpoint that takes the parts' bytes and never answers:
// after the upload times out, or is canceled, no request of it is left open (the server sees every part request end)
// and AbortMultipartUpload goes out only after the last part request ended — a part that lands after the abort would
// be stored (and billed) again, and a stalled part held its 5–8 MiB buffer for as long as the socket lived.
// The timeout is driven by the test (fake Date and setInterval, advanced once both part requests arrived), never by
// the machine's speed. A part's request may take its size at 1 MiB/s when that is longer than the request timeout
// (the SDK's requestTimeout bounds a body's whole upload, and parts of files over ~80 GiB are over 8 MiB).
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createS3Client } from '../worker/storage/s3-client.js';
import { partSizeFor, partTimeoutFor, uploadFileWithSha256, UploadTimeoutError } from '../worker/storage/s3-upload.js';

const MiB = 1024 * 1024;
const SIZE = 12 * MiB + 5; // three parts of 5 MiB, two in flight at once

interface PartRequest {
  part: number;
  /** Resolves when the request's connection is gone (the client aborted it). */
  ended: Promise<void>;
  isEnded: boolean;
}

interface SilentS3 {
  endpoint: string;
  /** What the server saw, in order: `part <n>`, `part <n> ended`, `abort`. */
  events: string[];
  parts: PartRequest[];
  /** Resolves once this many part requests arrived. */
  partsArrived(count: number): Promise<void>;
  reset(): void;
  close(): Promise<void>;
}

/** Answers CreateMultipartUpload and AbortMultipartUpload; reads every part's bytes and never answers. */
async function startSilentS3(): Promise<SilentS3> {
  const events: string[] = [];
  const parts: PartRequest[] = [];
  const sockets = new Set<Socket>();
  let waiters: Array<{ count: number; resolve: () => void }> = [];
  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://s3');
    req.resume();
    if (req.method === 'POST' && url.searchParams.has('uploads')) {
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'application/xml' });
        res.end('<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>U1</UploadId></InitiateMultipartUploadResult>');
      });
      return;
    }
    if (req.method === 'PUT' && url.searchParams.has('partNumber')) {
      const part = Number(url.searchParams.get('partNumber'));
      events.push(`part ${part}`);
      let ended = () => {};
      const entry: PartRequest = { part, ended: new Promise<void>((resolve) => (ended = resolve)), isEnded: false };
      res.once('close', () => {
        entry.isEnded = true;
        events.push(`part ${part} ended`);
        ended();
      });
      parts.push(entry);
      for (const waiter of waiters.filter((candidate) => parts.length >= candidate.count)) waiter.resolve();
      waiters = waiters.filter((candidate) => parts.length < candidate.count);
      return; // never answered
    }
    if (req.method === 'DELETE' && url.searchParams.has('uploadId')) {
      events.push('abort');
      req.on('end', () => {
        res.writeHead(204);
        res.end();
      });
      return;
    }
    req.on('end', () => {
      res.writeHead(400);
      res.end();
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    events,
    parts,
    partsArrived: (count) => (parts.length >= count ? Promise.resolve() : new Promise((resolve) => waiters.push({ count, resolve }))),
    reset() {
      events.length = 0;
      parts.length = 0;
    },
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The client's own view, in order: `start <Command>` when a request is sent, `end <Command>` once it settled. */
function recordRequests(s3: S3Client): string[] {
  const seen: string[] = [];
  s3.middlewareStack.add(
    (next, context) => async (args) => {
      seen.push(`start ${context.commandName}`);
      try {
        return await next(args);
      } finally {
        seen.push(`end ${context.commandName}`);
      }
    },
    { step: 'finalizeRequest', name: 'recordRequests', priority: 'low' },
  );
  return seen;
}

let dir: string;
let silent: SilentS3;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 's3-multipart-abort-'));
  await writeFile(join(dir, 'big.bin'), randomBytes(SIZE));
  silent = await startSilentS3();
});
afterAll(async () => {
  await silent?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function stalledUpload(
  timeoutMs: number,
  signal: AbortSignal,
  onStarted: (parts: Promise<void>) => void = () => {},
  { path = join(dir, 'big.bin'), size = SIZE, onClient = (_s3: S3Client) => {} } = {},
) {
  silent.reset();
  const s3 = createS3Client({ region: 'us-east-1', endpoint: silent.endpoint, credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, maxAttempts: 1 });
  const requests = recordRequests(s3);
  onClient(s3);
  const file = await open(path, 'r');
  try {
    onStarted(silent.partsArrived(2));
    const outcome = await uploadFileWithSha256({
      s3,
      bucket: 'b',
      key: 'k',
      contentType: 'application/octet-stream',
      file,
      size,
      multipartThresholdBytes: 5 * MiB,
      bufferLimitBytes: 16 * MiB,
      timeoutMs,
      signal,
    }).then(
      () => 'uploaded',
      (error: unknown) => error,
    );
    return { outcome, requests };
  } finally {
    await file.close();
    s3.destroy();
  }
}

/** The client sent AbortMultipartUpload once, after every part request it had sent had ended. */
function expectAbortAfterParts(requests: string[]): void {
  const abortAt = requests.indexOf('start AbortMultipartUploadCommand');
  expect(abortAt, requests.join('\n')).toBeGreaterThan(0);
  const before = requests.slice(0, abortAt);
  const started = before.filter((entry) => entry === 'start UploadPartCommand').length;
  expect(started).toBe(2);
  expect(before.filter((entry) => entry === 'end UploadPartCommand').length, requests.join('\n')).toBe(started);
  expect(requests.slice(abortAt).filter((entry) => entry.startsWith('start ') && entry !== 'start AbortMultipartUploadCommand')).toEqual([]);
  expect(requests.filter((entry) => entry === 'start AbortMultipartUploadCommand')).toHaveLength(1);
}

/** The server saw both part requests end, and no part after the abort. */
async function expectNothingLeftOpen(): Promise<void> {
  await Promise.all(silent.parts.map((part) => part.ended));
  expect(silent.parts.map((part) => part.part)).toEqual([1, 2]);
  expect(silent.events.filter((event) => event === 'abort')).toHaveLength(1);
  expect(silent.events.slice(silent.events.indexOf('abort')).filter((event) => /^part \d+$/.test(event))).toEqual([]);
}

// A test that times out inside its fake clock must not leave it to the next.
afterEach(() => {
  vi.useRealTimers();
});

describe('a multipart upload S3 stops answering', () => {
  it('times out with no part request left open, and aborts on S3 only after the parts ended', { timeout: 20_000 }, async () => {
    // The upload's clock (its watchdog) is the test's: it moves only once both part requests reached the server.
    // 30 s of it: the SDK's own request timers (real ones, the same 30 s) never fire during the test.
    const timeoutMs = 30_000;
    vi.useFakeTimers({ toFake: ['Date', 'setInterval', 'clearInterval'] });
    try {
      const { outcome, requests } = await stalledUpload(timeoutMs, new AbortController().signal, (partsUnderWay) => {
        void partsUnderWay.then(() => vi.advanceTimersByTime(2 * timeoutMs));
      });
      expect(outcome).toBeInstanceOf(UploadTimeoutError);
      expectAbortAfterParts(requests);
      await expectNothingLeftOpen();
    } finally {
      vi.useRealTimers();
    }
  });

  it("a larger part's request gets the request timeout in proportion to its size; the others keep the request timeout", { timeout: 30_000 }, async () => {
    // A sparse file of 100 GiB: parts of 11 MiB (10,000 parts at most). Only its first parts are read.
    const size = 100 * 1024 * MiB;
    const path = join(dir, 'huge-sparse.bin');
    const sparse = await open(path, 'w');
    await sparse.truncate(size);
    await sparse.close();
    expect(partSizeFor(size, 5 * MiB)).toBe(11 * MiB);
    // Every part is asked the rate a default (8 MiB) part is: 11/8 of the request timeout.
    expect(partTimeoutFor(11 * MiB, 1_000)).toBe(1_375);
    expect(partTimeoutFor(8 * MiB, 120_000)).toBe(120_000);
    expect(partTimeoutFor(525 * MiB, 120_000)).toBe(7_875_000);
    const timeouts: Array<[string, number | undefined]> = [];
    const controller = new AbortController();
    try {
      const { outcome } = await stalledUpload(
        1_000,
        controller.signal,
        (partsUnderWay) => {
          void partsUnderWay.then(() => controller.abort(new Error('seen enough')));
        },
        {
          path,
          size,
          onClient: (s3) => {
            // What the SDK's HTTP handler is asked for each request: its requestTimeout.
            const handler = s3.config.requestHandler as unknown as { handle(request: { method: string; query?: Record<string, unknown> }, options?: { requestTimeout?: number }): Promise<unknown> };
            const handle = handler.handle.bind(handler);
            handler.handle = (request, options) => {
              const query = request.query ?? {};
              const what = 'partNumber' in query ? 'part' : 'uploads' in query ? 'create' : 'uploadId' in query && request.method === 'DELETE' ? 'abort' : request.method;
              timeouts.push([what, options?.requestTimeout]);
              return handle(request, options);
            };
          },
        },
      );
      expect((outcome as Error).message).toBe('seen enough');
      expect(timeouts.filter(([what]) => what === 'create')).toEqual([['create', 1_000]]);
      const parts = timeouts.filter(([what]) => what === 'part');
      expect(parts.length).toBeGreaterThanOrEqual(2);
      for (const part of parts) expect(part).toEqual(['part', 1_375]);
      expect(timeouts.filter(([what]) => what === 'abort')).toEqual([['abort', 1_000]]);
    } finally {
      await rm(path, { force: true });
    }
  });

  it('canceled, ends its part requests, then aborts on S3', { timeout: 20_000 }, async () => {
    const controller = new AbortController();
    const reason = new Error('canceled by the test');
    const { outcome, requests } = await stalledUpload(60_000, controller.signal, (partsUnderWay) => {
      void partsUnderWay.then(() => controller.abort(reason));
    });
    expect(outcome).toBe(reason);
    expectAbortAfterParts(requests);
    await expectNothingLeftOpen();
  });
});
