// A transaction on a client the caller holds for a whole phase (validation's staging writes, finalize's batches):
// one connection for the phase, one transaction per unit of work.
import type { PoolClient } from '../../db/pool.js';

export interface TransactionOptions {
  /**
   * false: the commit does not wait for its WAL to reach disk (`synchronous_commit = off` for this transaction). For
   * the many intermediate units of an import (staging windows, finalize batches): a database crash can lose only the
   * last such commits, each whole with its own record of being done (the batch mark, the staged rows), so the rerun
   * simply does them again. The step that ends the phase commits synchronously, which also makes every earlier
   * commit durable. Saves a disk flush per unit (about 2,000 per million rows at 500-row batches).
   */
  synchronousCommit?: boolean;
}

export async function inTransaction<T>(client: PoolClient, work: () => Promise<T>, options: TransactionOptions = {}): Promise<T> {
  await client.query(options.synchronousCommit === false ? 'BEGIN; SET LOCAL synchronous_commit TO off' : 'BEGIN');
  try {
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {});
    throw error;
  }
}
