// Finalize writes batches on several connections at once ("lanes"): up to `lanes` writes in flight, each on a
// connection of its own, opened on first need and reused by the next batch. The first failure of any lane is the
// run's: no new write starts after it, and close() rethrows it once every write in flight has ended.
//
// A batch is a fixed number of rows (CSV_FINALIZE_CHUNK_SIZE, set at validation), and a row may be up to a million
// characters: 500 padded rows are half a gigabyte. So the writes in flight are bounded by their weight too: a batch
// starts only while the batches in flight weigh less than `budget` with it, or when none is in flight (a batch
// heavier than the budget is written alone). Batches of ordinary rows never meet the bound.
import type { Pool, PoolClient } from '../../db/pool.js';

/** The characters of rows that the batches being written may hold at once (FinalizeDeps; see above). */
export const LANES_BUDGET_CHARS = 64 * 1024 * 1024;

export class WriteLanes {
  private readonly idle: PoolClient[] = [];
  private readonly running = new Set<Promise<void>>();
  private opened = 0;
  private failure: unknown;
  private weightInFlight = 0;
  /** A write waits for the ones in flight to weigh less (the test reads it). */
  waitingForRoom = false;

  constructor(
    private readonly pool: Pool,
    private readonly lanes: number,
    private readonly budget = LANES_BUDGET_CHARS,
  ) {}

  private full(weight: number): boolean {
    return (this.idle.length === 0 && this.opened >= this.lanes) || (this.running.size > 0 && this.weightInFlight + weight > this.budget);
  }

  /** Waits for a free lane (and room within the budget), then starts `write` on its connection (without waiting for it to end). */
  async start(write: (client: PoolClient) => Promise<void>, weight = 0): Promise<void> {
    while (this.full(weight) && this.failure === undefined) {
      this.waitingForRoom = true;
      await Promise.race(this.running);
    }
    this.waitingForRoom = false;
    if (this.failure !== undefined) throw this.failure;
    let lane = this.idle.pop();
    if (!lane) {
      lane = await this.pool.connect();
      this.opened += 1;
    }
    const client = lane;
    this.weightInFlight += weight;
    const task: Promise<void> = write(client)
      .catch((error: unknown) => {
        this.failure ??= error;
      })
      .finally(() => {
        this.weightInFlight -= weight;
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
