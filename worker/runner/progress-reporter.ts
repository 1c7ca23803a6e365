// Throttled, fenced progress writes for one running job.
import type { Queryable } from '../db/pool.js';
import type { ProgressReporter } from '../handlers/types.js';
import { saveProgress } from '../queue/lease.js';
import type { Lease } from '../queue/types.js';

export class ThrottledProgressReporter implements ProgressReporter {
  private latest: Record<string, unknown> | undefined;
  private dirty = false;
  private lastWriteAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly db: Queryable,
    private readonly lease: Lease,
    private readonly onLeaseLost: () => void,
    private readonly minIntervalMs = 1_000,
  ) {}

  update(progress: Record<string, unknown>): void {
    // After the handler returned, progress travels with the outcome (snapshot); a late write would only be fenced.
    if (this.closed) return;
    this.latest = progress;
    this.dirty = true;
    if (this.timer || this.writing) return;
    const wait = Math.max(0, this.lastWriteAt + this.minIntervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush().catch(() => {});
    }, wait);
    this.timer.unref();
  }

  /** The latest progress, for the completion record (so the final figures are stored even if throttled). */
  get snapshot(): Record<string, unknown> | undefined {
    return this.latest;
  }

  async flush(): Promise<void> {
    if (this.writing) await this.writing;
    if (!this.dirty || !this.latest) return;
    const progress = this.latest;
    this.dirty = false;
    this.lastWriteAt = Date.now();
    this.writing = saveProgress(this.db, this.lease, progress)
      .then((held) => {
        if (!held) this.onLeaseLost();
      })
      .finally(() => {
        this.writing = undefined;
        // An update that arrived while this write was in flight scheduled nothing: schedule it now.
        if (this.dirty && !this.closed) this.update(this.latest!);
      });
    await this.writing;
  }

  forget(): void {
    this.latest = undefined;
    this.dirty = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
