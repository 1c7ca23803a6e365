import { describe, expect, it } from 'vitest';
import { migrate } from '../worker/db/migrate.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

async function tables(): Promise<string[]> {
  const { rows } = await env.pool.query<{ name: string }>(
    "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'pgmigrations' ORDER BY 1",
  );
  return rows.map((row) => row.name);
}

describe('migrations', () => {
  it('are all applied in the template, revert completely, and apply again', async () => {
    const before = await tables();
    expect(before).toContain('jobs');
    const { rows } = await env.pool.query<{ count: number }>('SELECT count(*)::int AS count FROM pgmigrations');
    const reverted = await migrate(env.databaseUrl, { direction: 'down', count: rows[0]!.count });
    expect(reverted.length).toBe(rows[0]!.count);
    expect(await tables()).toEqual([]);
    const applied = await migrate(env.databaseUrl);
    expect(applied).toEqual([...reverted].reverse());
    expect(await tables()).toEqual(before);
  });

  it('is a no-op when the database is up to date', async () => {
    expect(await migrate(env.databaseUrl)).toEqual([]);
  });
});
