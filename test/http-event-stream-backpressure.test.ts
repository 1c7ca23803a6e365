// An event stream ended while its client reads nothing (the server's socket buffer full): the response cannot finish,
// so its 'close' — where a stream used to stop its keep-alive timer and its run's events — does not come. A write
// after the end then raised an 'error' on the response that nothing heard, and the second one brought the whole API
// process down. Each way a stream ends (key revoked, session signed out or expired, server closing) stops it first, and
// a client that still reads nothing has its connection cut after a grace period.
import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { revokeApiKey } from '../worker/auth/api-keys.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { useTestEnvironment } from './harness.js';
import { makeKey, startTestApi, type TestApi } from './support/api-server.js';
import { waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
let api: TestApi | undefined;
const clients: Socket[] = [];
afterEach(async () => {
  for (const client of clients.splice(0)) client.destroy();
  await api?.close();
  api = undefined;
  await env.pool.query('DELETE FROM jobs');
});

/** A progress write of about 192 KiB: the run's next `progress` event is that large. */
async function bigProgress(jobId: number, step: number): Promise<void> {
  await env.pool.query(`UPDATE jobs SET progress = jsonb_build_object('step', $2::int, 'filler', repeat('x', 196608)) WHERE id = $1`, [jobId, step]);
}

/** Opens the run's event stream on a raw socket, reads up to its snapshot, then reads nothing more. */
async function stalledStream(url: string, jobId: number, key: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const client = connect({ host: hostname, port: Number(port) });
  clients.push(client);
  let seen = '';
  await new Promise<void>((resolve, reject) => {
    client.once('error', reject);
    client.on('data', (chunk: Buffer) => {
      seen += chunk.toString('utf8');
      if (!seen.includes('event: snapshot')) return;
      client.pause();
      client.removeAllListeners('data');
      resolve();
    });
    client.write(`GET /v1/jobs/${jobId}/events HTTP/1.1\r\nHost: ${hostname}\r\nAuthorization: Bearer ${key}\r\nAccept: text/event-stream\r\n\r\n`);
  });
  expect(seen).toMatch(/^HTTP\/1\.1 200/);
  return client;
}

describe('an event stream ended while its client reads nothing', () => {
  it('writes nothing after its end: revoking the key of a stalled stream leaves the server up', async () => {
    api = await startTestApi(env, { eventKeepAliveMs: 20, eventEndGraceMs: 1_000 });
    const key = await makeKey(env, 'slow-reader', 'tenant', 'shop');
    const { job } = await enqueueJob(env.pool, { kind: 'noop', tenantId: 'shop', runAt: new Date('2999-01-01T00:00:00Z') });
    // The server's side of every connection, to see when its stream's socket holds what the client did not read.
    const serverSockets: Socket[] = [];
    api.app.server.on('connection', (socket: Socket) => serverSockets.push(socket));
    const errors: unknown[] = [];
    const heard = (error: unknown) => errors.push(error);
    process.on('uncaughtException', heard);
    try {
      await stalledStream(api.url, job.id, key);
      // Large progress events until the kernel's buffers are full and the server's socket holds bytes of its own.
      let step = 0;
      const stalled = await waitFor(
        async () => {
          await bigProgress(job.id, (step += 1));
          return serverSockets.find((socket) => socket.writableLength > 0);
        },
        60_000,
        50,
      );
      const cutOff = new Promise<void>((resolve) => stalled.once('close', () => resolve()));
      const ended = api.logText().length;
      await revokeApiKey(env.pool, 'slow-reader');
      // The hub heard the revocation and the stream was ended (its follower gone): then more progress events and
      // keep-alive ticks (every 20 ms) than it takes to write twice after the end.
      await waitFor(async () => api!.events.followers(job.id) === 0, 30_000, 20);
      const read = api.events.progressReads;
      for (let more = 1; more <= 3; more += 1) {
        await bigProgress(job.id, (step += 1));
        await waitFor(async () => api!.events.progressReads > read + more, 30_000, 20);
      }
      expect(errors).toEqual([]);
      expect(api.logText().slice(ended)).not.toContain('write after end');
      // The client still reads nothing: its ended stream's connection is cut after eventEndGraceMs, not held for good.
      await cutOff;
    } finally {
      process.off('uncaughtException', heard);
    }
  });
});
