// The HTTP API (`bulk-import serve`) over real HTTP against the test database: health and spec without a key, API keys
// (made, listed and revoked by the real CLI), submit with the queue's dedupe rules, the run record, keyset-paged
// listings with filters, tenant isolation, roles, and the one error shape.
import { PutObjectCommand } from '@aws-sdk/client-s3';
import pg, { type PoolClient } from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { revokeApiKey } from '../worker/auth/api-keys.js';
import { describeError } from '../worker/http/errors.js';
import { useTestEnvironment } from './harness.js';
import { call, makeKey, startTestApi, type TestApi } from './support/api-server.js';
import { startFaultyS3Proxy } from './support/faulty-s3-proxy.js';
import { runCli, runCliJson } from './support/cli-runner.js';
import { plantEndedRun } from './support/ended-runs.js';
import { plantLongFailedRows } from './support/long-failed-rows.js';
import { waitFor } from './support/in-process-worker.js';
import { openEvents } from './support/sse-client.js';

const env = useTestEnvironment();
let api: TestApi;
let operator: string;
let tenantA: string;
let tenantB: string;

beforeAll(async () => {
  api = await startTestApi(env);
  operator = await makeKey(env, 'ops', 'operator');
  tenantA = await makeKey(env, 'backend-a', 'tenant', 'ta');
  tenantB = await makeKey(env, 'backend-b', 'tenant', 'tb');
});
afterAll(async () => api?.close());

/** A CSV upload in the test's bucket, as a PUT to a presigned URL leaves it. */
async function upload(key: string, bytes = 64): Promise<void> {
  await env.s3.send(new PutObjectCommand({ Bucket: env.bucket, Key: key, Body: Buffer.alloc(bytes, 'a') }));
}

async function submitNoop(tenant: string, extra: Record<string, unknown> = {}) {
  const response = await call(api, 'POST', '/v1/jobs', { key: operator, body: { kind: 'noop', tenant, payload: { sleepMs: 0 }, ...extra } });
  expect(response.status).toBe(201);
  return response.body.job as { id: number };
}

