// The run listing (worker/queue/operator.ts, listJobsPage): pages newest first by keyset, for any set of states, and
// a listing of one state that needs an operator (failed, dead, partial) reads the partial index of those runs with its
// prepared (generic) plan, not the whole table backwards; and a listing whose states include neither queued nor running
// does not walk the live queue's backlog of queued runs (jobs_live_not_waiting), nor does one of running runs alone.
import pg, { type PoolClient } from 'pg';
import { describe, expect, it } from 'vitest';
import { jobsPageQuery, jobsPageSignatureQuery, listJobsPage, readJobsPageSignature } from '../worker/queue/operator.js';
import { JOB_STATES, type JobState } from '../worker/queue/types.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

/**
 * The plan a named statement settles on after its first executions (generic, for any values), explained with
 * `options` for the query's values: the rows of `EXPLAIN <options> EXECUTE`. Needs a session with plan_cache_mode =
 * force_generic_plan.
 */
async function explainGeneric(client: PoolClient, query: { text: string; values: unknown[] }, options = ''): Promise<Record<string, unknown>[]> {
  await client.query(`PREPARE listing AS ${query.text}`);
  try {
    const values = query.values.map((value) => client.escapeLiteral(String(value)));
    return (await client.query(`EXPLAIN ${options} EXECUTE listing${values.length > 0 ? `(${values.join(', ')})` : ''}`)).rows;
  } finally {
    await client.query('DEALLOCATE listing');
  }
}

/** Every row the generic plan's scans of jobs_live read for the query: those they returned and those their filter threw away. */
async function liveRowsReadByGenericPlan(client: PoolClient, query: { text: string; values: unknown[] }): Promise<number> {
  const explained = await explainGeneric(client, query, '(ANALYZE, FORMAT JSON)');
  let read = 0;
  const walk = (node: Record<string, unknown>) => {
    if (node['Relation Name'] === 'jobs_live') read += Number(node['Actual Rows'] ?? 0) + Number(node['Rows Removed by Filter'] ?? 0);
    for (const child of (node['Plans'] as Record<string, unknown>[] | undefined) ?? []) walk(child);
  };
  walk((explained[0]!['QUERY PLAN'] as { Plan: Record<string, unknown> }[])[0]!.Plan);
  return read;
}

