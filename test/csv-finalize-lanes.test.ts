import { describe, expect, it } from 'vitest';
import { createPool } from '../worker/db/pool.js';
import { freeConnections } from '../worker/imports/csv/finalize-import.js';
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