describe('health and spec', () => {
  it('answers /healthz, /readyz and /openapi.json without a key', async () => {
    expect(await call(api, 'GET', '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await call(api, 'GET', '/readyz')).toMatchObject({ status: 200, body: { status: 'ready' } });
    const spec = await call(api, 'GET', '/openapi.json');
    expect(spec.status).toBe(200);
    expect(spec.body.openapi).toBe('3.0.3');
  });

  it('/readyz asks the database once for requests that arrive together, and answers each', async () => {
    const fresh = await startTestApi(env);
    // Connections of their own: with a check per request, the pool the API shares with the test would run dry.
    const holder = new pg.Client({ connectionString: env.databaseUrl });
    const observer = new pg.Client({ connectionString: env.databaseUrl });
    await Promise.all([holder.connect(), observer.connect()]);
    const waitingReads = async () =>
      (
        await observer.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'SELECT name FROM pgmigrations%' AND wait_event_type = 'Lock'",
        )
      ).rows[0]!.n;
    try {
      // The schema read waits behind this lock, so every request below arrives while one check is under way.
      await holder.query('BEGIN');
      await holder.query('LOCK TABLE pgmigrations IN ACCESS EXCLUSIVE MODE');
      const answers = Array.from({ length: 30 }, () => call(fresh, 'GET', '/readyz'));
      await waitFor(async () => fresh.app.readiness.asked === 30 && (await waitingReads()) > 0);
      expect(await waitingReads()).toBe(1);
      expect(fresh.app.readiness.checksRun).toBe(1);
      await holder.query('COMMIT');
      expect((await Promise.all(answers)).map((answer) => answer.status)).toEqual(Array(30).fill(200));
    } finally {
      await Promise.all([holder.end(), observer.end()]);
      await fresh.close();
    }
  });

  it('the spec holds every route, with the schemas the routes validate with', async () => {
    const spec = (await call(api, 'GET', '/openapi.json')).body as { paths: Record<string, Record<string, unknown>>; components: { schemas: Record<string, unknown> } };
    const routes = api.app.apiRoutes.filter((route) => !route.endsWith(' /openapi.json'));
    expect(routes.length).toBeGreaterThanOrEqual(18);
    for (const route of routes) {
      const [method, url] = route.split(' ') as [string, string];
      const path = url.replace(/:(\w+)/g, '{$1}');
      expect(spec.paths[path]?.[method.toLowerCase()], `${route} in /openapi.json`).toBeDefined();
    }
    expect(Object.keys(spec.components.schemas)).toEqual(expect.arrayContaining(['Error', 'Job', 'JobSummary', 'JobAction', 'Progress']));
    const submit = spec.paths['/v1/jobs']!.post as { requestBody: { content: { 'application/json': { schema: { required: string[] } } } } };
    expect(submit.requestBody.content['application/json'].schema.required).toEqual(['kind']);
  });
});

describe('authentication', () => {
  it('refuses a request without a key, with a malformed key and with an unknown key: 401 in the one error shape', async () => {
    for (const key of [undefined, 'nope', `bik_${'A'.repeat(43)}`]) {
      const response = await call(api, 'GET', '/v1/jobs', key ? { key } : {});
      expect(response.status).toBe(401);
      expect(response.body).toEqual({ error: { code: 'UNAUTHENTICATED', message: expect.any(String) } });
      expect(response.headers.get('www-authenticate')).toBe('Bearer');
    }
    expect((await call(api, 'GET', '/v1/no-such-route')).status).toBe(401);
  });

  it('api-keys create prints the key once, list never shows it, revoke makes the next request 401', async () => {
    const created = await runCliJson<{ key: string; name: string; role: string; tenantId: string }>(env, ['api-keys', 'create', '--name', 'cli-made', '--role', 'tenant', '--tenant', 'ta']);
    expect(created).toMatchObject({ name: 'cli-made', role: 'tenant', tenantId: 'ta' });
    expect(created.key).toMatch(/^bik_[A-Za-z0-9_-]{43}$/);
    const { rows } = await env.pool.query<{ key_hash: Buffer }>(`SELECT key_hash FROM api_keys WHERE name = 'cli-made'`);
    expect(rows[0]!.key_hash.toString('hex')).not.toContain(Buffer.from(created.key).toString('hex'));
    expect((await call(api, 'GET', '/v1/jobs', { key: created.key })).status).toBe(200);

    const list = await runCli(env, ['api-keys', 'list']);
    expect(list.stdout).toMatch(/cli-made\s+tenant\s+ta\s+bik_/);
    expect(list.stdout).not.toContain(created.key);
    const duplicate = await runCli(env, ['api-keys', 'create', '--name', 'cli-made', '--role', 'operator']);
    expect(duplicate.code).toBe(1);
    expect(duplicate.stderr).toContain('an active key named cli-made exists');
    expect((await runCli(env, ['api-keys', 'create', '--name', 'x', '--role', 'tenant'])).stderr).toContain('a tenant key needs --tenant');

    expect((await runCli(env, ['api-keys', 'revoke', 'cli-made'])).code).toBe(0);
    const refused = await call(api, 'GET', '/v1/jobs', { key: created.key });
    expect(refused.status).toBe(401);
    expect(refused.body.error.message).toContain('unknown or revoked');
  });
});

describe('revocation', () => {
  it("revoking a key ends its open event streams, and their reconnect is a 401; other keys' streams go on", async () => {
    const doomed = await makeKey(env, 'doomed', 'tenant', 'ta');
    const job = await submitNoop('ta', { runAt: '2999-01-01T00:00:00Z' });
    const revokedStream = await openEvents(api, job.id, doomed);
    const keptStream = await openEvents(api, job.id, tenantA);
    try {
      await revokedStream.waitFor((event) => event.event === 'snapshot');
      await keptStream.waitFor((event) => event.event === 'snapshot');
      // Revoked by another process, as an operator would: this server hears it through NOTIFY.
      expect((await runCli(env, ['api-keys', 'revoke', 'doomed'])).code).toBe(0);
      await Promise.race([
        revokedStream.closed,
        new Promise((_, reject) => setTimeout(() => reject(new Error('the revoked key’s stream is still open after 20 s')), 20_000).unref()),
      ]);
      expect((await openEvents(api, job.id, doomed)).status).toBe(401);
      // The other key's stream is still open: it gets the run's next change.
      expect((await call(api, 'POST', `/v1/jobs/${job.id}/cancel`, { key: operator })).status).toBe(200);
      await keptStream.waitFor((event) => event.event === 'state' && event.data.state === 'canceled');
    } finally {
      revokedStream.close();
      keptStream.close();
    }
  });
});

describe('revocation while a stream opens', () => {
  it('a key revoked while its stream waits to open ends that stream once it opens', async () => {
    const late = await makeKey(env, 'late', 'tenant', 'ta');
    const job = await submitNoop('ta', { runAt: '2999-01-01T00:00:00Z' });
    // The key is verified (and cached) first; then every pooled connection is held, so the stream waits in its route.
    expect((await call(api, 'GET', '/v1/jobs?limit=1', { key: late })).status).toBe(200);
    const held: PoolClient[] = [];
    for (let i = 0; i < env.pool.options.max; i += 1) held.push(await env.pool.connect());
    let opening: ReturnType<typeof openEvents>;
    try {
      opening = openEvents(api, job.id, late);
      await waitFor(async () => env.pool.waitingCount > 0);
      // Revoked meanwhile, on a connection of its own: this server hears it before the stream is registered.
      const admin = new pg.Client({ connectionString: env.databaseUrl });
      await admin.connect();
      try {
        await revokeApiKey(admin, 'late');
      } finally {
        await admin.end();
      }
    } finally {
      for (const client of held) client.release();
    }
    const stream = await opening;
    try {
      await Promise.race([
        stream.closed,
        new Promise((_, reject) => setTimeout(() => reject(new Error('the stream of a key revoked while it opened is still open after 20 s')), 20_000).unref()),
      ]);
    } finally {
      stream.close();
    }
  });
});

describe('event streams whose key cannot be checked again', () => {
  it('end when the check after registering fails (the key table unreadable), rather than stay open unchecked', async () => {
    const key = await makeKey(env, 'unchecked', 'tenant', 'ta');
    const job = await submitNoop('ta', { runAt: '2999-01-01T00:00:00Z' });
    // Verified and cached first, so the request itself passes without reading api_keys; then the table goes away
    // (as a lookup fails while the database is away) and the check made once the stream is registered fails.
    expect((await call(api, 'GET', '/v1/jobs?limit=1', { key })).status).toBe(200);
    await env.pool.query('ALTER TABLE api_keys RENAME TO api_keys_away');
    let stream: Awaited<ReturnType<typeof openEvents>> | undefined;
    try {
      stream = await openEvents(api, job.id, key);
      expect(stream.status).toBe(200);
      await Promise.race([
        stream.closed,
        new Promise((_, reject) => setTimeout(() => reject(new Error('the unchecked stream is still open after 20 s')), 20_000).unref()),
      ]);
    } finally {
      stream?.close();
      await env.pool.query('ALTER TABLE api_keys_away RENAME TO api_keys');
    }
    expect(api.logText()).toContain('could not check their keys and sessions again; ended them');
  });
});

describe('event ids', () => {
  it("number a run's own events: a follower learns nothing of other runs' events from them", async () => {
    const mine = await submitNoop('ta', { runAt: '2999-01-01T00:00:00Z' });
    const others = [await submitNoop('tb', { runAt: '2999-01-01T00:00:00Z' }), await submitNoop('tb', { runAt: '2999-01-01T00:00:00Z' })];
    const theirStreams = await Promise.all(others.map((job) => openEvents(api, job.id, tenantB)));
    const myStream = await openEvents(api, mine.id, tenantA);
    try {
      const snapshot = await myStream.waitFor((event) => event.event === 'snapshot');
      // Other tenants' runs change meanwhile, and their followers get events.
      for (const [index, job] of others.entries()) {
        expect((await call(api, 'POST', `/v1/jobs/${job.id}/cancel`, { key: operator })).status).toBe(200);
        await theirStreams[index]!.waitFor((event) => event.event === 'state' && event.data.state === 'canceled');
      }
      expect((await call(api, 'POST', `/v1/jobs/${mine.id}/cancel`, { key: operator })).status).toBe(200);
      const canceled = await myStream.waitFor((event) => event.event === 'state' && event.data.state === 'canceled');
      const [token, number] = snapshot.id!.split('.');
      expect(canceled.id).toBe(`${token}.${Number(number) + 1}`);
      // Each run's sequence has a token of its own.
      const theirs = await theirStreams[0]!.waitFor((event) => event.event === 'snapshot');
      expect(theirs.id!.split('.')[0]).not.toBe(token);
    } finally {
      for (const stream of [myStream, ...theirStreams]) stream.close();
    }
  });
});

describe('submit and read runs', () => {
  it('POST /v1/jobs: 201 for a new run, 200 with reused: true for an active run of the same dedupe key', async () => {
    const body = { kind: 'noop', tenant: 'ta', payload: { sleepMs: 0 }, dedupeKey: 'same-one', runAt: '2999-01-01T00:00:00Z' };
    const first = await call(api, 'POST', '/v1/jobs', { key: operator, body });
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({ reused: false, job: { kind: 'noop', tenant: 'ta', state: 'queued', startedBy: 'ops', dedupeKey: 'same-one' } });
    expect(first.body.job.actions).toEqual([{ action: 'submitted', actor: 'ops', note: null, stateAfter: 'queued', at: expect.any(String) }]);
    const again = await call(api, 'POST', '/v1/jobs', { key: operator, body });
    expect(again.status).toBe(200);
    expect(again.body).toMatchObject({ reused: true, job: { id: first.body.job.id } });
  });

  it("refuses a payload the kind's reader refuses, and malformed requests, with 400 naming the field", async () => {
    const cases: Array<[unknown, string, string]> = [
      [{ kind: 'noop', payload: { sleepMs: -5 } }, 'INVALID_PAYLOAD', 'payload.sleepMs'],
      [{ kind: 'noop', payload: { sleepMs: 'soon' } }, 'INVALID_PAYLOAD', 'payload.sleepMs'],
      [{ kind: 'noop', priority: 'high' }, 'INVALID_REQUEST', 'priority'],
      [{ kind: 'noop', maxAttempts: 0 }, 'INVALID_REQUEST', 'maxAttempts'],
      [{ kind: 'noop', colour: 'red' }, 'INVALID_REQUEST', 'colour'],
      [{ payload: {} }, 'INVALID_REQUEST', 'kind'],
      [{ kind: 'Not A Kind' }, 'INVALID_REQUEST', 'kind'],
      [{ kind: 'noop', runAt: 'tomorrow' }, 'INVALID_REQUEST', 'runAt'],
      // What the schema's formats let through but a Date or the database cannot hold: a leap second, half a character.
      [{ kind: 'noop', runAt: '2030-06-30T23:59:60Z' }, 'INVALID_ENQUEUE', 'runAt'],
      [{ kind: 'noop', payload: { sleepMs: 0, colour: 'red' } }, 'INVALID_PAYLOAD', 'payload.colour'],
      [{ kind: 'noop', payload: { sleepMs: 0 }, tenant: 'half-\ud800' }, 'INVALID_ENQUEUE', 'tenant'],
    ];
    const before = await env.pool.query('SELECT count(*)::int AS n FROM jobs');
    for (const [body, code, field] of cases) {
      const response = await call(api, 'POST', '/v1/jobs', { key: operator, body });
      expect(response.status, JSON.stringify(body)).toBe(400);
      expect(response.body.error, JSON.stringify(body)).toMatchObject({ code, field });
    }
    const loneSurrogate = await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'csv-import', payload: { bucket: env.bucket, key: 'imports/ta/\ud800.csv', profile: 'products' } } });
    expect(loneSurrogate.status).toBe(400);
    expect(loneSurrogate.body.error.message).toContain('lone UTF-16 surrogate');
    const unknownKind = await call(api, 'POST', '/v1/jobs', { key: operator, body: { kind: 'teleport' } });
    expect(unknownKind.body.error).toMatchObject({ code: 'UNKNOWN_KIND' });
    const notJson = await call(api, 'POST', '/v1/jobs', { key: operator, body: '{"kind": ' });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe('INVALID_REQUEST');
    expect((await env.pool.query('SELECT count(*)::int AS n FROM jobs')).rows[0]).toEqual(before.rows[0]);
  });

  it('query values and cursors out of what the columns hold are a 400 naming them, never a 500', async () => {
    const { rows } = await env.pool.query<{ kind: string; id: number }>(
      "INSERT INTO jobs (kind, state, finished_at) VALUES ('csv-import', 'partial', now()), ('mass-import', 'partial', now()) RETURNING kind, id",
    );
    const idOf = (kind: string) => rows.find((row) => row.kind === kind)!.id;
    const cursor = (position: unknown) => Buffer.from(JSON.stringify(position)).toString('base64url');
    const cases: Array<[string, string, string]> = [
      ['/v1/jobs?since=2016-12-31T23:59:60Z', 'INVALID_REQUEST', 'since'],
      ['/v1/jobs?until=2016-12-31T23:59:60Z', 'INVALID_REQUEST', 'until'],
      [`/v1/jobs/${idOf('csv-import')}/errors?cursor=${cursor({ row: 3_000_000_000 })}`, 'INVALID_CURSOR', 'cursor'],
      [`/v1/jobs/${idOf('mass-import')}/errors?cursor=${cursor({ item: 3_000_000_000 })}`, 'INVALID_CURSOR', 'cursor'],
      [`/v1/jobs/${idOf('mass-import')}/items?cursor=${cursor({ item: 3_000_000_000 })}`, 'INVALID_CURSOR', 'cursor'],
      [`/v1/dead?cursor=${cursor({ at: '-271821-04-20T00:00:00Z', id: 1 })}`, 'INVALID_CURSOR', 'cursor'],
    ];
    for (const [path, code, field] of cases) {
      const response = await call(api, 'GET', path, { key: operator });
      expect(response.status, path).toBe(400);
      expect(response.body.error, path).toMatchObject({ code, field });
    }
    // The backstop for what no check of ours catches: the database's refusal of a value is the request's fault.
    const refused = Object.assign(new Error('value "3000000000" is out of range for type integer'), { code: '22003' });
    expect(describeError(refused)).toMatchObject({ status: 400, uncaught: true, body: { error: { code: 'INVALID_REQUEST' } } });
    expect(describeError(Object.assign(new Error('boom'), { code: 'XX000' })).status).toBe(500);
    // Class 22 that only a statement of ours can cause stays a server fault, not hidden as the request's.
    for (const code of ['22012', '22004', '2202E', '22023']) {
      expect(describeError(Object.assign(new Error('a fault of ours'), { code })), code).toMatchObject({ status: 500, internal: true, body: { error: { code: 'INTERNAL' } } });
    }
    for (const code of ['22007', '22008', '22P02', '22021']) expect(describeError(Object.assign(new Error('bad value'), { code })).status, code).toBe(400);
  });

  it('GET /v1/jobs/{id}: the run record, and 404 JOB_NOT_FOUND for a run that does not exist', async () => {
    const job = await submitNoop('ta');
    const detail = await call(api, 'GET', `/v1/jobs/${job.id}`, { key: operator });
    expect(detail.status).toBe(200);
    expect(detail.body).toMatchObject({
      id: job.id, kind: 'noop', tenant: 'ta', state: 'queued', attempts: 0, maxAttempts: expect.any(Number), payload: { sleepMs: 0 },
      progress: null, result: null, lastError: null, startedBy: 'ops', resolution: null, cancelRequested: false,
    });
    const missing = await call(api, 'GET', '/v1/jobs/999999999', { key: operator });
    expect(missing).toMatchObject({ status: 404, body: { error: { code: 'JOB_NOT_FOUND', message: 'job 999999999 does not exist' } } });
    expect((await call(api, 'GET', '/v1/jobs/abc', { key: operator })).body.error).toMatchObject({ code: 'INVALID_REQUEST', field: 'id' });
  });

  it('GET /v1/jobs pages newest first with a next cursor, and filters by state, kind, tenant, since and until', async () => {
    const ids: number[] = [];
    for (let i = 0; i < 5; i += 1) ids.push((await submitNoop('paged')).id);
    const seen: number[] = [];
    let next: string | null = null;
    do {
      const query: string = `/v1/jobs?tenant=paged&limit=2${next ? `&cursor=${next}` : ''}`;
      const page = await call(api, 'GET', query, { key: operator });
      expect(page.status).toBe(200);
      expect(page.body.jobs.length).toBeLessThanOrEqual(2);
      seen.push(...page.body.jobs.map((job: { id: number }) => job.id));
      next = page.body.next;
    } while (next);
    expect(seen).toEqual([...ids].reverse());

    const time = (await call(api, 'GET', `/v1/jobs/${ids[2]}`, { key: operator })).body.createdAt as string;
    const until = await call(api, 'GET', `/v1/jobs?tenant=paged&until=${encodeURIComponent(time)}`, { key: operator });
    expect(until.body.jobs.map((job: { id: number }) => job.id)).toEqual([ids[1], ids[0]]);
    const since = await call(api, 'GET', `/v1/jobs?tenant=paged&since=${encodeURIComponent(time)}`, { key: operator });
    expect(since.body.jobs.map((job: { id: number }) => job.id)).toEqual([ids[4], ids[3], ids[2]]);
    const byState = await call(api, 'GET', '/v1/jobs?tenant=paged&state=queued&state=running&kind=noop', { key: operator });
    expect(byState.body.jobs).toHaveLength(5);
    expect((await call(api, 'GET', '/v1/jobs?tenant=paged&state=dead', { key: operator })).body.jobs).toEqual([]);
    expect((await call(api, 'GET', '/v1/jobs?state=sleeping', { key: operator })).body.error).toMatchObject({ code: 'INVALID_REQUEST', field: 'state[0]' });
    expect((await call(api, 'GET', '/v1/jobs?cursor=garbage', { key: operator })).body.error).toMatchObject({ code: 'INVALID_CURSOR', field: 'cursor' });
    expect((await call(api, 'GET', '/v1/jobs?limit=100000', { key: operator })).body.error).toMatchObject({ code: 'INVALID_REQUEST', field: 'limit' });
  });
});

