// Rate and ETA of a run's progress, as `watch` shows them: from the handler's own figures when it reports them
// (`rate`, `etaSeconds`), else measured from how `done` moved over the last half minute of samples. A handler that
// reports `etaSeconds: null` means "no meaningful estimate yet" (a mass import whose one big file has just started):
// no ETA is made up from the item counter then. An ETA beyond MAX_ETA_SECONDS is no estimate and is not shown.
// Runs that report `bytesDone`/`bytesTotal` (mass imports) are measured in bytes: the percentage follows them, so a
// big file moves the figures while it uploads.

/** Longer than this, an ETA only says the rate is near zero. */
export const MAX_ETA_SECONDS = 30 * 24 * 3600;

/** The ETA to show, or undefined when there is none worth showing (not finite, negative, or absurdly long). */
export function sensibleEta(seconds: number | undefined | null): number | undefined {
  if (seconds === undefined || seconds === null || !Number.isFinite(seconds) || seconds < 0 || seconds > MAX_ETA_SECONDS) return undefined;
  return seconds;
}

export interface ProgressFigures {
  done: number | undefined;
  total: number | undefined;
  /** 0–100, when done and total are known. */
  percent: number | undefined;
  /** Items (or rows) per second. */
  ratePerSecond: number | undefined;
  etaSeconds: number | undefined;
  phase: string | undefined;
  /** Bytes done and in all, when the run reports them (mass imports). */
  bytesDone?: number | undefined;
  bytesTotal?: number | undefined;
}

function finite(value: unknown): number | undefined {
  const number = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  return Number.isFinite(number) ? number : undefined;
}

/** The main counter of a progress object: `done`/`total` (the handler contract), or `itemsDone`/`itemsTotal`. */
export function progressCounts(progress: Record<string, unknown> | null): { done: number | undefined; total: number | undefined } {
  if (!progress) return { done: undefined, total: undefined };
  return { done: finite(progress.done ?? progress.itemsDone), total: finite(progress.total ?? progress.itemsTotal) };
}

export class ProgressRate {
  private samples: Array<{ at: number; done: number }> = [];

  constructor(private readonly windowMs = 30_000) {}

  observe(progress: Record<string, unknown> | null, at = Date.now()): ProgressFigures {
    const { done, total } = progressCounts(progress);
    const phase = typeof progress?.phase === 'string' ? progress.phase : undefined;
    if (done !== undefined) {
      // A resumed run may restart its counter lower: start measuring again.
      if (this.samples.length > 0 && done < this.samples[this.samples.length - 1]!.done) this.samples = [];
      this.samples.push({ at, done });
      while (this.samples.length > 2 && at - this.samples[0]!.at > this.windowMs) this.samples.shift();
    }
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const measured = first && last && last.at > first.at ? ((last.done - first.done) * 1000) / (last.at - first.at) : undefined;
    const ratePerSecond = finite(progress?.rate) ?? measured;
    const remaining = done !== undefined && total !== undefined ? Math.max(0, total - done) : undefined;
    const ownEta = progress !== null && Object.hasOwn(progress, 'etaSeconds');
    const etaSeconds = sensibleEta(
      ownEta
        ? finite(progress.etaSeconds)
        : remaining === 0
          ? 0
          : remaining !== undefined && ratePerSecond && ratePerSecond > 0
            ? remaining / ratePerSecond
            : undefined,
    );
    const bytesDone = finite(progress?.bytesDone);
    const bytesTotal = finite(progress?.bytesTotal);
    const percent =
      bytesDone !== undefined && bytesTotal !== undefined && bytesTotal > 0 && remaining !== 0
        ? Math.min(100, (100 * bytesDone) / bytesTotal)
        : done !== undefined && total !== undefined && total > 0
          ? Math.min(100, (100 * done) / total)
          : undefined;
    return { done, total, percent, ratePerSecond, etaSeconds, phase, ...(bytesTotal !== undefined ? { bytesDone, bytesTotal } : {}) };
  }
}

/** "12.5/s", "0.3/s", "1.2k/s". */
export function formatRate(ratePerSecond: number | undefined): string {
  if (ratePerSecond === undefined) return '-';
  if (ratePerSecond >= 1000) return `${(ratePerSecond / 1000).toFixed(1)}k/s`;
  return `${ratePerSecond.toFixed(ratePerSecond >= 100 ? 0 : 1)}/s`;
}
