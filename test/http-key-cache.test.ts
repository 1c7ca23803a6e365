// The verified-key cache of `bulk-import serve` (worker/auth/verified-keys.ts) against the real database: a key is
// looked up once and then trusted, bounded in number; a revocation from another process (the real CLI) reaches the
// cache through its LISTEN session; with that session gone every request looks its key up again.
import { afterEach, describe, expect, it } from 'vitest';
import { createApiKey } from '../worker/auth/api-keys.js';
import { VerifiedKeyCache } from '../worker/auth/verified-keys.js';
import type { Queryable } from '../worker/db/pool.js';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import { silentLog, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const caches: VerifiedKeyCache[] = [];

afterEach(async () => {
  await Promise.all(caches.splice(0).map((cache) => cache.stop()));
  await env.pool.query('DELETE FROM api_keys');
});

/** The pool, counting the key lookups that reach the database. */
function countingDb(): { db: Queryable; lookups: () => number } {
  let lookups = 0;
  const db = {
    query: (text: string, values?: unknown[]) => {
      if (text.includes('FROM api_keys')) lookups += 1;
      return env.pool.query(text, values);
    },
  } as Queryable;
  return { db, lookups: () => lookups };
}

async function startCache(db: Queryable, options: { ttlMs?: number; maxEntries?: number } = {}): Promise<VerifiedKeyCache> {
  const cache = new VerifiedKeyCache(db, env.databaseUrl, silentLog, { ttlMs: 600_000, ...options });
  caches.push(cache);
  await cache.start();
  expect(cache.active).toBe(true);
  return cache;
}

const key = async (name: string) => (await createApiKey(env.pool, { name, role: 'operator' })).key;

describe('verified API keys', () => {
  it('looks a key up once, then serves it from the cache; unknown keys are looked up every time', async () => {
    const { db, lookups } = countingDb();
    const cache = await startCache(db);
    const token = await key('cached');
    for (let i = 0; i < 5; i += 1) expect((await cache.find(token))?.name).toBe('cached');
    expect(lookups()).toBe(1);
    const unknown = `bik_${'A'.repeat(43)}`;
    expect(await cache.find(unknown)).toBeNull();
    expect(await cache.find(unknown)).toBeNull();
    expect(lookups()).toBe(3);
    // Junk never reaches the database.
    expect(await cache.find('not-a-key')).toBeNull();
    expect(lookups()).toBe(3);
  });

  it('a key revoked by another process (the real CLI) is refused without waiting for the TTL', async () => {
    const cache = await startCache(env.pool);
    const token = await key('doomed');
    expect((await cache.find(token))?.name).toBe('doomed');
    expect((await runCli(env, ['api-keys', 'revoke', 'doomed'])).code).toBe(0);
    // The TTL is 10 minutes here: only the NOTIFY can explain the refusal.
    await waitFor(async () => (await cache.find(token)) === null, 5_000);
  });

  it('keeps at most maxEntries keys, and expires them after the TTL', async () => {
    const { db, lookups } = countingDb();
    const cache = await startCache(db, { maxEntries: 2 });
    const [a, b, c] = [await key('a'), await key('b'), await key('c')];
    for (const token of [a, b, c]) await cache.find(token);
    expect(lookups()).toBe(3);
    await cache.find(c);
    await cache.find(b);
    expect(lookups()).toBe(3);
    await cache.find(a); // the oldest entry was dropped
    expect(lookups()).toBe(4);

    const short = await startCache(db, { ttlMs: 50 });
    await short.find(a);
    const before = lookups();
    await waitFor(async () => {
      await short.find(a);
      return lookups() > before;
    }, 5_000);
  });

  it('without its LISTEN session the cache is off (every request looks its key up) until it reconnects', async () => {
    const { db, lookups } = countingDb();
    const cache = await startCache(db);
    const token = await key('steady');
    await cache.find(token);
    await cache.find(token);
    expect(lookups()).toBe(1);
    await env.pool.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bulk-import-api-keys' AND datname = current_database()`,
    );
    await waitFor(async () => !cache.active, 30_000);
    // While it is off, every find looks its key up; checked find by find, since the session may come back between
    // two (it reconnects after a short pause): at least the first is made while it is off.
    let whileOff = 0;
    for (let find = 0; find < 2 && !cache.active; find += 1) {
      const before = lookups();
      await cache.find(token);
      expect(lookups()).toBe(before + 1);
      whileOff += 1;
    }
    expect(whileOff).toBeGreaterThanOrEqual(1);
    await waitFor(async () => cache.active, 30_000);
    // Back on: what it kept before is gone (it may have missed a revocation), so one lookup, then from the cache.
    const online = lookups();
    await cache.find(token);
    await cache.find(token);
    expect(lookups()).toBe(online + 1);
  });
});
