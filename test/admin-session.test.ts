// The admin pages' sign-in, session and CSRF rules over plain HTTP (no browser): cookie flags, Secure behind TLS,
// expiry, sign-out, a revoked key, the sign-in form's own token, the session cookie accepted only by the read-only
// routes that say so, the pages kept out of the API spec, and the one escaping helper.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, revokeApiKey } from '../worker/auth/api-keys.js';
import { escapeHtml, html } from '../worker/http/admin/html.js';
import { useTestEnvironment } from './harness.js';
import { call, startTestApi, type TestApi } from './support/api-server.js';
import { plantEndedRun } from './support/ended-runs.js';
import { plantLongFailedRows } from './support/long-failed-rows.js';

const env = useTestEnvironment();
let api: TestApi;
let jobId: number;

beforeAll(async () => {
  api = await startTestApi(env);
  const { key } = await createApiKey(env.pool, { name: 'seeder', role: 'operator' });
  const submitted = await call(api, 'POST', '/v1/jobs', { key, body: { kind: 'noop', tenant: 'acme', payload: {}, runAt: '2999-01-01T00:00:00Z' } });
  jobId = submitted.body.job.id;
});
afterAll(async () => {
  await api?.close();
});

const cookiesOf = (response: Response): string[] => response.headers.getSetCookie();
const valueOf = (cookie: string): string => cookie.split(';')[0]!;

