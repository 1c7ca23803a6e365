// Limits and refusals of the API: body size (413), JSON-schema refusals naming the field (400), per-key rate limits
// (429 with Retry-After), event streams per key (429), a client too slow to send its request (408), revoked keys, and
// that no key ever reaches the logs.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revokeApiKey } from '../worker/auth/api-keys.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { useTestEnvironment } from './harness.js';
import { call, makeKey, startTestApi, type TestApi } from './support/api-server.js';
import { openEvents, type EventStream } from './support/sse-client.js';

const env = useTestEnvironment();
let api: TestApi;
let limited: TestApi;
const keys: string[] = [];
let operator: string;
let tenant: string;

beforeAll(async () => {
  api = await startTestApi(env, { requestTimeoutMs: 1_000 });
  limited = await startTestApi(env, { rateLimitPerMinute: 5 });
  operator = await makeKey(env, 'ops', 'operator');
  tenant = await makeKey(env, 'shop-backend', 'tenant', 'shop');
  keys.push(operator, tenant);
});
afterAll(async () => {
  await api?.close();
  await limited?.close();
});

describe('limits', () => {
  it('refuses a body over the limit with 413 BODY_TOO_LARGE, and a payload over 256 KiB with 413 PAYLOAD_TOO_LARGE', async () => {
    const huge = await call(api, 'POST', '/v1/jobs', { key: operator, body: { kind: 'noop', payload: { blob: 'x'.repeat(600 * 1024) } } });
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe('BODY_TOO_LARGE');
    const big = await call(api, 'POST', '/v1/jobs', { key: operator, body: { kind: 'noop', payload: { seq: 'x'.repeat(300 * 1024) } } });
    expect(big.status).toBe(413);
    expect(big.body.error.code).toBe('PAYLOAD_TOO_LARGE');
    expect((await env.pool.query('SELECT count(*)::int AS n FROM jobs')).rows[0].n).toBe(0);
  });

  it('refuses malformed requests with 400 naming the field, and non-JSON bodies with 415', async () => {
    const cases: Array<[string, string, unknown, string]> = [
      ['POST', '/v1/dead/replay', { ids: ['seven'] }, 'ids[0]'],
      ['POST', '/v1/dead/replay', { ids: [] }, 'ids'],
      ['POST', '/v1/dead/purge', {}, 'olderThan'],
      ['POST', '/v1/dead/purge', { olderThan: '7d', force: true }, 'force'],
      ['POST', '/v1/uploads', { contentLength: 0 }, 'contentLength'],
      ['POST', '/v1/uploads', { contentLength: 10, tenant: '../x' }, 'tenant'],
      ['POST', '/v1/jobs/1/requeue', { resetAttempts: 'yes please' }, 'resetAttempts'],
      ['GET', '/v1/jobs?since=yesterday', undefined, 'since'],
      ['GET', '/v1/jobs/1/errors?format=xlsx', undefined, 'format'],
      ['GET', '/v1/stats?window=forever', undefined, 'window'],
    ];
    for (const [method, path, body, field] of cases) {
      const response = await call(api, method, path, { key: operator, ...(body !== undefined ? { body } : {}) });
      expect(response.status, `${method} ${path} ${JSON.stringify(body)}`).toBe(400);
      expect(response.body.error, `${method} ${path}`).toMatchObject({ field });
    }
    const text = await call(api, 'POST', '/v1/jobs', { key: operator, body: 'kind=noop', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(text.status).toBe(415);
    expect(text.body.error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    // JSON sent as text/plain is not JSON to this API either (it reached the schema as a string: "must be object").
    const plain = await call(api, 'POST', '/v1/jobs', { key: operator, body: JSON.stringify({ kind: 'noop' }), headers: { 'content-type': 'text/plain' } });
    expect(plain.status).toBe(415);
    expect(plain.body.error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
  });

  it('takes a JSON body value of the wrong type as an error, never as another value', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'noop' });
    await env.pool.query(`UPDATE jobs SET state = 'dead', attempts = 1, finished_at = now() - interval '1 hour' WHERE id = $1`, [job.id]);
    const cases: Array<[string, unknown, string]> = [
      // Coerced, null was false: a purge for real, not a dry run; 7 was "7", seven seconds.
      ['/v1/dead/purge', { olderThan: '1s', dryRun: null }, 'dryRun'],
      ['/v1/dead/purge', { olderThan: 7, dryRun: true }, 'olderThan'],
      // false was the key "false", shared by every submit that sent it; "" was null, no dedupe at all.
      ['/v1/jobs', { kind: 'noop', tenant: 't', dedupeKey: false }, 'dedupeKey'],
      ['/v1/jobs', { kind: 'noop', tenant: 't', dedupeKey: '' }, 'dedupeKey'],
      ['/v1/jobs', { kind: 'noop', tenant: 't', priority: null }, 'priority'],
      ['/v1/jobs', { kind: 'noop', tenant: 't', maxAttempts: '3' }, 'maxAttempts'],
      ['/v1/dead/replay', { ids: job.id }, 'ids'],
      ['/v1/uploads', { contentLength: '50' }, 'contentLength'],
    ];
    for (const [path, body, field] of cases) {
      const response = await call(api, 'POST', path, { key: operator, body });
      expect(response.status, `${path} ${JSON.stringify(body)}`).toBe(400);
      expect(response.body.error, `${path} ${JSON.stringify(body)}`).toMatchObject({ code: 'INVALID_REQUEST', field });
    }
    expect((await env.pool.query('SELECT state FROM jobs WHERE id = $1', [job.id])).rows).toEqual([{ state: 'dead' }]);
    expect((await env.pool.query("SELECT count(*)::int AS n FROM jobs WHERE kind = 'noop' AND tenant_id = 't'")).rows[0].n).toBe(0);
    // Query strings are text on the wire, and are still read as their schema's types.
    const page = await call(api, 'GET', '/v1/jobs?limit=1&state=dead', { key: operator });
    expect(page.status).toBe(200);
    expect(page.body.jobs.map((run: { id: number }) => run.id)).toEqual([job.id]);
    await env.pool.query('DELETE FROM jobs WHERE id = $1', [job.id]);
  });

  it('limits requests per key: 429 with Retry-After past the limit, while another key goes on', async () => {
    const statuses: number[] = [];
    let refused: Awaited<ReturnType<typeof call>> | undefined;
    for (let i = 0; i < 7; i += 1) {
      const response = await call(limited, 'GET', '/v1/jobs', { key: tenant });
      statuses.push(response.status);
      if (response.status === 429) refused = response;
    }
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
    expect(refused!.body).toEqual({ error: { code: 'RATE_LIMITED', message: expect.stringContaining('5 requests per minute') } });
    expect(Number(refused!.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await call(limited, 'GET', '/v1/jobs', { key: operator })).status).toBe(200);
    // Health checks are never limited.
    for (let i = 0; i < 7; i += 1) expect((await call(limited, 'GET', '/readyz')).status).toBe(200);
  });

  it('counts refused requests: operator routes with a tenant key and unknown keys reach 429, then no key is looked up', async () => {
    // 403s count against the key (its first request was a 200, so the fifth refusal is its sixth request).
    const known = await makeKey(env, 'known-backend', 'tenant', 'shop');
    expect((await call(limited, 'GET', '/v1/jobs', { key: known })).status).toBe(200);
    const forbidden: number[] = [];
    for (let i = 0; i < 6; i += 1) forbidden.push((await call(limited, 'GET', '/v1/stats', { key: known })).status);
    expect(forbidden).toEqual([403, 403, 403, 403, 429, 429]);

    const unknown = `bik_${'A'.repeat(43)}`;
    const statuses: number[] = [];
    for (let i = 0; i < 6; i += 1) statuses.push((await call(limited, 'GET', '/v1/jobs', { key: unknown })).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429]);
    // The address's bucket: no key at all and a session cookie nobody has are refused before any lookup.
    const noKey = await call(limited, 'GET', '/v1/jobs/1/events', { headers: { cookie: `bi_admin_session=${'B'.repeat(43)}` } });
    expect(noKey.status).toBe(429);
    expect(noKey.body.error.code).toBe('RATE_LIMITED');
    expect(Number(noKey.headers.get('retry-after'))).toBeGreaterThan(0);
    // A key not yet verified is not looked up from that address now; one verified before is served from the cache.
    const another = await makeKey(env, 'another-backend', 'tenant', 'shop');
    expect((await call(limited, 'GET', '/v1/jobs', { key: another })).status).toBe(429);
    expect((await call(limited, 'GET', '/v1/jobs', { key: operator })).status).toBe(200);
  });

  it('counts admin requests with a session nobody has against the address: 429 past the limit, before any lookup', async () => {
    const own = await startTestApi(env, { rateLimitPerMinute: 3 });
    try {
      const bogus = { cookie: `bi_admin_session=${'C'.repeat(43)}` };
      const statuses: number[] = [];
      for (let i = 0; i < 3; i += 1) statuses.push((await fetch(`${own.url}/admin/runs`, { headers: bogus, redirect: 'manual' })).status);
      const signOut = await fetch(`${own.url}/admin/sign-out`, {
        method: 'POST', headers: { ...bogus, 'content-type': 'application/x-www-form-urlencoded' }, body: 'csrf=x', redirect: 'manual',
      });
      const after = await fetch(`${own.url}/admin/runs`, { headers: bogus, redirect: 'manual' });
      expect([...statuses, signOut.status, after.status]).toEqual([303, 303, 303, 429, 429]);
      expect(Number(after.headers.get('retry-after'))).toBeGreaterThan(0);
    } finally {
      await own.close();
    }
  });

  it('an operator signed in from an address that bad cookies put over its limit is still served', async () => {
    const own = await startTestApi(env, { rateLimitPerMinute: 5 });
    try {
      // Signing in: the form and its post count against the address (2 of 5).
      const form = await fetch(`${own.url}/admin/sign-in`);
      const formCookie = form.headers.getSetCookie()[0]!.split(';')[0]!;
      const token = /name="csrf" value="([^"]+)"/.exec(await form.text())![1]!;
      const signedIn = await fetch(`${own.url}/admin/sign-in`, {
        method: 'POST', redirect: 'manual',
        headers: { cookie: formCookie, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ csrf: token, key: operator }).toString(),
      });
      const session = { cookie: signedIn.headers.getSetCookie().find((cookie) => cookie.startsWith('bi_admin_session='))!.split(';')[0]! };
      expect((await fetch(`${own.url}/admin/runs`, { headers: session, redirect: 'manual' })).status).toBe(200);
      // Another client at the same address sends cookies nobody has until the address is at its limit.
      const bogus = { cookie: `bi_admin_session=${'D'.repeat(43)}` };
      const statuses: number[] = [];
      for (let i = 0; i < 4; i += 1) statuses.push((await fetch(`${own.url}/admin/runs`, { headers: bogus, redirect: 'manual' })).status);
      expect(statuses).toEqual([303, 303, 303, 429]);
      // The operator's session, seen valid a moment ago, is still served (and still looked up: sign out ends it), and
      // so are the two API routes a signed-in page reads with its cookie.
      const page = await fetch(`${own.url}/admin/runs`, { headers: session, redirect: 'manual' });
      expect(page.status).toBe(200);
      const { rows } = await env.pool.query<{ id: number }>("INSERT INTO jobs (kind, tenant_id, run_at) VALUES ('noop', 'shop', '2999-01-01') RETURNING id");
      const download = await fetch(`${own.url}/v1/jobs/${rows[0]!.id}/errors?format=csv`, { headers: session });
      expect(download.status).toBe(409); // a noop run has no failed-row export: past authentication, not 429
      await download.arrayBuffer();
    } finally {
      await own.close();
    }
  });

  it('limits the event streams a key holds open: 429 TOO_MANY_STREAMS past it, until one of them closes', async () => {
    const few = await startTestApi(env, { eventStreamsPerKey: 2 });
    const streams: EventStream[] = [];
    try {
      const submitted = await call(few, 'POST', '/v1/jobs', { key: operator, body: { kind: 'noop', tenant: 'shop', runAt: '2999-01-01T00:00:00Z' } });
      expect(submitted.status, submitted.text).toBe(201);
      const jobId = submitted.body.job.id as number;
      for (let i = 0; i < 2; i += 1) {
        streams.push(await openEvents(few, jobId, tenant));
        await streams.at(-1)!.waitFor((event) => event.event === 'snapshot');
      }
      const refused = await call(few, 'GET', `/v1/jobs/${jobId}/events`, { key: tenant });
      expect(refused.status).toBe(429);
      expect(refused.body.error).toEqual({ code: 'TOO_MANY_STREAMS', message: expect.stringContaining('2 event streams open') });
      expect(refused.headers.get('retry-after')).toBe('30');
      // At its limit, the key still gets 404 for a run of another tenant, as for a run that does not exist.
      const theirs = await call(few, 'POST', '/v1/jobs', { key: operator, body: { kind: 'noop', tenant: 'elsewhere', runAt: '2999-01-01T00:00:00Z' } });
      expect((await call(few, 'GET', `/v1/jobs/${theirs.body.job.id as number}/events`, { key: tenant })).status).toBe(404);

      // Another key is counted apart.
      streams.push(await openEvents(few, jobId, operator));
      expect(streams.at(-1)!.status).toBe(200);

      // Six opens at once for a key with none open: two are let in.
      const racer = await makeKey(env, 'racing-backend', 'tenant', 'shop');
      const raced = await Promise.all(Array.from({ length: 6 }, () => openEvents(few, jobId, racer)));
      streams.push(...raced);
      expect(raced.map((stream) => stream.status).sort()).toEqual([200, 200, 429, 429, 429, 429]);

      // A stream its client closed frees its place once the server has seen it go (its socket's close).
      streams[0]!.close();
      await streams[0]!.closed;
      for (let attempt = 1; ; attempt += 1) {
        const next = await openEvents(few, jobId, tenant);
        streams.push(next);
        if (next.status === 200) break;
        expect(next.refusal?.error.code).toBe('TOO_MANY_STREAMS');
        // A bound so that a slot never released fails here instead of hanging (about 30 s of attempts).
        expect(attempt, 'the closed stream was never released').toBeLessThan(3_000);
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      expect(few.logText()).toContain('TOO_MANY_STREAMS');
    } finally {
      for (const stream of streams) stream.close();
      await few.close();
    }
  });

  it('cuts off a client that does not finish sending its request', async () => {
    const { port } = new URL(api.url);
    const socket = connect(Number(port), '127.0.0.1');
    socket.write(`POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${operator}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"kind":`);
    const started = Date.now();
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (chunk) => (text += chunk.toString()));
      socket.on('close', () => resolve(text));
    });
    // Node answers 408 at its next check of request times, or the idle socket (twice the request timeout) is closed
    // first: either way the connection is gone within seconds, not held.
    expect(answer === '' || /^HTTP\/1\.1 408/.test(answer), answer).toBe(true);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe('keys', () => {
  it('a revoked key is refused at once; a key never appears in the logs', async () => {
    const doomed = await makeKey(env, 'doomed', 'tenant', 'shop');
    keys.push(doomed);
    expect((await call(api, 'GET', '/v1/jobs', { key: doomed })).status).toBe(200);
    await revokeApiKey(env.pool, 'doomed');
    expect((await call(api, 'GET', '/v1/jobs', { key: doomed })).status).toBe(401);
    // Requests of every kind, refused and served, with keys in the header.
    await call(api, 'POST', '/v1/jobs', { key: tenant, body: { kind: 'noop' } });
    await call(api, 'GET', '/v1/stats', { key: tenant });
    await call(api, 'GET', '/v1/jobs/1', { key: operator });
    await call(api, 'GET', '/v1/jobs', { headers: { authorization: `Basic ${Buffer.from(`user:${operator}`).toString('base64')}` } });
    const logs = api.logText() + limited.logText();
    expect(logs).toContain('request refused');
    expect(logs).toContain('"statusCode":401');
    for (const key of keys) {
      expect(logs).not.toContain(key);
      expect(logs).not.toContain(key.slice(4, 24));
    }
    expect(logs).not.toMatch(/bik_[A-Za-z0-9_-]{10}/);
    expect(logs.toLowerCase()).not.toContain('authorization');
  });
});
