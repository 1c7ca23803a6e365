// Pooled connections with a client-side statement timeout (the claim and lease sessions) whose connection goes silent
// (a failover that takes the old primary's address away): a statement that got no answer must cost its connection,
// never the pool. pg keeps a timed-out statement as the connection's active one and queues the next statements
// behind it, so a connection handed back as it is takes each next holder into the same silence.
import { afterEach, describe, expect, it } from 'vitest';
import { createPool, withTransaction, type Pool } from '../worker/db/pool.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { rescueExpiredLeases } from '../worker/queue/maintenance.js';
import { useTestEnvironment } from './harness.js';
import { startSilencingProxy, type SilencingProxy } from './support/silencing-proxy.js';

const env = useTestEnvironment();
const open: Array<{ pool: Pool; proxy: SilencingProxy }> = [];
afterEach(async () => {
  for (const { pool, proxy } of open.splice(0)) {
    await proxy.close();
    await pool.end().catch(() => {});
  }
  await env.pool.query('DELETE FROM jobs');
});

/**
 * A one-connection pool through a silencing proxy, its connection open and then silenced; `null`: no pool timeout.
 * The timeout also bounds the statements on the new connection after it: long enough for a busy machine.
 */
async function silencedPool(queryTimeoutMs: number | null = 1_500): Promise<Pool> {
  const proxy = await startSilencingProxy(env.databaseUrl);
  const pool = createPool(proxy.url, { max: 1, ...(queryTimeoutMs === null ? {} : { queryTimeoutMs }) });
  pool.on('error', () => {});
  open.push({ pool, proxy });
  await pool.query('SELECT 1');
  expect(proxy.silenceExisting()).toBe(1);
  return pool;
}

describe('a pooled connection that goes silent', () => {
  it('a transaction on it fails at its timeout and the next one runs on a new connection', async () => {
    const pool = await silencedPool();
    await expect(withTransaction(pool, (client) => client.query('SELECT 2'))).rejects.toThrow(/Query read timeout/);
    const { rows } = await withTransaction(pool, (client) => client.query<{ n: number }>('SELECT 3 AS n'));
    expect(rows).toEqual([{ n: 3 }]);
  });

  it('a rescue gives up at its own timeout (the main pool has none), and the next one rescues on a new connection', async () => {
    const pool = await silencedPool(null);
    const { rows } = await env.pool.query<{ id: number }>(
      `INSERT INTO jobs (kind, state, attempts, lease_owner, lease_expires_at, started_at)
       VALUES ('noop', 'running', 1, 'gone', now() - interval '1 minute', now()) RETURNING id`,
    );
    await expect(rescueExpiredLeases(pool, 1000, 500)).rejects.toThrow(/Query read timeout/);
    expect((await rescueExpiredLeases(pool, 1000, 10_000)).requeued).toEqual([rows[0]!.id]);
  });

  it('a claim with tenant ceilings (a transaction of its own) likewise', async () => {
    const pool = await silencedPool();
    const { job } = await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme' });
    const request = { workerId: 'w', limit: 5, leaseMs: 60_000, kinds: ['noop'], tenantKindConcurrency: { noop: 1 } };
    await expect(claimJobs(pool, request)).rejects.toThrow(/Query read timeout/);
    expect((await claimJobs(pool, request)).map((claimed) => claimed.id)).toEqual([job.id]);
  });
});