async function get(path: string, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${api.url}${path}`, { headers, redirect: 'manual' });
}

async function post(path: string, form: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${api.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(form).toString(),
    redirect: 'manual',
  });
}

/** Signs in through the form; returns the session cookie and every Set-Cookie of the answer. */
async function signIn(key: string, headers: Record<string, string> = {}): Promise<{ cookie: string; setCookies: string[]; response: Response }> {
  const form = await get('/admin/sign-in', headers);
  const formCookie = valueOf(cookiesOf(form)[0]!);
  const token = /name="csrf" value="([^"]+)"/.exec(await form.text())![1]!;
  const response = await post('/admin/sign-in', { csrf: token, key }, { cookie: formCookie, ...headers });
  const setCookies = cookiesOf(response);
  const session = setCookies.find((cookie) => /^(__Host-)?bi_admin_session=/.test(cookie));
  return { cookie: session ? valueOf(session) : '', setCookies, response };
}

const csrfOf = async (response: Response): Promise<string> => /name="csrf" value="([^"]+)"/.exec(await response.text())![1]!;

describe('admin sign-in and sessions', () => {
  it('sets an HttpOnly, SameSite=Strict, expiring session cookie (Secure behind TLS) and stores only its hash', async () => {
    const { key } = await createApiKey(env.pool, { name: 'cookie-check', role: 'operator' });
    const { response, setCookies, cookie } = await signIn(key);
    expect(response.status).toBe(303);
    expect(response.headers.get('location')).toBe('/admin/runs');
    const session = setCookies.find((value) => value.startsWith('bi_admin_session='))!;
    expect(session).toMatch(/; HttpOnly/);
    expect(session).toMatch(/; SameSite=Strict/);
    expect(session).toMatch(/; Max-Age=28800/);
    expect(session).not.toMatch(/Secure/);
    const token = decodeURIComponent(cookie.split('=')[1]!);
    const { rows } = await env.pool.query(`SELECT encode(token_hash, 'hex') AS hash FROM admin_sessions`);
    expect(rows.map((row) => row.hash).join()).not.toContain(Buffer.from(token).toString('hex'));
    expect(JSON.stringify(rows)).not.toContain(token);
    expect(api.logText()).not.toContain(token);
    expect(api.logText()).not.toContain(key);

    // Behind TLS: Secure, and named __Host- (Path=/, no Domain), which no other host can set.
    const behindTls = await signIn(key, { 'x-forwarded-proto': 'https' });
    expect(behindTls.setCookies.find((value) => value.startsWith('__Host-bi_admin_session='))).toMatch(/; Path=\/;.*; Secure$/);
    expect(behindTls.setCookies.some((value) => value.startsWith('bi_admin_session='))).toBe(false);
  });

  it('refuses an unknown key, and a sign-in form without its own token', async () => {
    const refused = await signIn('bik_' + 'x'.repeat(43));
    expect(refused.response.status).toBe(401);
    expect(refused.cookie).toBe('');
    const { key } = await createApiKey(env.pool, { name: 'forged', role: 'operator' });
    const forged = await post('/admin/sign-in', { csrf: 'a'.repeat(32), key });
    expect(forged.status).toBe(403);
    expect(cookiesOf(forged).some((cookie) => cookie.startsWith('bi_admin_session='))).toBe(false);
  });

  it('ends on sign-out, at expiry, and when its key is revoked', async () => {
    const { key } = await createApiKey(env.pool, { name: 'short-lived', role: 'operator' });
    const first = await signIn(key);
    const page = await get('/admin/runs', { cookie: first.cookie });
    expect(page.status).toBe(200);
    const out = await post('/admin/sign-out', { csrf: await csrfOf(page) }, { cookie: first.cookie });
    expect(out.status).toBe(303);
    // A browser whose session no longer holds is told why on the sign-in form.
    expect((await get('/admin/runs', { cookie: first.cookie })).headers.get('location')).toBe('/admin/sign-in?ended=1');

    const second = await signIn(key);
    await env.pool.query(`UPDATE admin_sessions SET expires_at = now() - interval '1 second'`);
    expect((await get('/admin/runs', { cookie: second.cookie })).status).toBe(303);

    const third = await signIn(key);
    expect((await get('/admin/runs', { cookie: third.cookie })).status).toBe(200);
    await revokeApiKey(env.pool, 'short-lived');
    const afterRevoke = await get(`/admin/runs/${jobId}`, { cookie: third.cookie });
    expect(afterRevoke.status).toBe(303);
    expect((await get(`/v1/jobs/${jobId}/events`, { cookie: third.cookie })).status).toBe(401);
  });

  it('the review page shows the start of a very long value and counts the rest; its rows stay within a page budget', async () => {
    const { key } = await createApiKey(env.pool, { name: 'long-rows', role: 'tenant', tenantId: 'acme' });
    const id = await plantLongFailedRows(env.pool, 'acme');
    const { cookie } = await signIn(key);
    const review = await get(`/admin/runs/${id}/review`, { cookie });
    expect(review.status).toBe(200);
    const text = await review.text();
    expect(text).toContain(`<bdi class="value">${'d'.repeat(500)}</bdi><span class="muted"> … (999,500 more characters: the CSV download has them)</span>`);
    expect(text).not.toContain('d'.repeat(501));
    // Five rows fill the page's 4 MiB; the next page starts after the fifth.
    expect(text.match(/<td class="num">\d+<\/td>/g)).toEqual([1, 2, 3, 4, 5].map((row) => `<td class="num">${row}</td>`));
    expect(text).toContain(`href="/admin/runs/${id}/review?after=5#failed-rows"`);
  });

  it("a session's open event streams end when it signs out or expires; another session's stream goes on", async () => {
    const { key } = await createApiKey(env.pool, { name: 'watcher', role: 'operator' });
    const submitted = await call(api, 'POST', '/v1/jobs', { key, body: { kind: 'noop', tenant: 'acme', payload: {}, runAt: '2999-01-01T00:00:00Z' } });
    const watched = submitted.body.job.id as number;
    /** The stream of `watched` read with a session cookie: its text so far, and a promise of its end. */
    const follow = async (cookie: string) => {
      const response = await fetch(`${api.url}/v1/jobs/${watched}/events`, { headers: { cookie } });
      expect(response.status).toBe(200);
      const stream = { text: '', ended: Promise.resolve(), changed: () => {} };
      stream.ended = (async () => {
        for await (const chunk of response.body!) {
          stream.text += Buffer.from(chunk as Uint8Array).toString();
          stream.changed();
        }
      })();
      return stream;
    };
    const leaving = await signIn(key);
    const staying = await signIn(key);
    // A session of 30 days (serve --session-hours 720): longer than a timer can wait.
    const monthLong = await signIn(key);
    await env.pool.query(`UPDATE admin_sessions SET expires_at = now() + interval '30 days' WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [
      decodeURIComponent(monthLong.cookie.split('=')[1]!),
    ]);
    const leavingStream = await follow(leaving.cookie);
    const stayingStream = await follow(staying.cookie);
    const monthLongStream = await follow(monthLong.cookie);
    const page = await get('/admin/runs', { cookie: leaving.cookie });
    expect((await post('/admin/sign-out', { csrf: await csrfOf(page) }, { cookie: leaving.cookie })).status).toBe(303);
    await leavingStream.ended;
    expect((await get(`/v1/jobs/${watched}/events`, { cookie: leaving.cookie })).status).toBe(401);
    // The other session of the same key still hears the run: its cancel arrives as a state event.
    const hears = (stream: typeof stayingStream) =>
      new Promise<void>((resolve, reject) => {
        stream.changed = () => stream.text.includes('"state":"canceled"') && resolve();
        void stream.ended.then(() => reject(new Error('the stream ended before the cancel')));
      });
    const heard = [hears(stayingStream), hears(monthLongStream)];
    expect((await call(api, 'POST', `/v1/jobs/${watched}/cancel`, { key, body: {} })).status).toBe(200);
    await Promise.all(heard);

    // A session about to expire: its stream ends at the expiry, as its next page would be refused.
    const expiring = await signIn(key);
    await env.pool.query(`UPDATE admin_sessions SET expires_at = now() + interval '1 second' WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, [
      decodeURIComponent(expiring.cookie.split('=')[1]!),
    ]);
    const expiringStream = await follow(expiring.cookie);
    await expiringStream.ended;
    expect((await get(`/v1/jobs/${watched}/events`, { cookie: expiring.cookie })).status).toBe(401);
    expect(stayingStream.text).toContain('event: snapshot');
  });

  it('the session cookie reads the event stream and the failed-row export, and nothing else of /v1', async () => {
    const { key } = await createApiKey(env.pool, { name: 'reader', role: 'operator' });
    const { cookie } = await signIn(key);
    const events = await fetch(`${api.url}/v1/jobs/${jobId}/events`, { headers: { cookie } });
    expect(events.status).toBe(200);
    expect(events.headers.get('content-type')).toContain('text/event-stream');
    await events.body?.cancel();
    expect((await fetch(`${api.url}/v1/jobs/${jobId}/errors`, { headers: { cookie } })).status).toBe(200);
    expect((await fetch(`${api.url}/v1/jobs/${jobId}`, { headers: { cookie } })).status).toBe(401);
    const cancel = await fetch(`${api.url}/v1/jobs/${jobId}/cancel`, { method: 'POST', headers: { cookie, 'content-type': 'application/json' }, body: '{}' });
    expect(cancel.status).toBe(401);
  });

  it('every POST needs the CSRF token of its own session', async () => {
    const { key } = await createApiKey(env.pool, { name: 'csrf-a', role: 'operator' });
    const { key: otherKey } = await createApiKey(env.pool, { name: 'csrf-b', role: 'operator' });
    const a = await signIn(key);
    const b = await signIn(otherKey);
    const tokenOfB = await csrfOf(await get('/admin/runs', { cookie: b.cookie }));
    for (const form of [{ note: 'x' }, { note: 'x', csrf: tokenOfB }, { note: 'x', csrf: '' }] as Array<Record<string, string>>) {
      const response = await post(`/admin/runs/${jobId}/cancel`, form, { cookie: a.cookie });
      expect(response.status).toBe(403);
      expect(await response.text()).toContain('CSRF');
    }
    expect((await call(api, 'GET', `/v1/jobs/${jobId}`, { key })).body.state).toBe('queued');
    const tokenOfA = await csrfOf(await get('/admin/runs', { cookie: a.cookie }));
    const done = await post(`/admin/runs/${jobId}/cancel`, { note: 'not needed', csrf: tokenOfA }, { cookie: a.cookie });
    expect(done.status).toBe(303);
    expect((await call(api, 'GET', `/v1/jobs/${jobId}`, { key })).body).toMatchObject({ state: 'canceled', actions: [{ action: 'submitted' }, { action: 'canceled', actor: 'csrf-a', note: 'not needed' }] });
  });

  it('a cookie name sent twice (one planted by a sibling subdomain) signs nobody in and passes no sign-in check', async () => {
    const { key: victimKey } = await createApiKey(env.pool, { name: 'tossed-victim', role: 'operator' });
    const { key: attackerKey } = await createApiKey(env.pool, { name: 'tossed-attacker', role: 'tenant', tenantId: 'evil' });
    const victim = await signIn(victimKey);
    const attacker = await signIn(attackerKey);
    // The browser sends both, the longer path first; either order is refused.
    for (const cookie of [`${attacker.cookie}; ${victim.cookie}`, `${victim.cookie}; ${attacker.cookie}`]) {
      const runs = await get('/admin/runs', { cookie });
      expect(runs.status).toBe(303);
      expect(runs.headers.get('location')).toBe('/admin/sign-in');
      expect((await fetch(`${api.url}/v1/jobs/${jobId}/events`, { headers: { cookie } })).status).toBe(401);
    }
    expect((await get('/admin/runs', { cookie: victim.cookie })).status).toBe(200);
    const form = await get('/admin/sign-in', { cookie: `${attacker.cookie}; ${victim.cookie}` });
    expect(await form.text()).toContain('two admin cookies of one name');
    // A sign-in token the attacker knows, planted beside the form's own: refused even though it matches.
    const planted = 'p'.repeat(32);
    const tossed = await post('/admin/sign-in', { csrf: planted, key: victimKey }, { cookie: `bi_admin_sign_in=${planted}; ${valueOf(cookiesOf(form)[0]!)}` });
    expect(tossed.status).toBe(403);
    expect(cookiesOf(tossed).some((cookie) => cookie.startsWith('bi_admin_session='))).toBe(false);
  });

  it('refuses a POST a browser says came from another origin (a sibling subdomain included), sign-in and forms alike', async () => {
    const { key: attackerKey } = await createApiKey(env.pool, { name: 'cross-origin-attacker', role: 'tenant', tenantId: 'evil' });
    const own = new URL(api.url).origin;
    // A sibling subdomain planted the sign-in cookie (Domain=the parent) and posts the attacker's key with its token:
    // the double submit matches, only where the form came from tells.
    const planted = 'q'.repeat(32);
    const plantedSignIn = (headers: Record<string, string>) =>
      post('/admin/sign-in', { csrf: planted, key: attackerKey }, { cookie: `bi_admin_sign_in=${planted}`, ...headers });
    const refusedHeaders: Array<Record<string, string>> = [
      { origin: 'https://evil.example' },
      { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site' },
      { origin: 'null' },
      { origin: own, 'sec-fetch-site': 'same-site' },
      { origin: own.replace('127.0.0.1', 'localhost') },
    ];
    for (const headers of refusedHeaders) {
      const refused = await plantedSignIn(headers);
      expect(refused.status, JSON.stringify(headers)).toBe(403);
      expect(await refused.text()).toContain('another site');
      expect(cookiesOf(refused).some((cookie) => cookie.includes('bi_admin_session='))).toBe(false);
    }
    // From the server's own origin (and with neither header: no browser) the same post signs in.
    const acceptedHeaders: Array<Record<string, string>> = [{ origin: own, 'sec-fetch-site': 'same-origin' }, { origin: own }, { 'sec-fetch-site': 'same-origin' }, {}];
    for (const headers of acceptedHeaders) {
      const accepted = await plantedSignIn(headers);
      expect(accepted.status, JSON.stringify(headers)).toBe(303);
      expect(cookiesOf(accepted).some((cookie) => cookie.startsWith('bi_admin_session='))).toBe(true);
    }
    // Behind TLS (X-Forwarded-Proto: https) the own origin is https: an http page of the same host is another origin.
    const host = new URL(api.url).host;
    const overTls = (origin: string) =>
      post('/admin/sign-in', { csrf: planted, key: attackerKey }, { cookie: `__Host-bi_admin_sign_in=${planted}`, 'x-forwarded-proto': 'https', origin });
    expect((await overTls(`http://${host}`)).status).toBe(403);
    expect((await overTls(`https://${host}`)).status).toBe(303);

    // Every other admin POST too, even with its session's CSRF token.
    const { key } = await createApiKey(env.pool, { name: 'cross-origin-victim', role: 'operator' });
    const victim = await signIn(key);
    const csrf = await csrfOf(await get('/admin/runs', { cookie: victim.cookie }));
    const signOut = (headers: Record<string, string>) => post('/admin/sign-out', { csrf }, { cookie: victim.cookie, ...headers });
    expect((await signOut({ origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' })).status).toBe(403);
    expect((await signOut({ 'sec-fetch-site': 'same-site' })).status).toBe(403);
    expect((await get('/admin/runs', { cookie: victim.cookie })).status).toBe(200);
    expect((await signOut({ origin: own, 'sec-fetch-site': 'same-origin' })).status).toBe(303);
    expect((await get('/admin/runs', { cookie: victim.cookie })).status).toBe(303);
  });

  it('behind TLS reads only the __Host- cookies: a plain-named one planted by a sibling subdomain signs nobody in', async () => {
    const { key: attackerKey } = await createApiKey(env.pool, { name: 'planted-attacker', role: 'tenant', tenantId: 'evil' });
    const tls = { 'x-forwarded-proto': 'https' };
    const attacker = await signIn(attackerKey);
    expect(attacker.cookie).toMatch(/^bi_admin_session=/);
    // The attacker's own session, planted under the plain name (a sibling may set it with Domain=the parent).
    expect((await get('/admin/runs', { cookie: attacker.cookie })).status).toBe(200);
    const planted = await get('/admin/runs', { cookie: attacker.cookie, ...tls });
    expect(planted.status).toBe(303);
    expect(planted.headers.get('location')).toBe('/admin/sign-in');
    expect((await fetch(`${api.url}/v1/jobs/${jobId}/events`, { headers: { cookie: attacker.cookie, ...tls } })).status).toBe(401);
    // A sign-in token it knows, under the plain name: no sign-in check passes with it.
    const token = 'r'.repeat(32);
    const tossed = await post('/admin/sign-in', { csrf: token, key: attackerKey }, { cookie: `bi_admin_sign_in=${token}`, ...tls });
    expect(tossed.status).toBe(403);
    expect(cookiesOf(tossed).some((cookie) => cookie.includes('bi_admin_session='))).toBe(false);
    // The form's own cookie behind TLS is __Host- with Path=/ (a __Host- cookie may have no other path).
    const form = await get('/admin/sign-in', tls);
    expect(cookiesOf(form)[0]).toMatch(/^__Host-bi_admin_sign_in=[^;]+; Path=\/;.*; Secure$/);
  });

  it('sign-in goes back to the page asked for, never to another site; the form of an ended session gets the sign-in form', async () => {
    const { key } = await createApiKey(env.pool, { name: 'deep-link', role: 'operator' });
    const wanted = `/admin/runs/${jobId}?x=1`;
    // Signed out, a run's page (a notification's link) goes to the sign-in form, which comes back to it.
    const asked = await get(wanted);
    expect(asked.status).toBe(303);
    expect(asked.headers.get('location')).toBe(`/admin/sign-in?next=${encodeURIComponent(wanted)}`);
    const signInWith = async (next: string) => {
      const form = await get(`/admin/sign-in?next=${encodeURIComponent(next)}`);
      const page = await form.text();
      const csrf = /name="csrf" value="([^"]+)"/.exec(page)![1]!;
      const response = await post('/admin/sign-in', { csrf, key, next }, { cookie: valueOf(cookiesOf(form)[0]!) });
      return { page, location: response.headers.get('location') };
    };
    const back = await signInWith(wanted);
    expect(back.page).toContain(`name="next" value="/admin/runs/${jobId}?x=1"`);
    expect(back.location).toBe(wanted);
    const elsewhereNext = ['//evil.example/admin/', 'https://evil.example/admin/', '/admin/\\evil.example', '/v1/jobs', '/admin/sign-out'];
    // Dot segments, as a browser resolves them in the Location it follows.
    elsewhereNext.push('/admin/%2e%2e/v1/jobs/5/errors?format=csv', '/admin/../admin/sign-in', '/admin/..//evil.example', '/admin/.%2E/v1');
    for (const next of elsewhereNext) {
      const elsewhere = await signInWith(next);
      expect(elsewhere.page, next).not.toContain('name="next"');
      expect(elsewhere.location, next).toBe('/admin/runs');
    }

    // A form sent after the session ended: the sign-in form itself, which comes back to that form's page.
    const { cookie } = await signIn(key);
    const csrf = await csrfOf(await get(`/admin/runs/${jobId}/cancel`, { cookie }));
    await env.pool.query(`UPDATE admin_sessions SET expires_at = now() - interval '1 second'`);
    const late = await post(`/admin/runs/${jobId}/cancel`, { csrf, note: 'late' }, { cookie });
    expect(late.status).toBe(401);
    const text = await late.text();
    expect(text).toContain('Your session ended (signed out, expired, or its key was revoked): sign in again.');
    expect(text).toContain('name="key"');
    expect(text).toContain(`name="next" value="/admin/runs/${jobId}/cancel"`);
    expect(cookiesOf(late).some((value) => value.startsWith('bi_admin_sign_in='))).toBe(true);
    expect((await env.pool.query(`SELECT count(*)::int AS n FROM job_actions WHERE note = 'late'`)).rows[0].n).toBe(0);
  });

  it('a second sign-in page keeps the first one\'s form valid (one token per browser)', async () => {
    const first = await get('/admin/sign-in');
    const cookie = valueOf(cookiesOf(first)[0]!);
    const token = await csrfOf(first);
    const second = await get('/admin/sign-in', { cookie });
    expect(await csrfOf(second)).toBe(token);
    const { key } = await createApiKey(env.pool, { name: 'two-tabs', role: 'tenant', tenantId: 'acme' });
    const signedIn = await post('/admin/sign-in', { csrf: token, key }, { cookie });
    expect(signedIn.status).toBe(303);
    expect(signedIn.headers.get('location')).toBe('/admin/runs');
  });

  it('a finalize refused as stale offers the new review, not the same form again; a run never validated offers no download', async () => {
    const { key } = await createApiKey(env.pool, { name: 'stale-page', role: 'operator' });
    const review = await plantLongFailedRows(env.pool, 'acme', 1);
    const { cookie } = await signIn(key);
    // Never validated (no run record): no download of failed rows that are not there.
    const reviewPage = await (await get(`/admin/runs/${review}/review`, { cookie })).text();
    expect(reviewPage).not.toContain('errors?format=csv');
    expect(reviewPage).toContain('there is no file of failed rows');
    await env.pool.query(
      `INSERT INTO csv_import_runs (job_id, profile, tenant_id, bucket, object_key, delimiter, header, columns, validated_at, validation_ended_at)
       VALUES ($1, 'products', 'acme', 'b', 'imports/acme/x.csv', ',', ARRAY['sku'], ARRAY['sku'], now(), now())`,
      [review],
    );
    const csrf = await csrfOf(await get(`/admin/runs/${review}/finalize`, { cookie }));
    const stale = await post(`/admin/runs/${review}/finalize`, { csrf, note: '', excludeRows: '', validatedAt: '2026-01-01T00:00:00.000Z' }, { cookie });
    expect(stale.status).toBe(409);
    const text = await stale.text();
    expect(text).toContain('validated again since the review you approve');
    expect(text).toContain(`href="/admin/runs/${review}/review">Review the new validation</a>`);
    expect(text).not.toContain(`action="/admin/runs/${review}/finalize"`);
  });

  it('pages name their icon (served without a session), read counts as words, and a finished run\'s bar is not busy', async () => {
    const { key } = await createApiKey(env.pool, { name: 'looks', role: 'operator' });
    const { cookie } = await signIn(key);
    const runs = await (await get('/admin/runs', { cookie })).text();
    const icon = /<link rel="icon" href="([^"]+)" type="image\/svg\+xml">/.exec(runs)![1]!;
    const served = await get(icon);
    expect(served.status).toBe(200);
    expect(served.headers.get('content-type')).toBe('image/svg+xml');
    expect(runs).toMatch(/<strong data-count="queued">[\d,]+<\/strong> queued<\/a>/);
    const ended = await plantEndedRun(env.pool, 'acme', { code: 'X', class: 'permanent', message: 'x' });
    await env.pool.query(`UPDATE jobs SET state = 'succeeded', last_error = NULL WHERE id = $1`, [ended]);
    expect(await (await get(`/admin/runs/${ended}`, { cookie })).text()).toContain('<progress data-live-bar max="100" value="100"');
  });

  it('shows a bidirectional control in a file\'s value as its code point, the value isolated', async () => {
    const { key } = await createApiKey(env.pool, { name: 'bidi', role: 'operator' });
    const review = await plantLongFailedRows(env.pool, 'acme', 0);
    await env.pool.query(
      `INSERT INTO csv_import_row_errors (job_id, row_number, phase, fields, errors)
       VALUES ($1, 2, 'validate', ARRAY[E'\u202Eabc', 'name'], jsonb_build_array(jsonb_build_object('column', 'sku', 'rule', 'pattern', 'message', E'got "\u202Eabc"')))`,
      [review],
    );
    const { cookie } = await signIn(key);
    const text = await (await get(`/admin/runs/${review}/review`, { cookie })).text();
    expect(text).not.toContain('\u202E');
    expect(text).toContain('<bdi class="value"><span class="control" title="a bidirectional formatting character">[U+202E]</span>abc</bdi>');
    // A row left out at review says so once, not "excluded excluded at review".
    await env.pool.query(
      `INSERT INTO csv_import_row_errors (job_id, row_number, phase, fields, errors)
       VALUES ($1, 4, 'finalize', ARRAY['x'], '[{"column": null, "rule": "excluded", "message": "excluded at review: not written"}]')`,
      [review],
    );
    const withExcluded = await (await get(`/admin/runs/${review}/review`, { cookie })).text();
    expect(withExcluded).toContain('<div><strong>(whole row)</strong>: <bdi class="value">excluded at review: not written</bdi></div>');
    // A row of nothing but controls: the first of each value shown, the rest counted, so the page stays its size.
    await env.pool.query(
      `INSERT INTO csv_import_row_errors (job_id, row_number, phase, fields, errors)
       VALUES ($1, 3, 'validate', array_fill(repeat(E'\\u202E', 500), ARRAY[2000]), '[{"column": null, "rule": "field_count", "message": "2000 fields"}]')`,
      [review],
    );
    const flooded = await (await get(`/admin/runs/${review}/review`, { cookie })).text();
    expect(flooded).toContain('(484 more bidirectional characters left out)');
    expect(flooded.length).toBeLessThan(8_000_000);
    // A run's last error quoting a file's text is isolated the same way.
    const failed = await plantEndedRun(env.pool, 'acme', { code: 'CSV_HEADER_INVALID', class: 'permanent', message: 'unknown column(s): "ecirp\u202E"' });
    const detail = await (await get(`/admin/runs/${failed}`, { cookie })).text();
    expect(detail).toContain('unknown column(s): &quot;ecirp<span class="control"');
    expect(detail).not.toContain('\u202E');
    // Each problem names its field beside its reason (two columns drifted apart when a row had several).
    expect(text).toContain('<div><strong>sku</strong>: <code>pattern</code> <bdi class="value">got &quot;<span class="control"');
  });

  it('pages carry a strict Content-Security-Policy and stay out of the API spec', async () => {
    const form = await get('/admin/sign-in');
    expect(form.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(form.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    const spec = (await call(api, 'GET', '/openapi.json')).body as { paths: Record<string, unknown> };
    expect(Object.keys(spec.paths).filter((path) => path.startsWith('/admin'))).toEqual([]);
    expect(api.app.apiRoutes.filter((route) => route.includes('/admin'))).toEqual([]);
  });
});

