import { describe, expect, it } from 'vitest';
import { createPool, freeConnections, inTransaction } from '../worker/db/pool.js';
import { WriteLanes } from '../worker/imports/csv/write-lanes.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';

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

describe('finalize lanes under a weight budget', () => {
  it('start a batch only while those in flight leave room for it, or alone when it is heavier than the budget', async () => {
    const lanes = new WriteLanes(env.pool, 3, 100);
    const order: string[] = [];
    let endFirst: () => void = () => {};
    // A first batch of 60 is in flight; a second of 60 would make 120: it waits although two lanes are free.
    await lanes.start(async () => {
      order.push('first started');
      await new Promise<void>((resolve) => (endFirst = resolve));
      order.push('first ended');
    }, 60);
    const second = lanes.start(async () => {
      order.push('second started');
    }, 60);
    await waitFor(async () => lanes.waitingForRoom || order.includes('second started'));
    endFirst();
    await second;
    // Heavier than the whole budget: written alone, not refused.
    await lanes.start(async () => {
      order.push('heavy started');
    }, 500);
    await lanes.close(async () => {});
    expect(order).toEqual(['first started', 'first ended', 'second started', 'heavy started']);
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
