// What GET /readyz asks the database, shared: one check at a time, its answer reused for a moment. The route needs no
// key (the load balancer calls it), so without this anyone who reaches the port could make every request read the
// database on a connection of the API's pool — a flood of them would leave none for the API.

export interface ReadinessProbeOptions {
  /** The check itself: resolves when ready, rejects with why not. */
  check: () => Promise<void>;
  /** How long a settled answer is reused (ms). */
  reuseMs: number;
  /** Called once per failed check (not per request): the one log line of a failure. */
  onFailure?: (error: unknown) => void;
  now?: () => number;
}

export class ReadinessProbe {
  private inFlight: Promise<void> | undefined;
  private settled: { at: number; ok: true } | { at: number; ok: false; error: unknown } | undefined;
  /** Checks run so far (each a read of the database). */
  checksRun = 0;
  /** Requests answered so far, from a check of their own or a shared one. */
  asked = 0;

  constructor(private readonly options: ReadinessProbeOptions) {}

  /** Resolves when the database was ready at a check at most `reuseMs` old (or one under way); rejects with its error. */
  ready(): Promise<void> {
    this.asked += 1;
    if (this.inFlight) return this.inFlight;
    const now = this.options.now ?? (() => performance.now());
    if (this.settled && now() - this.settled.at < this.options.reuseMs) {
      return this.settled.ok ? Promise.resolve() : Promise.reject(this.settled.error);
    }
    this.checksRun += 1;
    const check = this.options.check().then(
      () => {
        this.settled = { at: now(), ok: true };
      },
      (error: unknown) => {
        this.settled = { at: now(), ok: false, error };
        this.options.onFailure?.(error);
        throw error;
      },
    );
    this.inFlight = check.finally(() => {
      this.inFlight = undefined;
    });
    // Callers that arrive later await `inFlight`; the rejection of `check` itself is theirs to see, not unhandled.
    check.catch(() => {});
    return this.inFlight;
  }
}
