// ECS task scale-in protection: while the worker holds a lease, ask the ECS agent (ECS_AGENT_URI, injected into
// every task) to protect this task from scale-in and deployments; release the protection once the worker has been
// idle for a moment. Lowering desiredCount at the end of a campaign then stops idle tasks only. Protection expires
// by itself, so it is renewed while the worker stays busy, and a crashed worker cannot pin its task for long.
// Nothing here may stop the worker: failures are logged and retried.
import { context, ROOT_CONTEXT } from '@opentelemetry/api';
import type { Logger } from '../logger.js';
import type { Worker } from '../runner/worker.js';

export interface TaskProtectionOptions {
  /** The agent's base URL, $ECS_AGENT_URI. */
  agentUri: string;
  /** Lifetime of each protection the agent grants (1–2,880 minutes). */
  expiresInMinutes?: number;
  /** Renew this long after the last grant; well before it expires. Default a third of the lifetime. */
  renewAfterMs?: number;
  /** Release only after the worker has been idle this long, so back-to-back short jobs do not flap it. */
  releaseAfterIdleMs?: number;
  /** Wait before retrying a failed call. */
  retryDelayMs?: number;
  requestTimeoutMs?: number;
}

export class TaskProtectionError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = 'TaskProtectionError';
  }
}

export class TaskProtection {
  private readonly expiresInMinutes: number;
  private readonly renewAfterMs: number;
  private readonly releaseAfterIdleMs: number;
  private readonly retryDelayMs: number;
  private readonly requestTimeoutMs: number;
  private busy = false;
  private idleSince = Date.now();
  /** What the agent last confirmed; undefined after a failed call (we do not know). A new task is unprotected. */
  private applied: boolean | undefined = false;
  private appliedAt = 0;
  private syncing: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private failing = false;
  private readonly tick: NodeJS.Timeout;
  private retryTimer: NodeJS.Timeout | undefined;
  private detach: () => void = () => {};

  constructor(
    private readonly options: TaskProtectionOptions,
    private readonly log: Logger,
  ) {
    this.expiresInMinutes = options.expiresInMinutes ?? 15;
    if (!Number.isInteger(this.expiresInMinutes) || this.expiresInMinutes < 1 || this.expiresInMinutes > 2880) {
      throw new RangeError(`expiresInMinutes must be a whole number from 1 to 2880, got ${this.expiresInMinutes}`);
    }
    this.renewAfterMs = options.renewAfterMs ?? (this.expiresInMinutes * 60_000) / 3;
    this.releaseAfterIdleMs = options.releaseAfterIdleMs ?? 10_000;
    this.retryDelayMs = options.retryDelayMs ?? 5_000;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 5_000;
    // Renewals and delayed releases are both decided on this tick.
    this.tick = setInterval(() => this.sync(), Math.max(50, Math.min(this.renewAfterMs, this.releaseAfterIdleMs, 30_000) / 2));
    this.tick.unref();
  }

  attach(worker: Worker): this {
    // In no trace: the worker may say it is idle from a continuation of a run's span, which the retries (each timer set
    // from the last) would otherwise carry on, their log lines naming that run's trace.
    const onBusy = (busy: boolean) => context.with(ROOT_CONTEXT, () => this.setBusy(busy));
    worker.on('busy', onBusy);
    this.detach = () => worker.off('busy', onBusy);
    return this;
  }

  setBusy(busy: boolean): void {
    if (busy === this.busy) return;
    this.busy = busy;
    if (!busy) this.idleSince = Date.now();
    this.sync();
  }

  /** Whether the agent last confirmed protection on (undefined: unknown after a failure). */
  get protected(): boolean | undefined {
    return this.applied;
  }

  private wanted(): boolean {
    if (this.stopped) return false;
    return this.busy || (this.applied === true && Date.now() - this.idleSince < this.releaseAfterIdleMs);
  }

  /** Brings the agent's state to what is wanted; one call at a time, the latest wish wins. */
  private sync(): void {
    if (this.syncing) {
      this.again = true;
      return;
    }
    this.syncing = this.reconcile().finally(() => {
      this.syncing = undefined;
      if (this.again) {
        this.again = false;
        this.sync();
      }
    });
  }

  private async reconcile(): Promise<void> {
    const want = this.wanted();
    const renewalDue = want && this.applied === true && Date.now() - this.appliedAt >= this.renewAfterMs;
    if (want === this.applied && !renewalDue) return;
    try {
      await this.put(want);
      this.applied = want;
      this.appliedAt = Date.now();
      this.log.info({ protection: want, expires_in_minutes: want ? this.expiresInMinutes : undefined }, want
        ? 'task scale-in protection on'
        : 'task scale-in protection off');
      this.failing = false;
    } catch (error) {
      this.applied = undefined;
      if (!this.failing) this.log.warn({ err: error, protection: want }, 'could not set task scale-in protection; retrying');
      this.failing = true;
      if (!this.stopped && !this.retryTimer) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.sync();
        }, this.retryDelayMs);
        this.retryTimer.unref();
      }
    }
  }

  private async put(enabled: boolean): Promise<void> {
    const url = `${this.options.agentUri.replace(/\/+$/, '')}/task-protection/v1/state`;
    const body = enabled ? { ProtectionEnabled: true, ExpiresInMinutes: this.expiresInMinutes } : { ProtectionEnabled: false };
    const response = await fetch(url, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(this.requestTimeoutMs),
    });
    const text = await response.text();
    let parsed: { failure?: unknown; error?: unknown } = {};
    try {
      parsed = text ? (JSON.parse(text) as typeof parsed) : {};
    } catch {
      // A non-JSON body only matters when the status is an error, reported below.
    }
    // The agent reports refusals either with an error status or with a `failure`/`error` object in the body.
    if (!response.ok || parsed.failure || parsed.error) {
      throw new TaskProtectionError(
        `ECS agent refused ${enabled ? 'protection' : 'release'}: HTTP ${response.status} ${text.slice(0, 300)}`,
        response.status,
      );
    }
  }

  /** Releases the protection (best effort, one call) and stops. */
  async stop(): Promise<void> {
    this.detach();
    this.stopped = true;
    clearInterval(this.tick);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await this.syncing;
    if (this.applied !== false) await this.reconcile();
  }
}
