// A least-privilege worker role for a test: it logs in with a password, reads and writes every table of the test's
// database and owns none (no right on a sequence, no MAINTAIN): what docs/DEPLOYMENT.md lets a worker's role be.
import { randomBytes } from 'node:crypto';
import { createPool, type Pool } from '../../worker/db/pool.js';
import type { TestEnvironment } from '../harness.js';

export interface TablesOnlyRole {
  name: string;
  /** A one-connection pool logged in as the role. */
  pool: Pool;
  /** Ends the pool and drops the role with what it owns. */
  drop(): Promise<void>;
}

export async function createTablesOnlyRole(env: TestEnvironment, prefix: string): Promise<TablesOnlyRole> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  const password = randomBytes(8).toString('hex');
  await env.pool.query(`CREATE ROLE ${name} LOGIN PASSWORD '${password}'`);
  await env.pool.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${name}`);
  const url = new URL(env.databaseUrl);
  url.username = name;
  url.password = password;
  const pool = createPool(url.toString(), { max: 1 });
  return {
    name,
    pool,
    drop: async () => {
      await pool.end();
      await env.pool.query(`DROP OWNED BY ${name}`);
      await env.pool.query(`DROP ROLE ${name}`);
    },
  };
}
