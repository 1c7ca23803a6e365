// A client that leaves while its request waits for the database (here: every pooled connection held by the test)
// must not leave anything open behind it: an event stream's subscription and keep-alive timer, or an errors export
// waiting for a socket that will never drain. The route's first query is where a client most often goes (the run's
// visibility check), and a 'close' listener added after it never runs.
import http from 'node:http';
import type { Socket } from 'node:net';
import type { PoolClient } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestEnvironment } from './harness.js';
import { makeKey, startTestApi, type TestApi } from './support/api-server.js';
import { waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
let api: TestApi;
let operator: string;

beforeAll(async () => {
  api = await startTestApi(env);
  operator = await makeKey(env, 'ops', 'operator');
});
afterAll(async () => api?.close());

/** Sends GET `path` on a connection of its own, and leaves once the server waits for a pooled connection for it. */
async function leaveWhileWaiting(path: string): Promise<void> {
  // Verify the key first, so the request below waits in the route, not in authentication alone.
  expect((await fetch(`${api.url}/v1/jobs?limit=1`, { headers: { authorization: `Bearer ${operator}` } })).status).toBe(200);
  const held: PoolClient[] = [];
  for (let i = 0; i < env.pool.options.max; i += 1) held.push(await env.pool.connect());
  try {
    const accepted = new Promise<Socket>((resolve) => api.app.server.once('connection', resolve));
    const request = http.get(`${api.url}${path}`, { agent: false, headers: { authorization: `Bearer ${operator}` } });
    request.on('error', () => {});
    const socket = await accepted;
    // The request is in (the server logged it: an accepted connection alone may not have been read yet, and another
    // task of the server may be the pool's waiter), and the server waits for a connection of the pool.
    await waitFor(async () => api.logText().includes(`"url":"${path}"`) && env.pool.waitingCount > 0);
    request.destroy();
    if (!socket.destroyed) await new Promise((resolve) => socket.once('close', resolve));
  } finally {
    for (const client of held) client.release();
  }
}

describe('a client that leaves before its answer', () => {
  it('leaves no event stream behind (subscription, keep-alive timer)', async () => {
    const { rows } = await env.pool.query<{ id: number }>("INSERT INTO jobs (kind, run_at) VALUES ('noop', now() + interval '1 day') RETURNING id");
    const jobId = rows[0]!.id;
    await leaveWhileWaiting(`/v1/jobs/${jobId}/events`);
    await waitFor(async () => api.logText().includes('event stream not opened: the client left'));
    expect(api.events.followers(jobId)).toBe(0);
  });

  it('starts no errors export', async () => {
    const { rows } = await env.pool.query<{ id: number }>("INSERT INTO jobs (kind, state, finished_at) VALUES ('mass-import', 'partial', now()) RETURNING id");
    const jobId = rows[0]!.id;
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       SELECT $1, n, format('f-%s.pdf', n), 1, 'failed', 'UNREADABLE', 'no', 'permanent', 1 FROM generate_series(0, 4999) AS n`,
      [jobId],
    );
    await leaveWhileWaiting(`/v1/jobs/${jobId}/errors?format=csv`);
    await waitFor(async () => api.logText().includes('errors export not started: the client left'));
    expect(api.logText()).not.toContain('errors exported');
  });
});
