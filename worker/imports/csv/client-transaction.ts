// A transaction on a client the caller holds for a whole phase (validation's staging writes, finalize's batches):
// one connection for the phase, one transaction per unit of work.
import type { PoolClient } from '../../db/pool.js';

export async function inTransaction<T>(client: PoolClient, work: () => Promise<T>): Promise<T> {
  await client.query('BEGIN');
  try {
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
}
