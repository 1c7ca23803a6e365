// The progress of a mass-import run as `bulk-import show/jobs/watch` display it: files and bytes done of total, the
// rate of this attempt and the time left. Counts start from the items table, so a resumed run continues its figures.
import type { ProgressReporter } from '../handlers/types.js';
import type { ItemTotals } from './import-items.js';

export type ImportPhase = 'planning' | 'importing' | 'finished';
export type ItemOutcome = 'done' | 'skipped' | 'failed';

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
  private extra: Record<string, unknown> = {};

  constructor(
    totals: ItemTotals,
    private readonly reporter: ProgressReporter,
    private readonly now: () => number = Date.now,
  ) {
    this.filesTotal = totals.files;
    this.bytesTotal = totals.bytes;
    this.imported = totals.done;
    this.skipped = totals.skipped;
    this.failed = totals.failed;
    this.bytesDone = totals.bytesDone + totals.bytesSkipped + totals.bytesFailed;
    this.startedAt = this.now();
  }

  /** One item finished. `sizeDelta` corrects the total when the file's size changed since the plan. */
  record(outcome: ItemOutcome, bytes: number, sizeDelta = 0): void {
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

  snapshot(phase: ImportPhase): Record<string, unknown> {
    const seconds = Math.max(this.elapsedMs / 1000, 0.001);
    const done = this.imported + this.skipped + this.failed;
    const bytesPerSecond = this.bytesThisAttempt / seconds;
    const filesPerSecond = this.filesThisAttempt / seconds;
    const bytesLeft = Math.max(0, this.bytesTotal - this.bytesDone);
    const filesLeft = Math.max(0, this.filesTotal - done);
    let etaSeconds: number | null = null;
    if (phase === 'finished' || filesLeft === 0) etaSeconds = 0;
    else if (bytesPerSecond > 0 && bytesLeft > 0) etaSeconds = Math.ceil(bytesLeft / bytesPerSecond);
    else if (filesPerSecond > 0) etaSeconds = Math.ceil(filesLeft / filesPerSecond);
    return {
      phase,
      done,
      total: this.filesTotal,
      filesImported: this.imported,
      filesSkipped: this.skipped,
      filesFailed: this.failed,
      bytesDone: this.bytesDone,
      bytesTotal: this.bytesTotal,
      filesPerSecond: Math.round(filesPerSecond * 10) / 10,
      bytesPerSecond: Math.round(bytesPerSecond),
      etaSeconds,
      ...this.extra,
    };
  }

  publish(phase: ImportPhase): void {
    this.reporter.update(this.snapshot(phase));
  }
}
