// db/snapshot.ts against Postgres's own snapshots: which transactions a statement saw.
import { describe, expect, it } from 'vitest';
import { parseSnapshot, sawTransaction } from '../worker/db/snapshot.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

describe('sawTransaction', () => {
  it('is true for transactions committed before the snapshot, false for one running then and for later ones', async () => {
    const xid = async (db: { query: typeof env.pool.query }) => (await db.query<{ xid: string }>('SELECT pg_current_xact_id()::text AS xid')).rows[0]!.xid;
    const before = await xid(env.pool);
    const running = await env.pool.connect();
    try {
      await running.query('BEGIN');
      const open = await xid(running);
      // Ended after `open` began: the snapshot's xmax passes it, and `open` is listed as running below it.
      const endedSince = await xid(env.pool);
      const text = (await env.pool.query<{ snapshot: string }>('SELECT pg_current_snapshot()::text AS snapshot')).rows[0]!.snapshot;
      await running.query('COMMIT');
      const later = await xid(env.pool);

      const snapshot = parseSnapshot(text);
      expect(snapshot.running.has(BigInt(open))).toBe(true);
      expect([before, open, endedSince, later].map((id) => sawTransaction(snapshot, id))).toEqual([true, false, true, false]);
    } finally {
      running.release();
    }
  });

  it('refuses text that is not a snapshot', () => {
    expect(() => parseSnapshot('12:x:')).toThrow('not a snapshot');
    expect(parseSnapshot('5:9:')).toEqual({ xmin: 5n, xmax: 9n, running: new Set() });
  });
});
