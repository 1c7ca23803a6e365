// Listings rendered once per version of each run (worker/http/summary-renderings.ts, versionedJobsPageQuery): a page
// built from kept renderings is the page rendered afresh; a run changed in any way (state, progress, the archiver's
// move) is rendered again; running runs never come from the keep; a listing asked for once keeps nothing; the keep is
// bounded; over HTTP a polled listing answers the same bytes as the first time.
import { beforeAll, describe, expect, it } from 'vitest';
import type { Queryable } from '../worker/db/pool.js';
import { SummaryRenderings } from '../worker/http/summary-renderings.js';
import { jobSummaryView } from '../worker/http/views.js';
import { KnownVersions, listJobsPage, listVersionedJobsPage, pageSignature, readJobsPageSignature, type JobPageFilter, type JobSummaryRow } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { makeKey, startTestApi } from './support/api-server.js';

const env = useTestEnvironment();
const render = (run: JobSummaryRow) => JSON.stringify(jobSummaryView(run, true));
const text = (body: string | Buffer) => (typeof body === 'string' ? body : body.toString('utf8'));
const compose = (runs: readonly string[], lastId: number | undefined) => `{"runs":[${runs.join(',')}],"last":${lastId ?? null}}`;
/** The page as it is without any kept rendering. */
const fresh = async (filter: JobPageFilter) => (await listJobsPage(env.pool, filter)).map(render);

beforeAll(async () => {
  // 30 runs of two tenants: finished, failed with an error, queued, and running ones whose rate and ETA the handler
  // gives (so their rendering does not depend on the time it is made, and pages can be compared).
  await env.pool.query(
    `INSERT INTO jobs (kind, tenant_id, payload, state, attempts, progress, last_error, started_at, finished_at, lease_owner, lease_expires_at)
     SELECT 'noop', CASE WHEN g % 2 = 0 THEN 't1' ELSE 't2' END, '{}', s.state, 1,
       jsonb_build_object('done', g, 'total', 100, 'rate', 2.5, 'etaSeconds', 40),
       CASE WHEN s.state = 'failed' THEN jsonb_build_object('code', 'X', 'message', 'failed <b>' || g, 'class', 'permanent') END,
       now() - interval '1 minute', CASE WHEN s.state IN ('succeeded', 'failed') THEN now() END,
       CASE WHEN s.state = 'running' THEN 'w1' END, CASE WHEN s.state = 'running' THEN now() + interval '1 hour' END
     FROM generate_series(1, 30) g, LATERAL (SELECT (ARRAY['succeeded', 'failed', 'queued', 'running'])[1 + g % 4] AS state) s`,
  );
});

