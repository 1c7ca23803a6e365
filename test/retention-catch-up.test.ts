// Retention (worker/maintenance/retention.ts) with a backlog: a round is bounded (batches × batch size), and a round
// that ends at its bound is followed by the next within a second instead of a whole interval, so a backlog drains.
import { afterEach, describe, expect, it } from 'vitest';
import { createRetention } from '../worker/maintenance/retention.js';
import type { PeriodicService } from '../worker/maintenance/periodic-service.js';
import { useTestEnvironment } from './harness.js';
import { silentLog, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const services: PeriodicService[] = [];

afterEach(async () => {
  await Promise.all(services.splice(0).map((service) => service.stop()));
  await env.pool.query('TRUNCATE jobs CASCADE');
});

/** `count` runs finished 40 days ago (past a 30-day retention), and one live queued run that must stay. */
async function seedExpired(count: number): Promise<void> {
  await env.pool.query(
    `INSERT INTO jobs (kind, payload, state, attempts, finished_at, created_at)
     SELECT 'noop', '{}', 'succeeded', 1, now() - interval '40 days', now() - interval '41 days' FROM generate_series(1, $1)`,
    [count],
  );
}

const finishedLeft = async () =>
  Number((await env.pool.query<{ n: string }>(`SELECT count(*) AS n FROM jobs WHERE state = 'succeeded'`)).rows[0]!.n);

describe('retention with a backlog', () => {
  it('a round stops at its bound and says work is left; the next round finishes and says none is', async () => {
    await seedExpired(45);
    const retention = createRetention(env.pool, 30, 3_600_000, silentLog, { batchSize: 10, batchesPerRound: 4 });
    expect(await retention.runOnce()).toBe(true);
    expect(await finishedLeft()).toBe(5);
    expect(await retention.runOnce()).toBe(false);
    expect(await finishedLeft()).toBe(0);
  });

  it('drains a backlog in rounds a second apart, not an interval (here an hour) apart', async () => {
    await seedExpired(130);
    await env.pool.query(`INSERT INTO jobs (kind, payload, state) VALUES ('noop', '{}', 'queued')`);
    const retention = createRetention(env.pool, 30, 3_600_000, silentLog, { batchSize: 10, batchesPerRound: 4 });
    services.push(retention);
    retention.start(0);
    // Four rounds of at most 40: only the catch-up can delete all 130 within the hour-long interval.
    await waitFor(async () => (await finishedLeft()) === 0, 30_000);
    const { rows } = await env.pool.query<{ state: string }>('SELECT state FROM jobs');
    expect(rows).toEqual([{ state: 'queued' }]);
  });
});