describe('run listing', () => {
  it('pages every set of states newest first, and plans one failing state on its partial index', async () => {
    // 20,000 runs, the states in a fixed rotation: 1 in 20 failed, 1 in 50 dead, 1 in 20 partial. Most finished runs
    // are archived, as a minute after they end; 1 in 10 is still in the live partition.
    await env.pool.query(
      `INSERT INTO jobs (kind, tenant_id, payload, state, finished_at, archived)
       SELECT 'noop', 't' || (g % 7), '{}', CASE WHEN g % 20 = 0 THEN 'failed' WHEN g % 50 = 1 THEN 'dead' WHEN g % 20 = 2 THEN 'partial'
         WHEN g % 100 = 3 THEN 'queued' ELSE 'succeeded' END,
         CASE WHEN g % 100 <> 3 THEN now() END, g % 100 <> 3 AND g % 10 <> 7
       FROM generate_series(1, 20000) g`,
    );
    await env.pool.query('VACUUM ANALYZE jobs');
    const { rows } = await env.pool.query<{ id: string; state: JobState }>('SELECT id, state FROM jobs');
    for (const states of [['failed'], ['dead'], ['partial', 'failed'], ['queued', 'succeeded', 'dead']] as JobState[][]) {
      const expected = rows.filter((row) => states.includes(row.state)).map((row) => Number(row.id)).sort((a, b) => b - a).slice(0, 120);
      const seen: number[] = [];
      let beforeId: number | undefined;
      while (seen.length < 120) {
        const page = await listJobsPage(env.pool, { states, beforeId, limit: 40 });
        expect(page.every((job) => states.includes(job.state))).toBe(true);
        seen.push(...page.map((job) => job.id));
        beforeId = page.at(-1)!.id;
      }
      expect(seen, states.join(',')).toEqual(expected);
    }

    const client = await env.pool.connect();
    try {
      await client.query('SET plan_cache_mode = force_generic_plan');
      for (const state of ['failed', 'dead', 'partial'] as JobState[]) {
        const plan = (await explainGeneric(client, jobsPageQuery({ states: [state], limit: 50 }))).map((row) => row['QUERY PLAN']).join('\n');
        // In each partition: the live queue's recent finished runs and the archive.
        expect(plan, state).toContain('Index Scan Backward using jobs_live_needing_attention on jobs_live');
        expect(plan, state).toContain('Index Scan Backward using jobs_archive_needing_attention on jobs_archive');
      }
    } finally {
      await client.query('RESET plan_cache_mode');
      client.release();
    }

    // No state at all lists nothing (the statement says `false`, not `state IN ()`); repeated states count once.
    expect(await listJobsPage(env.pool, { states: [], limit: 10 })).toEqual([]);
    const twice = await listJobsPage(env.pool, { states: ['dead', 'dead'], limit: 10 });
    expect(twice.map((job) => job.id)).toEqual((await listJobsPage(env.pool, { states: ['dead'], limit: 10 })).map((job) => job.id));
  });

  it('reads no run of the live queue backlog for a listing of states other than queued', async () => {
    // A campaign's backlog: 20,000 queued runs of one tenant, the newest of all, in jobs_live. Around them, runs
    // parked for review, running and finished in the last minute (jobs_live), and an archived history.
    const backlog = 20_000;
    await env.pool.query('TRUNCATE jobs');
    await env.pool.query(
      `INSERT INTO jobs (kind, tenant_id, payload, state, finished_at, archived)
       SELECT 'noop', 't' || (g % 5), '{}', CASE WHEN g % 10 = 0 THEN 'failed' WHEN g % 10 = 1 THEN 'canceled' ELSE 'succeeded' END,
         now() - interval '1 day', true
       FROM generate_series(1, 3000) g`,
    );
    await env.pool.query(
      `INSERT INTO jobs (kind, tenant_id, payload, state, finished_at, lease_owner, lease_expires_at)
       SELECT 'noop', 't' || (g % 5), '{}', state, CASE WHEN state IN ('succeeded', 'failed') THEN now() END,
         CASE WHEN state = 'running' THEN 'w1' END, CASE WHEN state = 'running' THEN now() + interval '1 hour' END
       FROM generate_series(1, 60) g, LATERAL (SELECT (ARRAY['review_ready', 'running', 'succeeded', 'failed'])[1 + g % 4] AS state) s`,
    );
    await env.pool.query(`INSERT INTO jobs (kind, tenant_id, payload) SELECT 'noop', 'flood', '{}' FROM generate_series(1, ${backlog})`);
    await env.pool.query('VACUUM ANALYZE jobs_live, jobs_archive');
    const { rows: all } = await env.pool.query<{ id: string; state: JobState; tenant_id: string }>('SELECT id, state, tenant_id FROM jobs');
    const { rows: [live] } = await env.pool.query<{ other: string }>(`SELECT count(*) FILTER (WHERE state <> 'queued') AS other FROM jobs_live`);
    // A listing may read every run of jobs_live that is not queued (60 here), never the backlog.
    const notQueued = Number(live!.other);
    expect(notQueued).toBe(60);

    const client = await env.pool.connect();
    try {
      await client.query('SET plan_cache_mode = force_generic_plan');
      const cases: { states: JobState[]; tenantId?: string; cursor?: boolean }[] = [
        { states: ['succeeded'] },
        { states: ['succeeded'], tenantId: 'flood' },
        { states: ['succeeded'], tenantId: 't1', cursor: true },
        { states: ['review_ready'] },
        { states: ['review_ready'], tenantId: 't2' },
        { states: ['succeeded', 'canceled'] },
        { states: ['failed'], cursor: true },
        { states: ['running'] },
      ];
      for (const { states, tenantId, cursor } of cases) {
        const label = `${states.join(',')} ${tenantId ?? ''} ${cursor ? 'cursor' : ''}`;
        const matching = all
          .filter((row) => states.includes(row.state) && (tenantId === undefined || row.tenant_id === tenantId))
          .map((row) => Number(row.id))
          .sort((a, b) => b - a);
        const beforeId = cursor ? matching[9] : undefined;
        const query = jobsPageQuery({ states, tenantId, beforeId, limit: 20 });
        const page = await listJobsPage(client, { states, tenantId, beforeId, limit: 20 });
        expect(page.map((job) => job.id), label).toEqual(matching.filter((id) => beforeId === undefined || id < beforeId).slice(0, 20));
        expect(await liveRowsReadByGenericPlan(client, query), label).toBeLessThanOrEqual(notQueued);
      }
    } finally {
      await client.query('RESET plan_cache_mode');
      client.release();
    }
  });

  it("a tenant's page of every state or of queued runs reads the tenant's own runs, never another tenant's flood", async () => {
    // Three tenants in the live partition, one of them with a flood of 20,000 queued runs between t1's older and newer
    // runs. A generic plan prices `tenant_id = $n` at a third of the runs: with `ORDER BY id DESC` it walked the
    // primary key backwards through the flood for t1's page below it (22,000 rows a page, measured). The prepared
    // tenant listing reads the tenant index from the page down, so each page reads about its own rows.
    await env.pool.query('TRUNCATE jobs');
    const insert = (tenant: string, count: number, state = 'queued') =>
      env.pool.query(
        `INSERT INTO jobs (kind, tenant_id, payload, state, finished_at) SELECT 'noop', $1, '{}', $3, CASE WHEN $3 <> 'queued' THEN now() END
         FROM generate_series(1, $2)`,
        [tenant, count, state],
      );
    await insert('t1', 30, 'succeeded');
    await insert('t2', 30, 'succeeded');
    await insert('t1', 30);
    await insert('flood', 20_000);
    await insert('t1', 30);
    await insert('t2', 30);
    await env.pool.query('VACUUM ANALYZE jobs_live, jobs_archive');
    const { rows: all } = await env.pool.query<{ id: string; state: JobState; tenant_id: string }>('SELECT id, state, tenant_id FROM jobs');
    const ids = (tenant: string, states?: JobState[]) =>
      all.filter((row) => row.tenant_id === tenant && (states === undefined || states.includes(row.state))).map((row) => Number(row.id)).sort((a, b) => b - a);
    const middleOfFlood = ids('flood')[10_000]!;
    const cases: { tenantId: string; states?: JobState[]; beforeId?: number; label: string }[] = [
      { tenantId: 't1', label: "t1's first page" },
      { tenantId: 't1', beforeId: middleOfFlood, label: "t1's page below the flood" },
      { tenantId: 't1', states: ['queued'], beforeId: middleOfFlood, label: "t1's queued runs below the flood" },
      { tenantId: 't1', states: ['queued'], label: "t1's queued runs" },
      { tenantId: 'flood', beforeId: middleOfFlood, label: 'a deep page of the flood' },
      { tenantId: 'flood', states: ['queued'], label: "the flood's queued runs" },
    ];
    const client = await env.pool.connect();
    try {
      await client.query('SET plan_cache_mode = force_generic_plan');
      for (const { label, ...filter } of cases) {
        const expected = ids(filter.tenantId, filter.states).filter((id) => filter.beforeId === undefined || id < filter.beforeId).slice(0, 20);
        expect((await listJobsPage(client, { ...filter, limit: 20 })).map((job) => job.id), label).toEqual(expected);
        for (const query of [jobsPageQuery({ ...filter, limit: 20 }), jobsPageSignatureQuery({ ...filter, limit: 20 })]) {
          expect(query.name, label).toBeDefined();
          // A page of 20 (the prepared limit), and for t1's queued runs the 30 older succeeded ones it passes.
          expect(await liveRowsReadByGenericPlan(client, query), `${label}: ${query.text}`).toBeLessThanOrEqual(60);
        }
      }
    } finally {
      await client.query('RESET plan_cache_mode');
      client.release();
    }
  });

  it('prepares the frequent listings only, each under its own name within the 63 bytes Postgres reads', async () => {
    const filters = ['kinds', 'tenantId', 'since', 'until', 'beforeId'] as const;
    const names = new Map<string, string>();
    let unnamed = 0;
    for (let stateMask = -1; stateMask < 1 << JOB_STATES.length; stateMask += 1) {
      const states = stateMask < 0 ? undefined : JOB_STATES.filter((_, i) => stateMask & (1 << i));
      for (let filterMask = 0; filterMask < 1 << filters.length; filterMask += 1) {
        const has = (name: (typeof filters)[number]) => (filterMask & (1 << filters.indexOf(name))) !== 0;
        const query = jobsPageQuery({
          states,
          kinds: has('kinds') ? ['noop'] : undefined,
          tenantId: has('tenantId') ? 't1' : undefined,
          since: has('since') ? new Date(0) : undefined,
          until: has('until') ? new Date() : undefined,
          beforeId: has('beforeId') ? 100 : undefined,
          limit: 500,
        });
        // At most one state, no kind, no time range: prepared. Anything else is planned on each request.
        const frequent = (states === undefined || states.length <= 1) && !has('kinds') && !has('since') && !has('until');
        if (!frequent) {
          expect(query.name, query.text).toBeUndefined();
          unnamed += 1;
          continue;
        }
        const name = query.name!;
        const key = Buffer.from(name).subarray(0, 63).toString();
        expect(Buffer.byteLength(name)).toBeLessThanOrEqual(63);
        expect(names.get(key), `${name} and another statement share a name`).toBeUndefined();
        names.set(key, query.text);
      }
    }
    // No state filter, the empty set, or one of the eight states; by tenant or not; paged or not.
    expect(names.size).toBe((2 + JOB_STATES.length) * 4);
    expect(names.size + unnamed).toBe((1 + (1 << JOB_STATES.length)) * (1 << filters.length));
    // A connection keeps the frequent listings it prepared and nothing of the others.
    const client = new pg.Client({ connectionString: env.databaseUrl });
    await client.connect();
    try {
      await listJobsPage(client, { states: ['failed'], tenantId: 't1', beforeId: 10, limit: 500 });
      await listJobsPage(client, { states: ['failed', 'dead'], limit: 50 });
      await listJobsPage(client, { states: ['failed'], kinds: ['noop'], limit: 50 });
      await listJobsPage(client, { since: new Date(0), until: new Date(), limit: 50 });
      const { rows } = await client.query<{ name: string }>('SELECT name FROM pg_prepared_statements');
      expect(rows.map((row) => row.name)).toEqual([jobsPageQuery({ states: ['failed'], tenantId: 't1', beforeId: 10, limit: 500 }).name]);
    } finally {
      await client.end();
    }
  });

  it('runs a listing on its generic plan after the first five pages of a connection', async () => {
    // Postgres plans a prepared statement's first five executions for their values, then keeps the generic plan
    // only when it costs no more. With the limit as a parameter it never did on a history of this size: costed at a
    // tenth of the matching rows (300 here), the generic plan lost to every custom plan for 50, and each execution
    // was planned again.
    await env.pool.query('TRUNCATE jobs');
    await env.pool.query(
      `INSERT INTO jobs (kind, tenant_id, payload, state, finished_at, archived)
       SELECT 'noop', 't' || (g % 5), '{}', CASE WHEN g % 20 = 0 THEN 'failed' ELSE 'succeeded' END, now(), true
       FROM generate_series(1, 60000) g`,
    );
    await env.pool.query('VACUUM ANALYZE jobs, jobs_archive');
    // A connection of its own: the pool's have prepared listings in the tests above.
    const client = new pg.Client({ connectionString: env.databaseUrl });
    await client.connect();
    try {
      for (const filter of [
        { states: ['failed'] as JobState[], limit: 50 },
        { tenantId: 't1', beforeId: 50_000, limit: 20 },
        { tenantId: 't1', limit: 20 },
        { tenantId: 't1', states: ['queued'] as JobState[], limit: 20 },
      ]) {
        for (let i = 0; i < 8; i += 1) await listJobsPage(client, filter);
        const { rows } = await client.query<{ generic_plans: string; custom_plans: string }>(
          'SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = $1',
          [jobsPageQuery(filter).name],
        );
        // Without values there is only the generic plan; with them, the five custom plans and then the generic one.
        const [generic, custom] = [Number(rows[0]?.generic_plans), Number(rows[0]?.custom_plans)];
        expect({ generic, custom }, JSON.stringify(filter)).toEqual(jobsPageQuery(filter).values.length === 0 ? { generic: 8, custom: 0 } : { generic: 3, custom: 5 });
        // The API's signature of the same page (its caller's limit is a parameter, used only to cut the result) too.
        for (let i = 0; i < 8; i += 1) await readJobsPageSignature(client, filter);
        const signature = await client.query<{ generic_plans: string; custom_plans: string }>(
          'SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE name = $1',
          [jobsPageSignatureQuery(filter).name],
        );
        expect({ generic: Number(signature.rows[0]?.generic_plans), custom: Number(signature.rows[0]?.custom_plans) }, JSON.stringify(filter)).toEqual({ generic: 3, custom: 5 });
      }
    } finally {
      await client.end();
    }
  });

  it('reads a page of any size with the next prepared limit up, and returns its own size', async () => {
    // The history of the test above: 60,000 archived runs, newest first.
    const newest = (await env.pool.query<{ id: string }>('SELECT id FROM jobs ORDER BY id DESC LIMIT 60')).rows.map((row) => Number(row.id));
    for (const [limit, prepared] of [[1, 10], [7, 10], [10, 10], [11, 20], [51, 100], [500, 500], [501, 501]] as const) {
      expect(jobsPageQuery({ limit }).name, `limit ${limit}`).toContain(`n=${prepared}`);
      expect(jobsPageQuery({ limit }).text, `limit ${limit}`).toMatch(new RegExp(`LIMIT ${prepared}$`));
      if (limit <= 60) expect((await listJobsPage(env.pool, { limit })).map((job) => job.id), `limit ${limit}`).toEqual(newest.slice(0, limit));
    }
  });

  it('refuses a limit that is not a positive integer', () => {
    for (const limit of [0, -1, 1.5, Number.NaN]) expect(() => jobsPageQuery({ limit })).toThrow(/limit must be a positive integer/);
  });

  it('refuses a state it does not know', () => {
    expect(JOB_STATES).not.toContain('sleeping');
    expect(() => jobsPageQuery({ states: ['sleeping' as JobState], limit: 50 })).toThrow(/unknown run state "sleeping"/);
  });
});
