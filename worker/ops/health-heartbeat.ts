// The liveness signal the container health check reads: the worker touches a file on every turn of its poll loop
// (throttled), and scripts/healthcheck.ts fails once the file is older than HEALTH_MAX_AGE_MS. A hung loop, a
// blocked event loop or a frozen process all stop the touches.
import { rm, utimes, writeFile } from 'node:fs/promises';
import type { Logger } from '../logger.js';
import type { Worker } from '../runner/worker.js';

export interface HealthHeartbeatOptions {
  file: string;
  /** The healthcheck's threshold; touches come at least four times within it (and at most once a second). */
  maxAgeMs: number;
}

export class HealthHeartbeat {
  private readonly minIntervalMs: number;
  private lastTouch = 0;
  private touching: Promise<void> | undefined;
  private failing = false;
  private stopped = false;
  private readonly onLoop = () => this.beat();
  private detach: () => void = () => {};

  constructor(
    private readonly options: HealthHeartbeatOptions,
    private readonly log: Logger,
  ) {
    this.minIntervalMs = Math.min(1_000, Math.floor(options.maxAgeMs / 4));
  }

  /** Touches the file on the worker's loop turns until stop(). */
  attach(worker: Worker): this {
    worker.on('loop', this.onLoop);
    this.detach = () => worker.off('loop', this.onLoop);
    return this;
  }

  /** Touches the file unless it was touched less than the minimum interval ago (or a touch is under way). */
  beat(): void {
    const now = Date.now();
    if (this.stopped || this.touching || now - this.lastTouch < this.minIntervalMs) return;
    this.lastTouch = now;
    this.touching = this.touch(new Date(now)).finally(() => {
      this.touching = undefined;
    });
  }

  private async touch(at: Date): Promise<void> {
    try {
      try {
        await utimes(this.options.file, at, at);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
        await writeFile(this.options.file, `${process.pid}\n`);
        await utimes(this.options.file, at, at);
      }
      if (this.failing) this.log.info({ file: this.options.file }, 'health heartbeat file writable again');
      this.failing = false;
    } catch (error) {
      // Logged once per outage: the healthcheck will report the stale file; the worker itself keeps running.
      if (!this.failing) this.log.error({ err: error, file: this.options.file }, 'cannot touch the health heartbeat file');
      this.failing = true;
    }
  }

  /** Stops touching and removes the file: a stopped worker is not healthy. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.detach();
    await this.touching;
    await rm(this.options.file, { force: true }).catch(() => {});
  }
}
