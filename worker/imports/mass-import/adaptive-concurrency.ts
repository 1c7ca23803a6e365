// Bounded parallelism that backs off when S3 says "slow down": each throttling signal halves the number of uploads
// in flight (never below one), holds it there for a while, then lets it grow back by one at a time
// (additive increase, multiplicative decrease — what S3's own guidance asks clients to do on 503 SlowDown).

export interface AdaptiveConcurrencyOptions {
  /** How long a reduced limit holds after the last throttling signal before growing again. */
  holdMs: number;
  /** Time between two steps of growth once the hold is over. */
  growStepMs: number;
  now?: () => number;
}

export class AdaptiveConcurrency {
  private current: number;
  private active = 0;
  private readonly waiters: Array<() => void> = [];
  private heldUntil = 0;
  private lastChangeAt = 0;
  private readonly now: () => number;
  /** The lowest limit reached, and how many throttling signals arrived (reported in the run's result). */
  lowest: number;
  throttleSignals = 0;

  constructor(
    readonly max: number,
    private readonly options: AdaptiveConcurrencyOptions,
  ) {
    if (!Number.isInteger(max) || max < 1) throw new Error(`concurrency must be a whole number of at least 1, got ${max}`);
    this.current = max;
    this.lowest = max;
    this.now = options.now ?? Date.now;
  }

  get limit(): number {
    return this.current;
  }

  get inFlight(): number {
    return this.active;
  }

  /** Resolves when a slot is free under the current limit. */
  acquire(): Promise<void> {
    this.grow();
    if (this.active < this.current) {
      this.active += 1;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push(() => {
      this.active += 1;
      resolve();
    }));
  }

  release(): void {
    this.active -= 1;
    this.grow();
    this.pump();
  }

  /** S3 throttled a request (SlowDown, 503, 429) or needed retries to accept one. */
  throttled(): void {
    this.throttleSignals += 1;
    const now = this.now();
    // One burst of errors from requests already in flight counts as one signal: halve at most once per hold period
    // start, otherwise a handful of simultaneous failures would drop straight to one.
    if (now - this.lastChangeAt >= Math.min(this.options.holdMs, 1_000) || this.heldUntil <= now) {
      this.current = Math.max(1, Math.floor(this.current / 2));
      this.lowest = Math.min(this.lowest, this.current);
      this.lastChangeAt = now;
    }
    this.heldUntil = now + this.options.holdMs;
  }

  private grow(): void {
    const now = this.now();
    if (this.current >= this.max || now < this.heldUntil || now - this.lastChangeAt < this.options.growStepMs) return;
    this.current += 1;
    this.lastChangeAt = now;
  }

  private pump(): void {
    while (this.active < this.current && this.waiters.length > 0) this.waiters.shift()!();
  }
}
