// What a database-backed command needs: the validated config, a small pool, closed when the command ends.
import { loadConfig, requireDatabase, type Config } from '../config.js';
import { createPool, type Pool } from '../db/pool.js';

export async function withDatabase<T>(work: (pool: Pool, config: Config) => Promise<T>): Promise<T> {
  const config = loadConfig();
  const pool = createPool(requireDatabase(config), { max: 3, applicationName: 'bulk-import-cli' });
  try {
    return await work(pool, config);
  } finally {
    await pool.end();
  }
}
