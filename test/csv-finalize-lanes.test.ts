import { describe, expect, it } from 'vitest';
import { createPool, freeConnections, inTransaction } from '../worker/db/pool.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

describe('finalize lanes', () => {
  it('count only the connections a pool can hand out at once, so extra lanes never wait on other jobs', async () => {
    const pool = createPool(env.databaseUrl, { max: 3 });
    try {
      expect(freeConnections(pool)).toBe(3);
      const held = [await pool.connect(), await pool.connect()];
      expect(freeConnections(pool)).toBe(1);
      held.pop()!.release();
      expect(freeConnections(pool)).toBe(2); // one idle, one that may still be opened
      const third = await pool.connect();
      const fourth = await pool.connect();
      const waiting = pool.connect();
      expect(freeConnections(pool)).toBe(-1);
      fourth.release();
      (await waiting).release();
      third.release();
      held[0]!.release();
      expect(freeConnections(pool)).toBe(3);
    } finally {
      await pool.end();
    }
  });
});

describe('import transactions', () => {
  it('commit without waiting for the disk only when asked, for that transaction alone', async () => {
    const client = await env.pool.connect();
    try {
      const setting = async () => (await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit')).rows[0]!.synchronous_commit;
      // The test server runs with synchronous_commit off for speed; a production session has it on.
      await client.query('SET synchronous_commit TO on');
      expect(await inTransaction(client, setting, { synchronousCommit: false })).toBe('off');
      expect(await setting()).toBe('on');
      expect(await inTransaction(client, setting)).toBe('on');
      await expect(inTransaction(client, async () => client.query('SELECT 1/0'), { synchronousCommit: false })).rejects.toThrow(/division by zero/);
      expect(await setting()).toBe('on');
    } finally {
      await client.query('RESET synchronous_commit');
      client.release();
    }
  });
});
