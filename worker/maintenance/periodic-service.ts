// A named task that runs every `intervalMs` (first run after a random fraction of the interval, so a fleet of
// workers started together does not run it in lockstep). stop() waits for a run in progress.
import type { DatabaseStatusSink } from '../db/pool.js';
import type { Logger } from '../logger.js';

export class PeriodicService {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    readonly name: string,
    private readonly intervalMs: number,
    private readonly task: () => Promise<void>,
    private readonly log: Logger,
    /** Where a failure that is a database outage goes instead of an error line per run. */
    private readonly status?: DatabaseStatusSink,
  ) {}

  start(): void {
    this.stopped = false;
    this.schedule(Math.floor(Math.random() * this.intervalMs));
  }

  /** Runs the task now (also used by tests and by the CLI). */
  async runOnce(): Promise<void> {
    if (this.running) return this.running;
    const startedAt = Date.now();
    this.running = this.task()
      .then(() => this.status?.reportSuccess(startedAt))
      .catch((error: unknown) => {
        if (!this.status?.reportFailure(error, this.name, startedAt)) this.log.error({ err: error, service: this.name }, `${this.name} failed`);
      })
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.runOnce().then(() => this.schedule(this.intervalMs));
    }, delayMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}
