// A named task that runs every `intervalMs` (first run after a random fraction of the interval, so a fleet of
// workers started together does not run it in lockstep). A round that reports work left (`true`) is followed by the
// next one after CATCH_UP_DELAY_MS instead of a whole interval: a bounded round must not make a backlog wait.
// stop() waits for a run in progress.
import { setTimeout as sleep } from 'node:timers/promises';
import type { DatabaseStatusSink } from '../db/pool.js';
import type { Logger } from '../logger.js';

/** The pause between rounds while a task reports work left. */
export const CATCH_UP_DELAY_MS = 1_000;

/**
 * `true`: the round stopped at its bound with work left; run again soon. `'skipped'`: the round did not reach the
 * database (the task held off), so it proves nothing about it.
 */
export type RoundOutcome = boolean | void | 'skipped';

export class PeriodicService {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<boolean> | undefined;
  private stopped = false;

  constructor(
    readonly name: string,
    private readonly intervalMs: number,
    private readonly task: () => Promise<RoundOutcome>,
    private readonly log: Logger,
    /** Where a failure that is a database outage goes instead of an error line per run. */
    private readonly status?: DatabaseStatusSink,
  ) {}

  /** Starts the rounds; the first after `firstDelayMs` (default: a random fraction of the interval). */
  start(firstDelayMs = Math.floor(Math.random() * this.intervalMs)): void {
    this.stopped = false;
    this.schedule(firstDelayMs);
  }

  /** Runs one round now (also used by tests and by the CLI); true when it left work for another round. */
  async runOnce(): Promise<boolean> {
    if (this.running) return this.running;
    const startedAt = Date.now();
    this.running = this.task()
      .then((outcome) => {
        if (outcome !== 'skipped') this.status?.reportSuccess(startedAt);
        return outcome === true;
      })
      .catch((error: unknown) => {
        if (!this.status?.reportFailure(error, this.name, startedAt)) this.log.error({ err: error, service: this.name }, `${this.name} failed`);
        return false;
      })
      .finally(() => {
        this.running = undefined;
      });
    return this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.runOnce().then((more) => this.schedule(more ? Math.min(CATCH_UP_DELAY_MS, this.intervalMs) : this.intervalMs));
    }, delayMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
  }
}

/** The pause between two batches of one round, leaving room for the claim. */
const BATCH_PAUSE_MS = 20;

/**
 * A round of a batched task (retention, the archiver): `batch` until one does less than `batchSize` (nothing left) or
 * `batchesPerRound` have run, with a short pause between them. `batch` returns how many rows it did, or null to end
 * the round early with work left. `more` (the round's outcome) says whether the next round should follow soon.
 */
export async function runBatches(
  batchSize: number,
  batchesPerRound: number,
  batch: () => Promise<number | null>,
): Promise<{ total: number; more: boolean }> {
  let total = 0;
  for (let done = 0; done < batchesPerRound; done += 1) {
    const rows = await batch();
    if (rows === null) return { total, more: true };
    total += rows;
    if (rows < batchSize) return { total, more: false };
    if (done < batchesPerRound - 1) await sleep(BATCH_PAUSE_MS);
  }
  return { total, more: true };
}
