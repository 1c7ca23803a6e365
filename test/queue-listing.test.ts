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
    // 20,000 runs, the states in a fixed rotation: 1 in 20 failed, 1 in 50 dead, 1 in 20 partial.
    await env.pool.query(
      `INSERT INTO jobs (kind, tenant_id, payload, state, finished_at)
       SELECT 'noop', 't' || (g % 7), '{}', CASE WHEN g % 20 = 0 THEN 'failed' WHEN g % 50 = 1 THEN 'dead' WHEN g % 20 = 2 THEN 'partial'
         WHEN g % 100 = 3 THEN 'queued' ELSE 'succeeded' END,
         CASE WHEN g % 100 <> 3 THEN now() END
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
      for (const state of ['failed', 'dead', 'partial'] as JobState[]) {
        const query = jobsPageQuery({ states: [state], limit: 50 });
        await client.query(`PREPARE listing AS ${query.text}`);
        await client.query('SET plan_cache_mode = force_generic_plan');
        const plan = (await client.query('EXPLAIN EXECUTE listing(50)')).rows.map((row) => row['QUERY PLAN']).join('\n');
        await client.query('DEALLOCATE listing');
        await client.query('RESET plan_cache_mode');
        expect(plan, state).toContain('Index Scan Backward using jobs_needing_attention');
      }
    } finally {
      client.release();
    }
  });

  it('refuses a state it does not know', () => {
    expect(JOB_STATES).not.toContain('sleeping');
    expect(() => jobsPageQuery({ states: ['sleeping' as JobState], limit: 50 })).toThrow(/unknown run state "sleeping"/);
  });
});