describe('actions', () => {
  it('take an optional body: cancel without one, requeue with a note; both in the history', async () => {
    const job = (await call(api, 'POST', '/v1/jobs', { key: operator, body: { kind: 'noop', tenant: 'ta', runAt: '2999-01-01T00:00:00Z' } })).body.job;
    const canceled = await call(api, 'POST', `/v1/jobs/${job.id}/cancel`, { key: operator });
    expect(canceled.status).toBe(200);
    expect(canceled.body).toMatchObject({ state: 'canceled' });
    const requeued = await call(api, 'POST', `/v1/jobs/${job.id}/requeue`, { key: operator, body: { note: 'by mistake' } });
    expect(requeued.body).toMatchObject({ state: 'queued' });
    expect(requeued.body.actions.map((action: { action: string; note: string | null }) => [action.action, action.note])).toEqual([
      ['submitted', null], ['canceled', null], ['requeued', 'by mistake'],
    ]);
    const again = await call(api, 'POST', `/v1/jobs/${job.id}/requeue`, { key: operator });
    expect(again).toMatchObject({ status: 409, body: { error: { code: 'INVALID_TRANSITION' } } });
    const finalizeNoop = await call(api, 'POST', `/v1/jobs/${job.id}/finalize`, { key: operator });
    expect(finalizeNoop).toMatchObject({ status: 409, body: { error: { code: 'NOT_A_CSV_IMPORT' } } });
  });
});