describe('admin page listings', () => {
  it('page the runs table by keyset (50 a page) with the filters kept, and scope a tenant to its own runs', async () => {
    const { key } = await createApiKey(env.pool, { name: 'pager', role: 'operator' });
    const { key: tenantKey } = await createApiKey(env.pool, { name: 'pager-tenant', role: 'tenant', tenantId: 'paged' });
    for (let i = 0; i < 53; i++) {
      await call(api, 'POST', '/v1/jobs', { key, body: { kind: 'noop', tenant: 'paged', payload: {}, dedupeKey: null, runAt: '2999-01-01T00:00:00Z' } });
    }
    const { cookie } = await signIn(key);
    const rowsOf = (text: string) => [...text.matchAll(/<td class="num"><a href="\/admin\/runs\/(\d+)">/g)].map((match) => Number(match[1]));
    const first = await (await get('/admin/runs?tenant=paged&kind=noop', { cookie })).text();
    expect(rowsOf(first)).toHaveLength(50);
    const next = /href="([^"]+)" rel="next"/.exec(first)![1]!.replaceAll('&amp;', '&');
    expect(next).toMatch(/tenant=paged/);
    const second = await (await get(next, { cookie })).text();
    expect(rowsOf(second)).toHaveLength(3);
    expect(Math.max(...rowsOf(second))).toBeLessThan(Math.min(...rowsOf(first)));
    expect(second).not.toContain('rel="next"');

    const tenant = await signIn(tenantKey);
    const own = await (await get('/admin/runs', { cookie: tenant.cookie })).text();
    expect(rowsOf(own)).toHaveLength(50);
    expect(rowsOf(own)).not.toContain(jobId);
    expect(own).not.toContain('name="tenant"');
    expect(rowsOf(await (await get('/admin/runs?tenant=acme', { cookie: tenant.cookie })).text())).toEqual([]);
  });

  it("a run's last error names the worker it came from to operators only", async () => {
    const id = await plantEndedRun(env.pool, 'workerless', { code: 'X', message: 'broke', class: 'permanent', attempt: 1, at: 'x', worker: 'ip-10-0-1-23.ec2.internal:1:abc123' });
    const { key: operatorKey } = await createApiKey(env.pool, { name: 'sees-workers', role: 'operator' });
    const { key: tenantKey } = await createApiKey(env.pool, { name: 'sees-no-workers', role: 'tenant', tenantId: 'workerless' });
    const asOperator = await (await get(`/admin/runs/${id}`, { cookie: (await signIn(operatorKey)).cookie })).text();
    const asTenant = await (await get(`/admin/runs/${id}`, { cookie: (await signIn(tenantKey)).cookie })).text();
    expect(asOperator).toContain('ip-10-0-1-23.ec2.internal:1:abc123');
    expect(asTenant).toContain('broke');
    expect(asTenant).not.toContain('ip-10-0-1-23');
  });

  it("shows a tenant no internal failure's message and no operator's name; an operator sees both", async () => {
    const id = await plantEndedRun(env.pool, 'inside', {
      code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 10.0.3.17:5432', class: 'transient', attempt: 1, at: 'x', internal: true,
    });
    await env.pool.query(
      `INSERT INTO job_actions (job_id, action, actor, by_operator, note, state_after) VALUES ($1, 'submitted', 'cli:alice', true, NULL, 'queued'),
         ($1, 'resolved', 'ops-bob', true, 'seen', 'failed')`,
      [id],
    );
    await env.pool.query(`UPDATE jobs SET resolved_at = now(), resolved_by = 'ops-bob', resolution_note = 'seen' WHERE id = $1`, [id]);
    const { key: operatorKey } = await createApiKey(env.pool, { name: 'sees-inside', role: 'operator' });
    const { key: tenantKey } = await createApiKey(env.pool, { name: 'sees-outside', role: 'tenant', tenantId: 'inside' });
    const operatorCookie = (await signIn(operatorKey)).cookie;
    const tenantCookie = (await signIn(tenantKey)).cookie;
    const asOperator = await (await get(`/admin/runs/${id}`, { cookie: operatorCookie })).text();
    const asTenant = await (await get(`/admin/runs/${id}`, { cookie: tenantCookie })).text();
    expect(asOperator).toContain('10.0.3.17');
    expect(asOperator).toContain('cli:alice');
    expect(asOperator).toContain('ops-bob');
    expect(asTenant).toContain('an internal error ended this attempt (ECONNREFUSED); the operators have its details');
    for (const secret of ['10.0.3.17', 'cli:alice', 'ops-bob']) expect(asTenant).not.toContain(secret);
    // The listing's last-error cell (its title) too.
    const listedAsTenant = await (await get('/admin/runs?tenant=inside', { cookie: tenantCookie })).text();
    expect(listedAsTenant).toContain(`/admin/runs/${id}`);
    expect(listedAsTenant).not.toContain('10.0.3.17');
    expect(await (await get('/admin/runs?tenant=inside', { cookie: operatorCookie })).text()).toContain('10.0.3.17');
    // A mass import's failed file: S3's own text on its files page.
    const massImport = await env.pool.query<{ id: number }>(
      "INSERT INTO jobs (kind, tenant_id, state, finished_at) VALUES ('mass-import', 'inside', 'partial', now()) RETURNING id",
    );
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       VALUES ($1, 0, 'a.pdf', 1, 'failed', 'S3_KMS.DisabledException', 'KMS key arn:aws:kms:eu-west-1:123456789012:key/abcd is disabled', 'permanent', 3)`,
      [massImport.rows[0]!.id],
    );
    const files = (cookie: string) => get(`/admin/runs/${massImport.rows[0]!.id}/files`, { cookie }).then((response) => response.text());
    expect(await files(operatorCookie)).toContain('123456789012');
    const filesAsTenant = await files(tenantCookie);
    expect(filesAsTenant).toContain('S3 did not store this file (S3_KMS.DisabledException)');
    expect(filesAsTenant).not.toContain('123456789012');
  });

  it('reads the first of a repeated query name, and names no notice it does not know', async () => {
    const { key } = await createApiKey(env.pool, { name: 'repeater', role: 'operator' });
    const submitted = await call(api, 'POST', '/v1/jobs', { key, body: { kind: 'noop', tenant: 'repeat', payload: {}, runAt: '2999-01-01T00:00:00Z' } });
    const runId = submitted.body.job.id as number;
    const { cookie } = await signIn(key);
    const rowsOf = (text: string) => [...text.matchAll(/<td class="num"><a href="\/admin\/runs\/(\d+)">/g)].map((match) => Number(match[1]));
    const repeated = [
      'tenant=repeat&kind=noop&kind=backfill',
      'tenant=repeat&tenant=paged',
      'tenant=repeat&since=2000-01-01T00:00&since=x&until=2999-01-01T00:00&until=y',
      'tenant=repeat&before=99999999&before=1',
    ];
    for (const query of repeated) {
      const response = await get(`/admin/runs?${query}`, { cookie });
      expect(response.status, query).toBe(200);
      expect(rowsOf(await response.text()), query).toEqual([runId]);
    }
    // `state` stays a set: either state matches.
    expect(rowsOf(await (await get('/admin/runs?tenant=repeat&state=dead&state=queued', { cookie })).text())).toEqual([runId]);
    for (const done of ['constructor', 'toString', '__proto__']) {
      const detail = await get(`/admin/runs/${runId}?done=${done}`, { cookie });
      expect(detail.status).toBe(200);
      expect(await detail.text()).not.toContain('class="notice"');
    }
    expect(await (await get(`/admin/runs/${runId}?done=cancel&done=x`, { cookie })).text()).toContain('Cancel requested.');
  });
});

describe('dead letters from the pages', () => {
  async function dead(kind: string, diedAgo: string): Promise<number> {
    const { rows } = await env.pool.query<{ id: number }>(
      `INSERT INTO jobs (kind, tenant_id, state, attempts, max_attempts, finished_at, last_error)
       VALUES ($1, 'acme', 'dead', 1, 1, now() - $2::interval, '{"code": "LEASE_EXPIRED", "message": "gone", "class": "transient", "attempt": 1, "at": "x"}')
       RETURNING id`,
      [kind, diedAgo],
    );
    return rows[0]!.id;
  }

  it('replay all of a kind, and purge those dead longer than a time after a confirmation that lists them', async () => {
    const { key } = await createApiKey(env.pool, { name: 'dead-ops', role: 'operator' });
    const [noopA, noopB, other, old] = [await dead('noop', '1 minute'), await dead('noop', '1 minute'), await dead('backfill', '1 minute'), await dead('audit', '10 days')];
    const { cookie } = await signIn(key);
    const list = await (await get('/admin/dead', { cookie })).text();
    for (const id of [noopA, noopB, other, old]) expect(list).toContain(`/admin/runs/${id}/replay`);
    const confirm = await get('/admin/dead/replay?kind=noop', { cookie });
    const replayed = await post('/admin/dead/replay', { csrf: await csrfOf(confirm), kind: 'noop', note: 'after the fix' }, { cookie });
    expect(replayed.status).toBe(303);
    const states = async () =>
      Object.fromEntries((await env.pool.query('SELECT id, state FROM jobs WHERE id = ANY($1)', [[noopA, noopB, other, old]])).rows.map((row) => [row.id, row.state]));
    expect(await states()).toEqual({ [noopA]: 'queued', [noopB]: 'queued', [other]: 'dead', [old]: 'dead' });
    const { rows } = await env.pool.query(`SELECT job_id, actor, note FROM job_actions WHERE action = 'replayed' ORDER BY job_id`);
    expect(rows).toEqual([noopA, noopB].map((id) => ({ job_id: id, actor: 'dead-ops', note: 'after the fix' })));

    const preview = await get('/admin/dead/purge?olderThan=7d', { cookie });
    const previewText = await preview.text();
    expect(previewText).toContain(`run ${old} (audit`);
    expect(previewText).not.toContain(`run ${other} (`);
    expect((await get('/admin/dead/purge?olderThan=soon', { cookie })).status).toBe(400);
    // A run that crosses the age limit after the page was shown (here: one that died 9 days ago, after the ones it
    // listed) is not purged with them: the confirmation carries the latest death it listed.
    const crossed = await dead('audit', '9 days');
    const until = /name="diedNoLaterThan" value="([^"]+)"/.exec(previewText)![1]!;
    const purged = await post('/admin/dead/purge', { csrf: /name="csrf" value="([^"]+)"/.exec(previewText)![1]!, olderThan: '7d', kind: '', diedNoLaterThan: until }, { cookie });
    expect(purged.status).toBe(303);
    expect(await states()).toEqual({ [noopA]: 'queued', [noopB]: 'queued', [other]: 'dead' });
    expect((await env.pool.query('SELECT state FROM jobs WHERE id = $1', [crossed])).rows).toEqual([{ state: 'dead' }]);
    const bad = await post('/admin/dead/purge', { csrf: /name="csrf" value="([^"]+)"/.exec(previewText)![1]!, olderThan: '7d', kind: '', diedNoLaterThan: 'yesterday' }, { cookie });
    expect(bad.status).toBe(400);
    const unbounded = await post('/admin/dead/purge', { csrf: /name="csrf" value="([^"]+)"/.exec(previewText)![1]!, olderThan: '7d', kind: '' }, { cookie });
    expect(unbounded.status).toBe(400);
    expect((await env.pool.query('SELECT state FROM jobs WHERE id = $1', [crossed])).rows).toEqual([{ state: 'dead' }]);
  });
});

describe('the escaping helper', () => {
  it('escapes every interpolated value, keeps Html as it is, and drops null, undefined and false', () => {
    expect(escapeHtml(`<img src=x onerror="alert('1')">&\``)).toBe('&lt;img src=x onerror=&quot;alert(&#39;1&#39;)&quot;&gt;&amp;&#96;');
    const name = '<script>alert(2)</script>';
    expect(html`<td title="${name}">${name}</td>`.text).toBe('<td title="&lt;script&gt;alert(2)&lt;/script&gt;">&lt;script&gt;alert(2)&lt;/script&gt;</td>');
    expect(html`<p>${html`<b>${'<i>'}</b>`}${[1, '<', null]}${undefined}${false}${0}</p>`.text).toBe('<p><b>&lt;i&gt;</b>1&lt;0</p>');
  });
});
