// A request that reaches a closing server (on a keep-alive connection still busy with an earlier request, as a load
// balancer's can be) is refused in the API's one error shape, with Retry-After, and the earlier request still gets its
// answer. Fastify's own 503 while closing had a shape of its own. An event stream whose reads were still answering
// when the close began is refused too, and does not keep the server open.
import net from 'node:net';
import type { PoolClient } from 'pg';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../worker/config.js';
import { createPool } from '../worker/db/pool.js';
import { JobEventHub } from '../worker/http/event-hub.js';
import { buildApiServer } from '../worker/http/server.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { useTestEnvironment } from './harness.js';
import { makeKey, startTestApi } from './support/api-server.js';
import { silentLog, waitFor } from './support/in-process-worker.js';
import { startSilencingProxy } from './support/silencing-proxy.js';

const env = useTestEnvironment();

/** True once the address refuses new connections (the server stopped listening). */
async function refusesConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });
}

/** A raw keep-alive connection: what it has received so far, and a promise of its close. */
async function connection(port: number): Promise<{ socket: net.Socket; received: () => string; closed: Promise<unknown> }> {
  const socket = net.connect(port, '127.0.0.1');
  let received = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
  const closed = new Promise((resolve) => socket.once('close', resolve));
  await new Promise((resolve) => socket.once('connect', resolve));
  return { socket, received: () => received, closed };
}

describe('a server that is shutting down', () => {
  it('answers a request that still arrives with 503 SHUTTING_DOWN in the one error shape, after the earlier answer', async () => {
    const api = await startTestApi(env);
    let closing: Promise<void> | undefined;
    const held: PoolClient[] = [];
    try {
      const operator = await makeKey(env, 'ops', 'operator');
      // The key is verified once here, so the first request below waits in its route, for a pooled connection.
      expect((await fetch(`${api.url}/v1/jobs?limit=1`, { headers: { authorization: `Bearer ${operator}` } })).status).toBe(200);
      const port = Number(new URL(api.url).port);
      for (let i = 0; i < env.pool.options.max; i += 1) held.push(await env.pool.connect());

      const api1 = await connection(port);
      api1.socket.write(`GET /v1/jobs?limit=1 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer ${operator}\r\n\r\n`);
      await waitFor(async () => env.pool.waitingCount > 0);
      const admin = await connection(port);
      admin.socket.write(`GET /v1/jobs?limit=2 HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer ${operator}\r\n\r\n`);
      await waitFor(async () => env.pool.waitingCount > 1);

      closing = api.close();
      await waitFor(() => refusesConnections(port));
      // The connection is busy, so it was not closed as idle: a second request on it reaches the closing server.
      api1.socket.write('GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n');
      // And one to an admin page, on a connection of the same kind: a page of its own, not an error in the log.
      admin.socket.write('GET /admin/sign-in HTTP/1.1\r\nHost: api\r\n\r\n');
      await waitFor(async () => (api.logText().match(/"code":"SHUTTING_DOWN"/g) ?? []).length === 2);
      for (const client of held.splice(0)) client.release();
      await api1.closed;
      await admin.closed;
      expect(admin.received()).toMatch(/HTTP\/1\.1 503 [^]*<title>[^<]*Restarting/);

      const answers = api1.received().split(/(?=HTTP\/1\.1 )/);
      expect(answers).toHaveLength(2);
      expect(answers[0]).toMatch(/^HTTP\/1\.1 200 /);
      expect(answers[1]).toMatch(/^HTTP\/1\.1 503 /);
      expect(answers[1]).toMatch(/\r\nretry-after: 1\r\n/i);
      const body = JSON.parse(answers[1]!.slice(answers[1]!.indexOf('\r\n\r\n') + 4)) as unknown;
      expect(body).toEqual({ error: { code: 'SHUTTING_DOWN', message: expect.stringContaining('shutting down') } });
      expect(api.logText()).not.toContain('"level":50');
    } finally {
      for (const client of held) client.release();
      await (closing ?? api.close());
    }
  });

  it('refuses an event stream whose visibility read was answering when the close began, and closes while its client stays', async () => {
    // The server's pool goes through a proxy that can hold the database's replies; its key checks (LISTEN) and event
    // hub use the database directly.
    const proxy = await startSilencingProxy(env.databaseUrl);
    const pool = createPool(proxy.url, { max: 1, applicationName: 'api-behind-proxy' });
    const events = new JobEventHub({ database: env.databaseUrl, pool: env.pool, log: silentLog, pollMs: 200 });
    await events.start();
    // The stream subscribes between its two reads of the run: the second one's answer is held from then on.
    let subscribed = false;
    const subscribe = events.subscribe.bind(events);
    events.subscribe = (...args: Parameters<JobEventHub['subscribe']>) => {
      subscribed = true;
      proxy.holdReplies();
      return subscribe(...args);
    };
    const app = await buildApiServer({ pool, config: loadConfig({ DATABASE_URL: env.databaseUrl }), log: silentLog, s3: undefined, bucket: undefined, events });
    const port = Number(new URL(await app.listen({ port: 0, host: '127.0.0.1' })).port);
    let closing: Promise<void> | undefined;
    let stream: Awaited<ReturnType<typeof connection>> | undefined;
    try {
      const key = await makeKey(env, 'streams', 'operator');
      const { job } = await enqueueJob(env.pool, { kind: 'followed' });
      stream = await connection(port);
      // A client that never leaves by itself, as EventSource.
      stream.socket.write(`GET /v1/jobs/${job.id}/events HTTP/1.1\r\nHost: api\r\nAccept: text/event-stream\r\nAuthorization: Bearer ${key}\r\n\r\n`);
      await waitFor(async () => subscribed);

      closing = app.close();
      // Listening stops after the preClose hooks, which end the streams open then: this one is not open yet.
      await waitFor(() => refusesConnections(port));
      proxy.releaseReplies();
      const { received } = stream;
      await waitFor(async () => received().includes('\r\n\r\n'));
      expect(received()).toMatch(/^HTTP\/1\.1 503 /);
      expect(received()).toMatch(/\r\nretry-after: 1\r\n/i);
      // Closed after the answer: kept alive, it would hold the server's close until its client left.
      expect(received()).toMatch(/\r\nconnection: close\r\n/i);
      await waitFor(async () => /\r\n\r\n\{.*\}$/s.test(received()));
      expect(JSON.parse(received().slice(received().indexOf('\r\n\r\n') + 4))).toEqual({
        error: { code: 'SHUTTING_DOWN', message: expect.stringContaining('shutting down') },
      });
      // The client stays; the server closes the connection and its close completes.
      await closing;
      await stream.closed;
    } finally {
      stream?.socket.destroy();
      proxy.releaseReplies();
      await (closing ?? app.close());
      await events.stop();
      await pool.end();
      await proxy.close();
    }
  });
});