describe('tenants and roles', () => {
  it("a tenant key sees its own tenant's runs only; another tenant's run is a 404 exactly like a missing one", async () => {
    const own = await submitNoop('ta');
    const other = await submitNoop('tb');
    expect((await call(api, 'GET', `/v1/jobs/${own.id}`, { key: tenantA })).status).toBe(200);
    const hidden = await call(api, 'GET', `/v1/jobs/${other.id}`, { key: tenantA });
    const missing = await call(api, 'GET', '/v1/jobs/999999998', { key: tenantA });
    expect(hidden.status).toBe(404);
    expect(hidden.body).toEqual({ error: { code: 'JOB_NOT_FOUND', message: `job ${other.id} does not exist` } });
    expect(missing.body.error.code).toBe(hidden.body.error.code);
    const listed = await call(api, 'GET', '/v1/jobs?limit=500', { key: tenantA });
    expect(listed.body.jobs.every((job: { tenant: string }) => job.tenant === 'ta')).toBe(true);
    expect(listed.body.jobs.map((job: { id: number }) => job.id)).toContain(own.id);
    expect((await call(api, 'GET', '/v1/jobs?tenant=tb', { key: tenantA })).body.jobs).toEqual([]);
    expect((await call(api, 'GET', `/v1/jobs/${other.id}`, { key: tenantB })).status).toBe(200);
  });

  it("a tenant sees the error we wrote for its run, without the worker it came from (an internal host); an operator sees it", async () => {
    const id = await plantEndedRun(env.pool, 'ta', { code: 'X', message: 'broke', class: 'permanent', attempt: 1, at: 'x', worker: 'ip-10-0-1-23.ec2.internal:1:abc123' });
    const expected = { code: 'X', message: 'broke', class: 'permanent', attempt: 1, at: 'x', internal: false };
    const withWorker = { ...expected, worker: 'ip-10-0-1-23.ec2.internal:1:abc123' };
    expect((await call(api, 'GET', `/v1/jobs/${id}`, { key: tenantA })).body.lastError).toEqual(expected);
    expect((await call(api, 'GET', `/v1/jobs/${id}`, { key: operator })).body.lastError).toEqual(withWorker);
    // Each listing asked for twice: the second answer comes from the renderings kept for that audience.
    for (const [key, seen] of [[tenantA, expected], [operator, withWorker], [tenantA, expected]] as const) {
      for (let time = 0; time < 2; time += 1) {
        const listed = (await call(api, 'GET', '/v1/jobs?tenant=ta&state=failed', { key })).body.jobs as Array<{ id: number; lastError: unknown }>;
        expect(listed.find((job) => job.id === id)?.lastError).toEqual(seen);
      }
    }
  });

  it("an internal failure's message (a driver's, a bug's, the rescuer's) reaches operators only; a tenant reads a plain sentence", async () => {
    // Made by toErrorRecord (internal), and stored before it was: with a stack, by the rescuer, by a backfill.
    const records = [
      { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 10.0.3.17:5432', internal: true, stack: 'Error: connect\n    at x.ts:1', context: { host: '10.0.3.17' } },
      { code: '42P01', message: 'relation "billing_secrets" does not exist', stack: 'error: relation\n    at y.ts:1' },
      { code: 'LEASE_EXPIRED', message: 'lease of worker ip-10-0-1-23.ec2.internal:1:abc expired at 2026-12-07 without a heartbeat' },
      { code: 'BACKFILL_STATEMENT_FAILED', message: 'backfill x on documents failed: value too long for type character varying(10)' },
      // Marked (by the code of this release): its code alone would not say so.
      { code: 'X_OURS_QUOTING', message: 'quotes connect ECONNREFUSED 10.0.3.17:5432', internal: true },
      // A mass import's, recorded as not internal while they named the campaign mount's path.
      { code: 'CAMPAIGN_MOUNT_MISSING', message: 'no campaign mount is present at /mnt/campaign-7 (IMPORT_ROOT): …', internal: false, context: { importRoot: '/mnt/campaign-7' } },
      { code: 'SOURCE_NOT_FOUND', message: 'source "x" does not exist under the import root /mnt/campaign-7 (ENOENT)', internal: false, context: { source: 'x', importRoot: '/mnt/campaign-7' } },
    ];
    const ids: number[] = [];
    for (const record of records) ids.push(await plantEndedRun(env.pool, 'ta', { ...record, class: 'transient', attempt: 1, at: 'x' }, 'dead'));
    const listed = (await call(api, 'GET', '/v1/jobs?tenant=ta&state=dead&limit=500', { key: tenantA })).body.jobs as Array<{ id: number; lastError: unknown }>;
    for (const [i, record] of records.entries()) {
      const plain = {
        code: record.code, class: 'transient', attempt: 1, at: 'x', internal: true,
        message: `an internal error ended this attempt (${record.code}); the operators have its details`,
      };
      expect((await call(api, 'GET', `/v1/jobs/${ids[i]}`, { key: tenantA })).body.lastError).toEqual(plain);
      expect(listed.find((job) => job.id === ids[i])?.lastError).toEqual(plain);
      expect((await call(api, 'GET', `/v1/jobs/${ids[i]}`, { key: operator })).body.lastError).toMatchObject({ code: record.code, message: record.message });
    }
    const stream = await openEvents(api, ids[0]!, tenantA);
    try {
      const snapshot = await stream.waitFor((event) => event.event === 'snapshot');
      expect(JSON.stringify(snapshot.data)).not.toContain('10.0.3.17');
      expect(snapshot.data.lastError).toMatchObject({ code: 'ECONNREFUSED', internal: true });
    } finally {
      stream.close();
    }
  });

  it('failed rows of a million characters: each JSON page stays within its byte budget, and the cursor reaches every row', async () => {
    const id = await plantLongFailedRows(env.pool, 'ta');
    const pages: number[][] = [];
    let next: string | null = null;
    do {
      const page: { status: number; body: { errors: Array<{ row: number }>; next: string | null } } = await call(
        api, 'GET', `/v1/jobs/${id}/errors?limit=1000${next ? `&cursor=${next}` : ''}`, { key: tenantA },
      );
      expect(page.status).toBe(200);
      pages.push(page.body.errors.map((error) => error.row));
      next = page.body.next;
    } while (next);
    // 4 MiB a page (ROW_ERRORS_PAGE_BYTES): five of these rows, the fifth begun under the budget.
    expect(pages).toEqual([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12]]);
  });

  it("a mass import's failed files: S3's own text, another tenant's document and a link's target reach operators only", async () => {
    const { rows } = await env.pool.query<{ id: number }>(
      "INSERT INTO jobs (kind, tenant_id, state, finished_at) VALUES ('mass-import', 'ta', 'partial', now()) RETURNING id",
    );
    const id = rows[0]!.id;
    const sdkText = 'S3 400 KMS.DisabledException: arn:aws:kms:eu-west-1:123456789012:key/abcd is disabled.';
    const otherText = 'the key k already belongs to document 77 of another tenant (created 2026-01-01 by job 12); …';
    const linkText = 'symbolic link to /srv/secrets/payroll.xlsx, outside the import root; not followed';
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       VALUES ($1, 0, 'a.pdf', 1, 'failed', 'S3_KMS.DisabledException', $2, 'permanent', 3),
              ($1, 1, 'b.pdf', 1, 'failed', 'KEY_OF_OTHER_TENANT', $3, 'permanent', 1),
              ($1, 2, 'c.pdf', 1, 'failed', 'UNREADABLE', 'c.pdf cannot be read (EACCES)', 'permanent', 1),
              ($1, 3, 'escape', 0, 'failed', 'SYMLINK_OUTSIDE_ROOT', $4, 'permanent', 1)`,
      [id, sdkText, otherText, linkText],
    );
    const messages = async (key: string, route: string) =>
      ((await call(api, 'GET', `/v1/jobs/${id}/${route}`, { key })).body[route] as Array<{ errorMessage: string }>).map((item) => item.errorMessage);
    for (const route of ['items', 'errors']) {
      expect(await messages(operator, route)).toEqual([sdkText, otherText, 'c.pdf cannot be read (EACCES)', linkText]);
      expect(await messages(tenantA, route)).toEqual([
        'S3 did not store this file (S3_KMS.DisabledException); the operators have the details',
        "this file's key is taken by another tenant's document: the file was not imported; the operators have the details",
        'c.pdf cannot be read (EACCES)',
        "a symbolic link to a file outside this run's source directory: not followed; the operators have the details",
      ]);
    }
    const csv = await (await fetch(`${api.url}/v1/jobs/${id}/errors?format=csv`, { headers: { authorization: `Bearer ${tenantA}` } })).text();
    expect(csv).toContain('S3_KMS.DisabledException');
    for (const secret of ['123456789012', 'document 77', '/srv/secrets']) expect(csv).not.toContain(secret);
    // A dry run's report (its result), stored as the walk wrote it: the link's target reaches operators only.
    await env.pool.query(`UPDATE jobs SET result = $2 WHERE id = $1`, [id, { dryRun: true, unsafe: { count: 1, sample: [{ path: 'escape', code: 'SYMLINK_OUTSIDE_ROOT', reason: linkText }] } }]);
    expect((await call(api, 'GET', `/v1/jobs/${id}`, { key: operator })).body.result.unsafe.sample[0].reason).toBe(linkText);
    const seen = (await call(api, 'GET', `/v1/jobs/${id}`, { key: tenantA })).body.result;
    expect(seen.unsafe.sample).toEqual([{ path: 'escape', code: 'SYMLINK_OUTSIDE_ROOT', reason: "a symbolic link to a file outside this run's source directory: not followed; the operators have the details" }]);
  });

  it("a tenant sees its own key's actions by name and an operator's as \"operator\"; an operator sees every name", async () => {
    const payload = { bucket: env.bucket, key: 'imports/ta/actors.csv', profile: 'products' };
    await upload(payload.key);
    const own = (await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'csv-import', payload, runAt: '2999-01-01T00:00:00Z' } })).body.job as { id: number };
    expect((await call(api, 'POST', `/v1/jobs/${own.id}/cancel`, { key: operator, body: { note: 'stopped by ops' } })).status).toBe(200);
    const asTenant = (await call(api, 'GET', `/v1/jobs/${own.id}`, { key: tenantA })).body;
    expect(asTenant.startedBy).toBe('backend-a');
    expect(asTenant.actions.map((action: { actor: string; note: string | null }) => [action.actor, action.note])).toEqual([
      ['backend-a', null],
      ['operator', 'stopped by ops'],
    ]);
    const asOperator = (await call(api, 'GET', `/v1/jobs/${own.id}`, { key: operator })).body;
    expect(asOperator.actions.map((action: { actor: string }) => action.actor)).toEqual(['backend-a', 'ops']);

    // Submitted from the operator CLI (cli:<user>), failed, resolved by an operator key.
    const { id } = await runCliJson<{ id: number }>(env, ['enqueue', 'noop', '--tenant', 'ta', '--no-dedupe', '--json']);
    await env.pool.query(`UPDATE jobs SET state = 'failed', finished_at = now() WHERE id = $1`, [id]);
    expect((await call(api, 'POST', `/v1/jobs/${id}/resolve`, { key: operator, body: { note: 'known bad input' } })).status).toBe(200);
    const resolvedAsTenant = (await call(api, 'GET', `/v1/jobs/${id}`, { key: tenantA })).body;
    expect([resolvedAsTenant.startedBy, resolvedAsTenant.resolution.by]).toEqual(['operator', 'operator']);
    expect(resolvedAsTenant.actions.map((action: { actor: string }) => action.actor)).toEqual(['operator', 'operator']);
    expect(JSON.stringify(resolvedAsTenant)).not.toContain('cli:');
    const resolvedAsOperator = (await call(api, 'GET', `/v1/jobs/${id}`, { key: operator })).body;
    expect(resolvedAsOperator.startedBy).toMatch(/^cli:/);
    expect(resolvedAsOperator.resolution.by).toBe('ops');
  });

  it('a tenant key submits CSV imports for its own tenant only, and no operator kinds', async () => {
    const payload = { bucket: env.bucket, key: 'imports/ta/x.csv', profile: 'products' };
    await upload(payload.key);
    const created = await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'csv-import', payload, runAt: '2999-01-01T00:00:00Z' } });
    expect(created.status).toBe(201);
    expect(created.body.job).toMatchObject({ tenant: 'ta', startedBy: 'backend-a' });
    const otherTenant = await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'csv-import', tenant: 'tb', payload } });
    expect(otherTenant.body.error).toMatchObject({ code: 'TENANT_MISMATCH', field: 'tenant' });
    const inPayload = await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'csv-import', payload: { ...payload, tenant: 'tb' } } });
    expect(inPayload.body.error).toMatchObject({ code: 'TENANT_MISMATCH', field: 'payload.tenant' });
    const jumpTheQueue = await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'csv-import', payload, priority: -2147483648 } });
    expect(jumpTheQueue).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN', field: 'priority' } } });
    const defaultPriority = await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'csv-import', payload, priority: 0, runAt: '2999-01-01T00:00:00Z' } });
    expect(defaultPriority.body).toMatchObject({ reused: true, job: { id: created.body.job.id, priority: 0 } });
    const operatorKind = await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'backfill', payload: { name: 'documents-file-extension' } } });
    expect(operatorKind).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN', field: 'kind' } } });
    // A time in the past is now for a tenant key (with plain claim order an earlier run_at is claimed first); an
    // operator's stays as given.
    const asked = Date.now();
    for (const file of ['backdated', 'backdated-by-operator']) await upload(`imports/ta/${file}.csv`);
    const backdated = await call(api, 'POST', '/v1/jobs', {
      key: tenantA,
      body: { kind: 'csv-import', payload: { ...payload, key: 'imports/ta/backdated.csv' }, runAt: '1970-01-01T00:00:01Z' },
    });
    expect(backdated.status).toBe(201);
    expect(Date.parse(backdated.body.job.runAt)).toBeGreaterThanOrEqual(asked - 60_000);
    const byOperator = await call(api, 'POST', '/v1/jobs', {
      key: operator,
      body: { kind: 'csv-import', tenant: 'ta', payload: { ...payload, key: 'imports/ta/backdated-by-operator.csv' }, runAt: '1970-01-01T00:00:01Z' },
    });
    expect(byOperator.body.job.runAt).toBe('1970-01-01T00:00:01.000Z');
    await env.pool.query('DELETE FROM jobs WHERE id = ANY($1::bigint[])', [[backdated.body.job.id, byOperator.body.job.id]]);
  });

  it("a CSV import's size is its upload's, read from S3: a declared size is checked, a missing upload or another tenant's key refused", async () => {
    const runAt = '2999-01-01T00:00:00Z';
    const submit = (key: string, payload: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      call(api, 'POST', '/v1/jobs', { key, body: { kind: 'csv-import', payload: { bucket: env.bucket, profile: 'products', ...payload }, runAt, ...extra } });
    await upload('imports/ta/sized.csv', 1234);
    await upload('imports/tb/secret.csv', 10);
    const before = await env.pool.query('SELECT count(*)::int AS n FROM jobs');
    // Declared 0 to slip under a queued-bytes limit: refused, naming the field.
    const understated = await submit(tenantA, { key: 'imports/ta/sized.csv' }, { sizeBytes: 0 });
    expect(understated).toMatchObject({ status: 400, body: { error: { code: 'SIZE_MISMATCH', field: 'sizeBytes' } } });
    expect(understated.body.error.message).toContain('1234 bytes');
    const missing = await submit(tenantA, { key: 'imports/ta/never-uploaded.csv' });
    expect(missing).toMatchObject({ status: 400, body: { error: { code: 'UPLOAD_NOT_FOUND', field: 'payload.key' } } });
    // Another tenant's key is refused before any HEAD: the answer is the same whether that upload exists or not.
    const theirs = await submit(tenantA, { key: 'imports/tb/secret.csv' });
    const theirsMissing = await submit(tenantA, { key: 'imports/tb/absent.csv' });
    expect(theirs).toMatchObject({ status: 400, body: { error: { code: 'CSV_KEY_NOT_ALLOWED', field: 'payload.key' } } });
    expect(theirsMissing.body.error.code).toBe(theirs.body.error.code);
    const otherBucket = await submit(tenantA, { key: 'imports/ta/sized.csv', bucket: 'someone-elses-bucket' });
    expect(otherBucket).toMatchObject({ status: 400, body: { error: { code: 'CSV_BUCKET_NOT_ALLOWED', field: 'payload.bucket' } } });
    const noTenant = await submit(operator, { key: 'imports/ta/sized.csv' });
    expect(noTenant).toMatchObject({ status: 400, body: { error: { code: 'TENANT_REQUIRED', field: 'tenant' } } });
    // A tenant no object key can hold: a clear 400 before any HEAD, not a 500 from building the upload prefix.
    const badTenant = await submit(operator, { key: 'imports/a b/x.csv' }, { tenant: 'a b' });
    expect(badTenant).toMatchObject({ status: 400, body: { error: { code: 'TENANT_REQUIRED', field: 'tenant' } } });
    expect(badTenant.body.error.message).toContain('not "a b"');
    // A mass import imports for a tenant too: refused at submit, not failed when it starts.
    for (const tenant of [undefined, '<b>x</b>']) {
      const massImport = await call(api, 'POST', '/v1/jobs', {
        key: operator,
        body: { kind: 'mass-import', payload: { source: 'hostile' }, runAt, ...(tenant ? { tenant } : {}) },
      });
      expect(massImport, String(tenant)).toMatchObject({ status: 400, body: { error: { code: 'TENANT_REQUIRED', field: 'tenant' } } });
    }
    expect((await env.pool.query('SELECT count(*)::int AS n FROM jobs')).rows[0]).toEqual(before.rows[0]);

    const measured = await submit(tenantA, { key: 'imports/ta/sized.csv' });
    expect(measured.status).toBe(201);
    const exact = await submit(operator, { key: 'imports/ta/sized.csv', tenant: 'ta' }, { sizeBytes: 1234, dedupeKey: null });
    expect(exact.status).toBe(201);
    const { rows } = await env.pool.query<{ size_bytes: number }>('SELECT size_bytes FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id', [[measured.body.job.id, exact.body.job.id]]);
    expect(rows.map((row) => Number(row.size_bytes))).toEqual([1234, 1234]);
  });

  it('a HEAD that S3 never answers is a 503 S3_UNAVAILABLE after s3HeadTimeoutMs, and nothing is submitted', async () => {
    const proxy = await startFaultyS3Proxy(env.s3Endpoint);
    const stalled = await startTestApi(env, { s3HeadTimeoutMs: 300 }, { S3_ENDPOINT: proxy.endpoint });
    try {
      await upload('imports/ta/stalled.csv');
      proxy.decide = (request) => (request.method === 'HEAD' ? 'stall' : 'pass');
      const before = await env.pool.query('SELECT count(*)::int AS n FROM jobs');
      const answer = await call(stalled, 'POST', '/v1/jobs', {
        key: tenantA,
        body: { kind: 'csv-import', payload: { bucket: env.bucket, key: 'imports/ta/stalled.csv', profile: 'products' }, runAt: '2999-01-01T00:00:00Z' },
      });
      expect(answer).toMatchObject({ status: 503, body: { error: { code: 'S3_UNAVAILABLE' } } });
      expect(answer.headers.get('retry-after')).toBe('5');
      expect(proxy.stats.faults.stall).toBeGreaterThanOrEqual(1);
      expect((await env.pool.query('SELECT count(*)::int AS n FROM jobs')).rows[0]).toEqual(before.rows[0]);
      expect(stalled.logText()).toContain('could not be read from S3');
    } finally {
      proxy.dropHeld();
      await stalled.close();
      await proxy.close();
    }
  });

  it("a tenant over a limit of all tenants reads the limit and when to retry, not the other tenants' figures", async () => {
    // Room for two more csv-import runs of all tenants, beside those earlier tests left queued.
    const { rows } = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM jobs WHERE kind = 'csv-import' AND state = 'queued'");
    const limit = rows[0]!.n + 2;
    const limited = await startTestApi(env, {}, { ADMISSION_TOTAL_QUEUED_RUNS: String(limit) });
    try {
      const tenant = await makeKey(env, 'backend-total', 'tenant', 'ttotal');
      for (const name of ['one', 'two']) await upload(`imports/ttotal/${name}.csv`, 100);
      for (const name of ['other', 'other-again']) await upload(`imports/tother/${name}.csv`, 100);
      const payload = (tenantPrefix: string, name: string) => ({ bucket: env.bucket, key: `imports/${tenantPrefix}/${name}.csv`, profile: 'products' });
      const asOperator = (name: string) =>
        call(limited, 'POST', '/v1/jobs', { key: operator, body: { kind: 'csv-import', tenant: 'tother', payload: payload('tother', name), dedupeKey: null, runAt: '2999-01-01T00:00:00Z' } });
      const asTenant = (name: string) =>
        call(limited, 'POST', '/v1/jobs', { key: tenant, body: { kind: 'csv-import', payload: payload('ttotal', name), runAt: '2999-01-01T00:00:00Z' } });
      expect((await asOperator('other')).status).toBe(201);
      expect((await asTenant('one')).status).toBe(201);
      const refused = await asTenant('two');
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(refused.body.error).toEqual({
        code: 'QUEUE_LIMIT',
        message: expect.stringMatching(/^the queue of csv-import runs of all tenants is at its limit \(ADMISSION_TOTAL_QUEUED_RUNS\); nothing was submitted; retry in \d+ s$/),
      });
      // An operator is told the figures.
      const toOperator = await asOperator('other-again');
      expect(toOperator.status).toBe(429);
      expect(toOperator.body.error.message).toContain(`all tenants: ${limit} queued runs, limit ${limit} queued runs`);
    } finally {
      await env.pool.query("DELETE FROM jobs WHERE kind = 'csv-import' AND tenant_id IN ('ttotal', 'tother')");
      await limited.close();
    }
  });

  it('the queued-bytes limit counts what was uploaded, not what the caller declares', async () => {
    const limited = await startTestApi(env, {}, { ADMISSION_TENANT_QUEUED_BYTES: '3000' });
    try {
      const tenant = await makeKey(env, 'backend-bytes', 'tenant', 'tbytes');
      for (const name of ['one', 'two', 'three']) await upload(`imports/tbytes/${name}.csv`, 1400);
      const submit = (name: string) =>
        call(limited, 'POST', '/v1/jobs', { key: tenant, body: { kind: 'csv-import', payload: { bucket: env.bucket, key: `imports/tbytes/${name}.csv`, profile: 'products' }, runAt: '2999-01-01T00:00:00Z' } });
      expect((await submit('one')).status).toBe(201);
      expect((await submit('two')).status).toBe(201);
      const third = await submit('three');
      expect(third).toMatchObject({ status: 429, body: { error: { code: 'QUEUE_LIMIT' } } });
      expect(third.body.error.message).toContain('2800');
    } finally {
      await limited.close();
    }
  });

  it("a dedupe key is the tenant's own: another tenant's key never returns, nor blocks, a run of the first", async () => {
    const payload = { bucket: env.bucket, key: 'imports/ta/dedupe.csv', profile: 'products' };
    const runAt = '2999-01-01T00:00:00Z';
    await upload(payload.key);
    await upload('imports/tb/dedupe.csv');
    const ownRun = await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'csv-import', payload, runAt } });
    expect(ownRun.status).toBe(201);
    const theirKey = ownRun.body.job.dedupeKey as string;
    expect(theirKey).toContain('ta');
    // Tenant B names A's key, as it is easy to guess: B gets a run of its own, not A's run, payload and all.
    const guessed = await call(api, 'POST', '/v1/jobs', {
      key: tenantB,
      body: { kind: 'csv-import', payload: { ...payload, key: 'imports/tb/dedupe.csv' }, dedupeKey: theirKey, runAt },
    });
    expect(guessed.status).toBe(201);
    expect(guessed.body).toMatchObject({ reused: false, job: { tenant: 'tb', dedupeKey: theirKey } });
    expect(guessed.body.job.id).not.toBe(ownRun.body.job.id);
    // Each tenant's next submit of the key finds its own active run.
    expect((await call(api, 'POST', '/v1/jobs', { key: tenantA, body: { kind: 'csv-import', payload, runAt } })).body).toMatchObject({ reused: true, job: { id: ownRun.body.job.id } });
    const againB = await call(api, 'POST', '/v1/jobs', { key: tenantB, body: { kind: 'csv-import', payload: { ...payload, key: 'imports/tb/dedupe.csv' }, dedupeKey: theirKey, runAt } });
    expect(againB.body).toMatchObject({ reused: true, job: { id: guessed.body.job.id, tenant: 'tb' } });
  });

  it('a tenant key on operator routes gets 403', async () => {
    for (const [method, path, body] of [
      ['GET', '/v1/stats', undefined],
      ['GET', '/v1/dead', undefined],
      ['POST', '/v1/dead/replay', { all: true }],
      ['POST', '/v1/dead/purge', { olderThan: '0s' }],
    ] as const) {
      const response = await call(api, method, path, { key: tenantA, ...(body ? { body } : {}) });
      expect(response.status, `${method} ${path}`).toBe(403);
      expect(response.body.error.code).toBe('FORBIDDEN');
    }
    expect((await call(api, 'GET', '/v1/stats', { key: operator })).status).toBe(200);
  });
});
