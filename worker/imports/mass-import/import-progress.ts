// The progress of a mass-import run as `bulk-import show/jobs/watch` display it: files and bytes done of total, the
// rate of this attempt and the time left. Counts start from the items table, so a resumed run continues its figures.
// `bytesDone` moves while a file uploads: the bytes of the files under way (parts S3 acknowledged, or bytes read for
// a single PUT) are added to those of the files already recorded. A file's in-flight bytes start again from 0 when it
// is tried again and are replaced by its size once its outcome is recorded, so nothing is counted twice.
// The ETA is given only once it means something (importEtaSeconds): never before ETA_MIN_ELAPSED_MS of this attempt
// and a minimum of bytes moved, never above ETA_MAX_SECONDS; else it is null and the views show "-".
import { jobProgress, type JobProgress } from '../../handlers/progress.js';
import type { ProgressReporter } from '../../handlers/types.js';
import type { ItemTotals } from './items-table.js';
import type { ErrorClass } from '../../queue/types.js';

export type ImportPhase = 'planning' | 'importing' | 'finished';
export type ItemOutcome = 'done' | 'skipped' | 'failed';

/** Before this much of an attempt has passed, its rate says too little to give a time left. */
export const ETA_MIN_ELAPSED_MS = 10_000;
/** Nor before this many bytes moved (or 1 % of the run's bytes, if less): one small file says nothing about a big one. */
export const ETA_MIN_BYTES = 1024 * 1024;
/** A longer ETA is no estimate (a rate near zero): null, shown as "-". */
export const ETA_MAX_SECONDS = 30 * 24 * 3600;

export interface EtaInput {
  /** Time since this attempt started importing. */
  elapsedMs: number;
  /** Bytes this attempt moved, in-flight bytes included. */
  bytesMoved: number;
  bytesLeft: number;
  bytesTotal: number;
  /** Files this attempt finished. */
  filesMoved: number;
  filesLeft: number;
}

/** Seconds left at this attempt's average rate, or null when that would not be a meaningful estimate. */
export function importEtaSeconds(input: EtaInput): number | null {
  if (input.filesLeft <= 0) return 0;
  if (input.elapsedMs < ETA_MIN_ELAPSED_MS) return null;
  const seconds = input.elapsedMs / 1000;
  let eta: number;
  if (input.bytesLeft > 0) {
    if (input.bytesMoved <= 0 || input.bytesMoved < Math.min(ETA_MIN_BYTES, input.bytesTotal / 100)) return null;
    eta = input.bytesLeft / (input.bytesMoved / seconds);
  } else {
    // Only empty files are left: their count is what takes time.
    if (input.filesMoved <= 0) return null;
    eta = input.filesLeft / (input.filesMoved / seconds);
  }
  if (!Number.isFinite(eta)) return null;
  const rounded = Math.ceil(eta);
  return rounded <= ETA_MAX_SECONDS ? rounded : null;
}

export class ImportProgress {
  private filesTotal: number;
  private bytesTotal: number;
  private imported: number;
  private skipped: number;
  private failed: number;
  private bytesDone: number;
  private readonly startedAt: number;
  private filesThisAttempt = 0;
  private bytesThisAttempt = 0;
  private bytesImportedThisAttempt = 0;
  /** Bytes moved so far by the current try of each file under way, by item number. */
  private readonly inFlight = new Map<number, number>();
  private extra: Record<string, unknown> = {};

  constructor(
    totals: ItemTotals,
    private readonly reporter: ProgressReporter,
    private readonly now: () => number = Date.now,
    /**
     * The run has attempts left: a file that fails transiently (S3 or the share away after its retries) will be tried
     * again by the next attempt, which puts it back to pending. It is not counted done (nor failed) meanwhile, so the
     * figures never drop between attempts.
     */
    private readonly transientFailuresRetried = false,
  ) {
    this.filesTotal = totals.files;
    this.bytesTotal = totals.bytes;
    this.imported = totals.done;
    this.skipped = totals.skipped;
    this.failed = totals.failed;
    this.bytesDone = totals.bytesDone + totals.bytesSkipped + totals.bytesFailed;
    this.startedAt = this.now();
  }

