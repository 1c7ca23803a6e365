// Finalize writes batches on several connections at once ("lanes"): up to `lanes` writes in flight, each on a
// connection of its own, opened on first need and reused by the next batch. The first failure of any lane is the
// run's: no new write starts after it, and close() rethrows it once every write in flight has ended.
import type { Pool, PoolClient } from '../../db/pool.js';

export class WriteLanes {
  private readonly idle: PoolClient[] = [];
  private readonly running = new Set<Promise<void>>();
  private opened = 0;
  private failure: unknown;

  constructor(
    private readonly pool: Pool,
    private readonly lanes: number,
  ) {}

  /** Waits for a free lane, then starts `write` on its connection (without waiting for it to end). */
  async start(write: (client: PoolClient) => Promise<void>): Promise<void> {
    while (this.idle.length === 0 && this.opened >= this.lanes && this.failure === undefined) await Promise.race(this.running);
    if (this.failure !== undefined) throw this.failure;
    let lane = this.idle.pop();
    if (!lane) {
      lane = await this.pool.connect();
      this.opened += 1;
    }
    const client = lane;
    const task: Promise<void> = write(client)
      .catch((error: unknown) => {
        this.failure ??= error;
      })
      .finally(() => {
        this.idle.push(client);
        this.running.delete(task);
      });
    this.running.add(task);
  }

  /** A failure outside the lanes (reading the object) that ends the run like a lane's. */
  fail(error: unknown): void {
    this.failure ??= error;
  }

  /**
   * Waits for every write in flight (each commits or rolls back before its connection goes back), hands every
   * connection to `release` and back to the pool, then throws the first failure.
   */
  async close(release: (client: PoolClient) => Promise<void>): Promise<void> {
    await Promise.all(this.running);
    for (const client of this.idle.splice(0)) {
      await release(client);
      client.release();
    }
    if (this.failure !== undefined) throw this.failure;
  }
}
