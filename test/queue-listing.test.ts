// The run listing (worker/queue/operator.ts, listJobsPage): pages newest first by keyset, for any set of states, and
// a listing of one state that needs an operator (failed, dead, partial) reads the partial index of those runs with its
// prepared (generic) plan, not the whole table backwards.
import { describe, expect, it } from 'vitest';
import { jobsPageQuery, listJobsPage } from '../worker/queue/operator.js';
import { JOB_STATES, type JobState } from '../worker/queue/types.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

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

    // The plan a named statement settles on after its first executions: generic, for any values.
    const client = await env.pool.connect();
    try {
      await client.query('SET plan_cache_mode = force_generic_plan');
      for (const state of ['failed', 'dead', 'partial'] as JobState[]) {
        const query = jobsPageQuery({ states: [state], limit: 50 });
        await client.query(`PREPARE listing AS ${query.text}`);
        try {
          const plan = (await client.query('EXPLAIN EXECUTE listing(50)')).rows.map((row) => row['QUERY PLAN']).join('\n');
          // In each partition: the live queue's recent finished runs and the archive.
          expect(plan, state).toContain('Index Scan Backward using jobs_live_needing_attention on jobs_live');
          expect(plan, state).toContain('Index Scan Backward using jobs_archive_needing_attention on jobs_archive');
        } finally {
          await client.query('DEALLOCATE listing');
        }
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

  it('names every statement apart within the 63 bytes by which Postgres tells prepared statements apart', async () => {
    const filters = ['kinds', 'tenantId', 'since', 'until', 'beforeId'] as const;
    const names = new Map<string, string>();
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
          limit: 50,
        });
        const key = Buffer.from(query.name).subarray(0, 63).toString();
        expect(Buffer.byteLength(query.name)).toBeLessThanOrEqual(63);
        expect(names.get(key), `${query.name} and another statement share a name`).toBeUndefined();
        names.set(key, query.text);
      }
    }
    expect(names.size).toBe((1 + (1 << JOB_STATES.length)) * (1 << filters.length));
    // The longest name, prepared on one connection after its first page: a second statement of the same name would fail.
    const client = await env.pool.connect();
    try {
      await listJobsPage(client, { states: [...JOB_STATES], kinds: ['noop'], tenantId: 't1', since: new Date(0), until: new Date(), limit: 5 });
      await listJobsPage(client, { states: [...JOB_STATES], kinds: ['noop'], tenantId: 't1', since: new Date(0), until: new Date(), beforeId: 10, limit: 5 });
    } finally {
      client.release();
    }
  });

  it('refuses a state it does not know', () => {
    expect(JOB_STATES).not.toContain('sleeping');
    expect(() => jobsPageQuery({ states: ['sleeping' as JobState], limit: 50 })).toThrow(/unknown run state "sleeping"/);
  });
});