  /** The current try of an item has moved this many bytes (0 when a try starts). */
  transferring(itemNo: number, bytes: number): void {
    this.inFlight.set(itemNo, bytes);
  }

  /** The item no longer moves bytes (stopped, or recorded). */
  settle(itemNo: number): void {
    this.inFlight.delete(itemNo);
  }

  /**
   * One item finished. `sizeDelta` corrects the total when the file's size changed since the plan; its in-flight
   * bytes are replaced by `bytes`.
   */
  record(outcome: ItemOutcome, bytes: number, sizeDelta = 0, itemNo?: number, errorClass?: ErrorClass): void {
    if (itemNo !== undefined) this.settle(itemNo);
    if (outcome === 'failed' && errorClass === 'transient' && this.transientFailuresRetried) {
      this.bytesTotal += sizeDelta;
      return;
    }
    if (outcome === 'done') this.imported += 1;
    else if (outcome === 'skipped') this.skipped += 1;
    else this.failed += 1;
    this.bytesTotal += sizeDelta;
    this.bytesDone += bytes;
    this.filesThisAttempt += 1;
    this.bytesThisAttempt += bytes;
    if (outcome === 'done') this.bytesImportedThisAttempt += bytes;
  }

  /** Other figures to show with the progress (concurrency, throttling). */
  annotate(extra: Record<string, unknown>): void {
    this.extra = { ...this.extra, ...extra };
  }

  get elapsedMs(): number {
    return this.now() - this.startedAt;
  }

  /** What this attempt of the run did (a resumed run's earlier attempts are in the totals, not here). */
  thisAttempt(): { seconds: number; filesProcessed: number; bytesProcessed: number; bytesImported: number; importedBytesPerSecond: number } {
    const seconds = this.elapsedMs / 1000;
    return {
      seconds: Math.round(seconds * 10) / 10,
      filesProcessed: this.filesThisAttempt,
      bytesProcessed: this.bytesThisAttempt,
      bytesImported: this.bytesImportedThisAttempt,
      importedBytesPerSecond: Math.round(this.bytesImportedThisAttempt / Math.max(seconds, 0.001)),
    };
  }

  snapshot(phase: ImportPhase): JobProgress {
    const elapsedMs = this.elapsedMs;
    const seconds = Math.max(elapsedMs / 1000, 0.001);
    const done = this.imported + this.skipped + this.failed;
    let inFlight = 0;
    for (const bytes of this.inFlight.values()) inFlight += bytes;
    // Never past the total (a file that grew under way is corrected by its record).
    const bytesDone = Math.min(this.bytesDone + inFlight, Math.max(this.bytesTotal, this.bytesDone));
    const bytesMoved = this.bytesThisAttempt + (bytesDone - this.bytesDone);
    const bytesPerSecond = bytesMoved / seconds;
    const filesPerSecond = this.filesThisAttempt / seconds;
    const filesLeft = Math.max(0, this.filesTotal - done);
    const etaSeconds =
      phase === 'finished'
        ? 0
        : importEtaSeconds({
            elapsedMs,
            bytesMoved,
            bytesLeft: Math.max(0, this.bytesTotal - bytesDone),
            bytesTotal: this.bytesTotal,
            filesMoved: this.filesThisAttempt,
            filesLeft,
          });
    return jobProgress(phase, done, this.filesTotal, {
      filesImported: this.imported,
      filesSkipped: this.skipped,
      filesFailed: this.failed,
      bytesDone,
      bytesTotal: this.bytesTotal,
      filesPerSecond: Math.round(filesPerSecond * 10) / 10,
      bytesPerSecond: Math.round(bytesPerSecond),
      etaSeconds,
      ...this.extra,
    });
  }

  publish(phase: ImportPhase): void {
    this.reporter.update(this.snapshot(phase));
  }

  /** Writes the latest published figures now (a run given back stores no progress with its outcome). */
  flush(): Promise<void> {
    return this.reporter.flush();
  }
}
