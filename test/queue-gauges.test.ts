// The queue gauges (worker/queue/gauges.ts) against counts made from the rows, and their plan: the statement reads
// the partial indexes of the queued, running and unresolved dead runs, never the finished history (it runs once a
// minute however large that history is).
import { describe, expect, it } from 'vitest';
import { QUEUE_GAUGES_STATEMENT, readQueueGauges } from '../worker/queue/gauges.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

describe('queue gauges', () => {
  it('count queued, running and unresolved dead runs per kind from their partial indexes', async () => {
    // 30,000 runs of two kinds, mostly finished; 1 in 100 queued, 1 in 500 running, 1 in 50 dead of which a third
    // are resolved. Queued runs have 0-2 attempts behind them, failed unless 0; half the running ones 2-3 failed
    // attempts before the one under way, which must not count (the highest figure comes from them).
    await env.pool.query(
      `INSERT INTO jobs (kind, tenant_id, state, attempts, last_error, lease_owner, lease_expires_at, started_at,
         finished_at, resolved_at, run_at, archived)
       SELECT CASE WHEN g % 3 = 0 THEN 'csv-import' ELSE 'noop' END, 't' || (g % 7), s.state,
         CASE WHEN s.state = 'queued' THEN (g / 100) % 3 WHEN s.state = 'running' THEN 3 + (g / 500) % 2 ELSE 1 END,
         CASE WHEN (s.state = 'queued' AND (g / 100) % 3 > 0) OR (s.state = 'running' AND (g / 1000) % 2 = 0)
           THEN '{"code": "X"}'::jsonb END,
         CASE WHEN s.state = 'running' THEN 'w' END, CASE WHEN s.state = 'running' THEN now() + interval '1 minute' END,
         CASE WHEN s.state <> 'queued' THEN now() - interval '1 hour' END,
         CASE WHEN s.state NOT IN ('queued', 'running') THEN now() END,
         CASE WHEN s.state = 'dead' AND g % 3 = 1 THEN now() END,
         now() - interval '10 minutes',
         -- Most finished runs archived, as a minute after they end.
         s.state NOT IN ('queued', 'running') AND g % 10 <> 7
       FROM generate_series(1, 30000) g,
         LATERAL (SELECT CASE WHEN g % 100 = 0 THEN 'queued' WHEN g % 500 = 1 THEN 'running' WHEN g % 50 = 2 THEN 'dead'
           WHEN g % 20 = 3 THEN 'failed' ELSE 'succeeded' END AS state) s`,
    );
    await env.pool.query('VACUUM ANALYZE jobs');

    const { rows } = await env.pool.query<{ kind: string; state: string; attempts: number; resolved: boolean; failed: boolean }>(
      'SELECT kind, state, attempts, resolved_at IS NOT NULL AS resolved, last_error IS NOT NULL AS failed FROM jobs',
    );
    const gauges = await readQueueGauges(env.pool, ['backfill']);
    expect(gauges.map((gauge) => gauge.kind)).toEqual(['backfill', 'csv-import', 'noop']);
    for (const gauge of gauges) {
      const of = rows.filter((row) => row.kind === gauge.kind);
      expect(gauge.queued, gauge.kind).toBe(of.filter((row) => row.state === 'queued').length);
      expect(gauge.running, gauge.kind).toBe(of.filter((row) => row.state === 'running').length);
      expect(gauge.dead, gauge.kind).toBe(of.filter((row) => row.state === 'dead' && !row.resolved).length);
      // A queued run has failed every attempt it counted, a running one all but the attempt under way.
      expect(gauge.maxConsecutiveFailures, gauge.kind).toBe(
        Math.max(
          0,
          ...of.filter((row) => row.state === 'queued' && row.failed).map((row) => row.attempts),
          ...of.filter((row) => row.state === 'running' && row.failed).map((row) => row.attempts - 1),
        ),
      );
      if (gauge.kind !== 'backfill') {
        expect(gauge.queued).toBeGreaterThan(0);
        expect(gauge.dead).toBeGreaterThan(0);
        expect(gauge.maxConsecutiveFailures).toBeGreaterThan(0);
        expect(gauge.oldestQueuedAgeSeconds).toBeGreaterThanOrEqual(600);
        expect(gauge.oldestRunningAgeSeconds).toBeGreaterThanOrEqual(3600);
      }
    }
    // Resolved dead runs are not counted, and there are some to leave out.
    expect(rows.some((row) => row.state === 'dead' && row.resolved)).toBe(true);

    const plan = (await env.pool.query(`EXPLAIN ${QUEUE_GAUGES_STATEMENT}`)).rows.map((row) => row['QUERY PLAN']).join('\n');
    // The queued runs may come from any of the indexes of the backlog (jobs_claim_order and two more): not named.
    expect(plan).not.toContain('Seq Scan');
    for (const index of ['jobs_live_lease_expiry', 'jobs_live_dead_unresolved', 'jobs_archive_dead_unresolved']) expect(plan).toContain(index);
  });

  it("age a running run from its attempt's claim: a finalize after hours of review is not hours old", async () => {
    await env.pool.query('DELETE FROM jobs');
    // A CSV import validated two hours ago and approved: its finalize claimed 30 s ago (started_at stays the first
    // claim's). A backfill claimed before claimed_at existed: its first start is all there is.
    await env.pool.query(
      `INSERT INTO jobs (kind, tenant_id, state, attempts, lease_owner, lease_expires_at, started_at, claimed_at, run_at)
       VALUES ('csv-finalize', 't', 'running', 2, 'w', now() + interval '1 minute', now() - interval '2 hours', now() - interval '30 seconds', now()),
              ('backfill', NULL, 'running', 1, 'w', now() + interval '1 minute', now() - interval '1 hour', NULL, now())`,
    );
    const gauges = await readQueueGauges(env.pool);
    const age = (kind: string) => gauges.find((gauge) => gauge.kind === kind)!.oldestRunningAgeSeconds;
    expect(age('csv-finalize')).toBeGreaterThanOrEqual(30);
    expect(age('csv-finalize')).toBeLessThan(1800);
    expect(age('backfill')).toBeGreaterThanOrEqual(3600);
  });

  it('count as running only runs under a live lease: one a task that is gone left running is not', async () => {
    await env.pool.query(
      `INSERT INTO jobs (kind, state, attempts, lease_owner, lease_expires_at, started_at, claimed_at) VALUES
         ('audit', 'running', 1, 'alive', now() + interval '1 minute', now(), now()),
         ('audit', 'running', 1, 'gone', now() - interval '1 minute', now() - interval '2 minutes', now() - interval '2 minutes')`,
    );
    expect((await readQueueGauges(env.pool, ['audit'])).find((gauge) => gauge.kind === 'audit')).toMatchObject({ running: 1 });
  });
});