describe('summary renderings', () => {
  it('a page of kept renderings is the page rendered afresh, for every kind of listing', async () => {
    const { rows } = await env.pool.query<{ id: number }>(`SELECT id FROM jobs ORDER BY id LIMIT 1 OFFSET 20`);
    const filters: JobPageFilter[] = [
      { limit: 50 },
      { states: ['failed'], limit: 20 },
      { tenantId: 't1', limit: 10 },
      { states: ['succeeded', 'queued'], kinds: ['noop'], limit: 7 },
      { beforeId: Number(rows[0]!.id), limit: 10 },
    ];
    const renderings = new SummaryRenderings();
    for (const filter of filters) {
      const expected = await fresh(filter);
      // Asked for once, a listing keeps nothing; asked again, it keeps what it renders; from then on it reuses.
      const before = renderings.size;
      const first = await renderings.page(env.pool, filter, render, compose);
      expect(first.runs).toEqual(expected);
      expect(first).toMatchObject({ rendered: expected.length, reused: 0 });
      expect(renderings.size).toMatchObject({ renderings: before.renderings, characters: before.characters, answers: before.answers });
      const second = await renderings.page(env.pool, filter, render, compose);
      expect(second.runs).toEqual(expected);
      const running = expected.filter((json) => JSON.parse(json).state === 'running').length;
      const third = await renderings.page(env.pool, filter, render, compose);
      expect(third.runs).toEqual(expected);
      expect(third).toMatchObject({ rendered: running, reused: expected.length - running });
      expect(third.lastId).toBe(JSON.parse(expected.at(-1)!).id);
    }
  });

  it('the database leaves out the columns of the versions a page holds, and only those', async () => {
    const filter: JobPageFilter = { states: ['succeeded'], limit: 5 };
    const full = await listVersionedJobsPage(env.pool, filter, KnownVersions.NONE);
    expect(full.every((run) => run.row !== null)).toBe(true);
    // Two versions held, one stale version of a run on the page, one run not on it.
    const known = new Map([
      [full[1]!.id, full[1]!.version],
      [full[3]!.id, full[3]!.version],
      [full[4]!.id, `${full[4]!.version.split(':')[0]}:1`],
      [999_999, '1:1'],
    ]);
    const partial = await listVersionedJobsPage(env.pool, filter, new KnownVersions(known));
    expect(partial.map((run) => run.version)).toEqual(full.map((run) => run.version));
    expect(partial.map((run) => run.row === null)).toEqual([false, true, false, true, false]);
    // A version is the row's transaction id and its updated_at: an update, even one that writes the same values,
    // makes a new one.
    await env.pool.query('UPDATE jobs SET attempts = attempts WHERE id = $1', [full[1]!.id]);
    const after = await listVersionedJobsPage(env.pool, filter, new KnownVersions(known));
    expect(after.map((run) => run.row === null)).toEqual([false, false, false, true, false]);
    expect(after[1]!.version).not.toBe(full[1]!.version);
  });

  it('a run changed in any way since it was kept is rendered again', async () => {
    const filter: JobPageFilter = { tenantId: 't2', limit: 50 };
    const renderings = new SummaryRenderings();
    await renderings.page(env.pool, filter, render, compose);
    await renderings.page(env.pool, filter, render, compose);
    const { rows } = await env.pool.query<{ id: number }>(`SELECT id FROM jobs WHERE tenant_id = 't2' AND state = 'failed' ORDER BY id LIMIT 3`);
    const [failed, progressed, archived] = rows.map((row) => Number(row.id)) as [number, number, number];
    await env.pool.query(`UPDATE jobs SET state = 'queued', finished_at = NULL, last_error = NULL WHERE id = $1`, [failed]);
    await env.pool.query(`UPDATE jobs SET progress = progress || '{"phase": "retried"}' WHERE id = $1`, [progressed]);
    // The archiver's move: the same values in the other partition, a new row version.
    await env.pool.query(`UPDATE jobs SET archived = true WHERE id = $1`, [archived]);
    const expected = await fresh(filter);
    const after = await renderings.page(env.pool, filter, render, compose);
    expect(after.runs).toEqual(expected);
    const running = expected.filter((json) => JSON.parse(json).state === 'running').length;
    expect(after.rendered).toBe(running + 3);
    const byId = new Map(after.runs.map((json) => [JSON.parse(json).id as number, JSON.parse(json)]));
    expect(byId.get(failed)).toMatchObject({ state: 'queued', lastError: null });
    expect(byId.get(progressed).progress.phase).toBe('retried');
  });

  it('keeps at most its bound, least recently used dropped first; pages stay whole', async () => {
    const filter: JobPageFilter = { states: ['succeeded', 'failed'], limit: 12 };
    const renderings = new SummaryRenderings({ maxRenderings: 5 });
    const expected = await fresh(filter);
    expect(expected).toHaveLength(12);
    await renderings.page(env.pool, filter, render, compose);
    await renderings.page(env.pool, filter, render, compose);
    // Past the bound the oldest tenth (here at least one) goes at once.
    const kept = renderings.size.renderings;
    expect(kept).toBeGreaterThanOrEqual(4);
    expect(kept).toBeLessThanOrEqual(5);
    const third = await renderings.page(env.pool, filter, render, compose);
    expect(third.runs).toEqual(expected);
    expect(third).toMatchObject({ reused: kept, rendered: 12 - kept });
    expect(renderings.size.renderings).toBeLessThanOrEqual(5);

    // The characters are bounded too, and a summary over 4 kB is never kept.
    const byCharacters = new SummaryRenderings({ maxCharacters: 3 * expected[0]!.length });
    for (let i = 0; i < 3; i += 1) expect((await byCharacters.page(env.pool, filter, render, compose)).runs).toEqual(expected);
    expect(byCharacters.size.characters).toBeLessThanOrEqual(3 * expected[0]!.length);
    expect(byCharacters.size.renderings).toBeGreaterThan(0);
    const { rows } = await env.pool.query<{ id: number }>(
      `UPDATE jobs SET last_error = last_error || jsonb_build_object('message', repeat('x', 5000)) WHERE state = 'failed' RETURNING id`,
    );
    const failed: JobPageFilter = { states: ['failed'], limit: 50 };
    const long = new SummaryRenderings();
    for (let i = 0; i < 3; i += 1) expect((await long.page(env.pool, failed, render, compose)).rendered).toBe(rows.length);
    expect(long.size).toMatchObject({ renderings: 0, characters: 0, answers: 0, answerBytes: 0 });
  });

  it('a page whose runs are all unchanged is answered with the bytes kept for it, composed again once one changes', async () => {
    const filter: JobPageFilter = { states: ['succeeded'], limit: 50 };
    const expectedBody = async () => {
      const runs = await fresh(filter);
      return compose(runs, runs.length > 0 ? (JSON.parse(runs.at(-1)!).id as number) : undefined);
    };
    const renderings = new SummaryRenderings();
    const first = await renderings.page(env.pool, filter, render, compose);
    const second = await renderings.page(env.pool, filter, render, compose);
    expect([typeof first.body, typeof second.body]).toEqual(['string', 'string']);
    expect(text(second.body)).toBe(await expectedBody());
    expect(renderings.size).toMatchObject({ answers: 1, answerBytes: Buffer.byteLength(text(second.body)) });
    expect(renderings.size.listingBytesCounted).toBe(renderings.size.listingBytes);
    // From the third request on, the same page is the same bytes, not composed again.
    const third = await renderings.page(env.pool, filter, render, compose);
    const fourth = await renderings.page(env.pool, filter, render, compose);
    expect(third.body).toBeInstanceOf(Buffer);
    expect(fourth.body).toBe(third.body);
    expect(text(third.body)).toBe(await expectedBody());
    expect(fourth.runs).toEqual(await fresh(filter));

    // A run of the page changes: that page is composed again, with the change, then kept again.
    const ids = (await fresh(filter)).map((json) => JSON.parse(json).id as number);
    await env.pool.query(`UPDATE jobs SET progress = '{"phase": "recounted"}' WHERE id = $1`, [ids[2]]);
    const changed = await renderings.page(env.pool, filter, render, compose);
    expect(typeof changed.body).toBe('string');
    expect(changed.body).toBe(await expectedBody());
    expect(changed.body).toContain('recounted');
    expect(changed).toMatchObject({ rendered: 1, reused: ids.length - 1 });
    expect(text((await renderings.page(env.pool, filter, render, compose)).body)).toBe(await expectedBody());

    // A run leaves the page and nothing else changes (every run left is one held): fewer runs, composed again.
    await env.pool.query(`UPDATE jobs SET state = 'canceled' WHERE id = $1`, [ids[0]]);
    const fewer = await renderings.page(env.pool, filter, render, compose);
    expect(fewer).toMatchObject({ rendered: 0, reused: ids.length - 1 });
    expect(fewer.body).toBe(await expectedBody());
    expect(renderings.size.answers).toBe(1);

    // A page with a running run keeps no answer (its rate and ETA are rendered each time).
    const withRunning: JobPageFilter = { states: ['running'], limit: 50 };
    for (let i = 0; i < 3; i += 1) expect(typeof (await renderings.page(env.pool, withRunning, render, compose)).body).toBe('string');
    expect(renderings.size.answers).toBe(1);

    // The bytes kept for listings (answers and versions) are bounded: the least recently asked for listing goes first.
    const measure = new SummaryRenderings();
    for (let i = 0; i < 2; i += 1) await measure.page(env.pool, filter, render, compose);
    const bytes = measure.size.listingBytes;
    expect(bytes).toBeGreaterThan(measure.size.answerBytes);
    const small = new SummaryRenderings({ maxListingBytes: Math.floor(bytes * 1.5) });
    const other: JobPageFilter = { states: ['succeeded'], limit: 49 };
    for (let i = 0; i < 2; i += 1) await small.page(env.pool, filter, render, compose);
    expect(small.size.answers).toBe(1);
    for (let i = 0; i < 2; i += 1) await small.page(env.pool, other, render, compose);
    expect(small.size.answers).toBe(1);
    expect(small.size.listingBytesCounted).toBeLessThanOrEqual(bytes * 1.5);
    expect(small.size.listingBytesCounted).toBe(small.size.listingBytes);
    const otherRuns = await fresh(other);
    const otherBody = compose(otherRuns, JSON.parse(otherRuns.at(-1)!).id as number);
    expect(text((await small.page(env.pool, other, render, compose)).body)).toBe(otherBody);
    expect(text((await small.page(env.pool, other, render, compose)).body)).toBe(otherBody);
  });

  it("an unchanged page is recognized by its signature, without reading its rows; a changing one is not probed", async () => {
    // The signature the database computes is the one the server computes from a page it read, for every shape of
    // listing, a prepared limit larger than the page (12 read as 20) and an empty page included.
    const { rows } = await env.pool.query<{ id: number }>(`SELECT id FROM jobs ORDER BY id LIMIT 1 OFFSET 20`);
    for (const filter of [
      { states: ['succeeded'], limit: 50 },
      { tenantId: 't2', limit: 12 },
      { tenantId: 't1', limit: 3 },
      { beforeId: Number(rows[0]!.id), limit: 7 },
      { states: ['succeeded', 'failed'], kinds: ['noop'], limit: 5 },
      { tenantId: 'nobody', limit: 10 },
    ] as JobPageFilter[]) {
      const page = await listVersionedJobsPage(env.pool, filter, KnownVersions.NONE);
      expect(await readJobsPageSignature(env.pool, filter)).toBe(pageSignature(page.map((run) => run.id), page.map((run) => run.version)));
    }

    let statements = 0;
    const counted: Queryable = { query: (...args: Parameters<Queryable['query']>) => ((statements += 1), env.pool.query(...args)) } as Queryable;
    const ask = async (filter: JobPageFilter) => {
      const before = statements;
      const page = await renderings.page(counted, filter, render, compose);
      return { ...page, statements: statements - before };
    };
    const renderings = new SummaryRenderings();
    const filter: JobPageFilter = { states: ['succeeded'], limit: 50 };
    await ask(filter);
    const second = await ask(filter);
    const third = await ask(filter);
    expect([second.signed, third.signed]).toEqual([false, true]);
    expect(third).toMatchObject({ statements: 1, rendered: 0 });
    expect(third.body).toBe((await ask(filter)).body);
    expect(third.runs).toEqual(await fresh(filter));

    // A run changes: the signature differs, the page is read (two statements), and its answer is composed again.
    const ids = (await fresh(filter)).map((json) => JSON.parse(json).id as number);
    await env.pool.query(`UPDATE jobs SET attempts = attempts + 1 WHERE id = $1`, [ids[1]]);
    const changed = await ask(filter);
    expect(changed).toMatchObject({ signed: false, statements: 2, rendered: 1 });
    expect(changed.runs).toEqual(await fresh(filter));
    // The next request reads the page at once (a changed listing is not probed); found unchanged, it sends the kept
    // answer and probes again at the next.
    const reread = await ask(filter);
    expect(reread).toMatchObject({ signed: false, statements: 1, rendered: 0 });
    expect(reread.body).toBeInstanceOf(Buffer);
    expect(await ask(filter)).toMatchObject({ signed: true, statements: 1 });

    // A listing that changes on every request costs one statement each, never a signature.
    for (let i = 0; i < 4; i += 1) {
      await env.pool.query(`UPDATE jobs SET attempts = attempts + 1 WHERE id = $1`, [ids[3]]);
      const page = await ask(filter);
      expect(page.runs).toEqual(await fresh(filter));
      if (i > 0) expect(page).toMatchObject({ signed: false, statements: 1, rendered: 1 });
    }

    // Requests racing on one listing (one of them after a change) leave the answers' bytes equal to what is held.
    await ask(filter);
    // (The change makes the answer longer, so that an answer counted twice or dropped twice shows in the bytes.)
    await Promise.all([
      ask(filter),
      ask(filter),
      env.pool.query(`UPDATE jobs SET progress = progress || '{"note": "longer"}' WHERE id = $1`, [ids[4]]).then(() => Promise.all([ask(filter), ask(filter)])),
    ]);
    const answer = (await ask(filter)).body;
    expect(renderings.size).toMatchObject({ answers: 1, answerBytes: Buffer.byteLength(answer) });
    expect(renderings.size.listingBytesCounted).toBe(renderings.size.listingBytes);
    expect(text(answer)).toBe(compose(await fresh(filter), ids.at(-1)));
  });

  it('over HTTP a polled listing answers the bytes of the first answer, as the route rendered them before', async () => {
    const api = await startTestApi(env);
    try {
      const key = await makeKey(env, 'renderings-ops', 'operator');
      const tenant = await makeKey(env, 'renderings-t1', 'tenant', 't1');
      for (const [path, caller, filter] of [
        ['/v1/jobs?state=failed&state=succeeded&limit=10', key, { states: ['failed', 'succeeded'], limit: 10 }],
        ['/v1/jobs?limit=4', tenant, { tenantId: 't1', limit: 4 }],
      ] as const) {
        const first = await fetch(`${api.url}${path}`, { headers: { authorization: `Bearer ${caller}` } });
        expect(first.headers.get('content-type')).toBe('application/json; charset=utf-8');
        const body = await first.text();
        for (let again = 0; again < 2; again += 1) {
          expect(await (await fetch(`${api.url}${path}`, { headers: { authorization: `Bearer ${caller}` } })).text()).toBe(body);
        }
        const page = JSON.parse(body) as { jobs: unknown[]; next: string | null };
        expect(page.jobs).toEqual((await fresh(filter as JobPageFilter)).map((json) => JSON.parse(json)));
        expect(page.next).toEqual(expect.any(String));
      }
      // An empty page, and a tenant key asking for another tenant's runs: the same shape.
      for (const [path, caller] of [['/v1/jobs?tenant=nobody', key], ['/v1/jobs?tenant=t2', tenant]] as const) {
        for (let again = 0; again < 3; again += 1) {
          const response = await fetch(`${api.url}${path}`, { headers: { authorization: `Bearer ${caller}` } });
          expect(response.headers.get('content-type')).toBe('application/json; charset=utf-8');
          expect(await response.text()).toBe('{"jobs":[],"next":null}');
        }
      }
    } finally {
      await api.close();
    }
  });
});
