// A completion batch costs the same however many runs the other workers hold: the statement reaches the batch's runs
// through the pkey, never by a nested loop over every running run (worker/queue/finish.ts, completeStatement).
import { describe, expect, it } from 'vitest';
import { withTransaction } from '../worker/db/pool.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJobs } from '../worker/queue/enqueue.js';
import { COMPLETION_PLAN_SETTINGS, completeJobs, completeStatement } from '../worker/queue/finish.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

describe('completing a batch among many running runs', () => {
  it('reads the batch through the pkey, without a nested loop, when the statistics know nothing of this worker', async () => {
    // 20,000 runs held by another worker and 550 queued, analyzed before any worker here claims: as in a fleet, where a
    // worker's id is never in the statistics, the planner takes a worker's running runs for a row or two. A batch of
    // 500 needed the pkey path (`id = ANY`), a batch of 50 the nested loops turned off as well.
    await env.pool.query(`INSERT INTO jobs (kind, payload, state, lease_owner, lease_expires_at, attempts)
      SELECT 'noop', '{}', 'running', 'other-worker', now() + interval '1 hour', 1 FROM generate_series(1, 20000)`);
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 550 }, () => ({})));
    await env.pool.query('ANALYZE jobs_live');
    for (const size of [50, 500]) {
      const worker = `worker-${size}`;
      const batch = await claimJobs(env.pool, { workerId: worker, limit: size, leaseMs: 60_000, kinds: ['noop'] });
      expect(batch).toHaveLength(size);
      const completions = batch.map((job) => ({ jobId: job.id, attempt: job.attempt, state: 'succeeded' as const }));
      const statement = completeStatement(worker, completions);
      const plan = await withTransaction(
        env.pool,
        async (client) => (await client.query({ text: `EXPLAIN (COSTS OFF) ${statement.text}`, values: statement.values })).rows,
        { setLocal: COMPLETION_PLAN_SETTINGS },
      );
      const text = plan.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n');
      expect(text, `batch of ${size}`).toContain('jobs_live_pkey');
      expect(text, `batch of ${size}`).not.toContain('Nested Loop');
      expect([...(await completeJobs(env.pool, worker, completions)).keys()].sort((a, b) => a - b)).toEqual(batch.map((job) => job.id).sort((a, b) => a - b));
    }
    const { rows } = await env.pool.query(`SELECT count(*)::int AS n FROM jobs WHERE state = 'succeeded'`);
    expect(rows[0].n).toBe(550);
  });
});
