// Live progress of one mass-import run for `bulk-import local`: a bar with files, bytes, MB/s and ETA on a terminal,
// a plain line every few seconds otherwise (logs, pipes, CI).
import cliProgress from 'cli-progress';
import type { JobRow } from '../queue/types.js';
import { formatBytes, formatDuration } from './output.js';
import { sensibleEta } from './progress-rate.js';

export interface ImportFigures {
  phase: string;
  done: number;
  total: number;
  bytesDone: number;
  bytesTotal: number;
  bytesPerSecond: number | undefined;
  etaSeconds: number | undefined;
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === 'number' && Number.isFinite(value) ? value : fallback;
}

export function importFigures(job: JobRow): ImportFigures {
  const progress = job.progress ?? {};
  const eta = progress.etaSeconds;
  const rate = progress.bytesPerSecond;
  return {
    phase: typeof progress.phase === 'string' ? progress.phase : job.state,
    done: numberOr(progress.done, 0),
    total: numberOr(progress.total, 0),
    bytesDone: numberOr(progress.bytesDone, 0),
    bytesTotal: numberOr(progress.bytesTotal, 0),
    bytesPerSecond: typeof rate === 'number' ? rate : undefined,
    // null (no meaningful estimate yet) and absurd values show as "-".
    etaSeconds: typeof eta === 'number' ? sensibleEta(eta) : undefined,
  };
}

/** Megabytes (10^6 bytes) per second, the unit transfer tools print. */
export function formatMegabytesPerSecond(bytesPerSecond: number | undefined): string {
  return bytesPerSecond === undefined ? '-' : `${(bytesPerSecond / 1e6).toFixed(1)} MB/s`;
}

export interface ImportProgressView {
  update(job: JobRow): void;
  note(message: string): void;
  stop(): void;
}

class BarView implements ImportProgressView {
  private readonly bar: cliProgress.SingleBar;
  private started = false;

  constructor(private readonly out: NodeJS.WriteStream) {
    this.bar = new cliProgress.SingleBar(
      {
        stream: out,
        fps: 8,
        hideCursor: true,
        clearOnComplete: false,
        format: (options, params, payload: { text: string }) => {
          const size = options.barsize ?? 30;
          const filled = Math.round(Math.max(0, Math.min(1, params.progress)) * size);
          return `${'█'.repeat(filled)}${'░'.repeat(size - filled)} ${payload.text}`;
        },
        barsize: 30,
      },
      cliProgress.Presets.shades_classic,
    );
  }

  update(job: JobRow): void {
    const figures = importFigures(job);
    const text = figures.total === 0 ? `${figures.phase} …` :
      `${figures.done}/${figures.total} files  ${formatBytes(figures.bytesDone)}/${formatBytes(figures.bytesTotal)}  ` +
      `${formatMegabytesPerSecond(figures.bytesPerSecond)}  ETA ${figures.etaSeconds === undefined ? '-' : formatDuration(figures.etaSeconds * 1000)}  ${figures.phase}`;
    // The bar follows bytes (a big file moves it while it uploads), the files when there are no bytes to count.
    const [value, total] = figures.bytesTotal > 0 ? [figures.bytesDone, figures.bytesTotal] : [figures.done, figures.total];
    if (!this.started) {
      this.bar.start(Math.max(total, 1), value, { text });
      this.started = true;
      return;
    }
    this.bar.setTotal(Math.max(total, 1));
    this.bar.update(value, { text });
  }

  note(message: string): void {
    if (this.started) {
      this.bar.stop();
      this.started = false;
    }
    this.out.write(`${message}\n`);
  }

  stop(): void {
    if (this.started) this.bar.stop();
    this.started = false;
  }
}

class LineView implements ImportProgressView {
  private lastAt = 0;
  private lastLine = '';

  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly everyMs: number,
  ) {}

  update(job: JobRow): void {
    const figures = importFigures(job);
    const line = figures.total === 0 ? `${figures.phase} …` :
      `${figures.phase}: ${figures.done}/${figures.total} files, ${formatBytes(figures.bytesDone)} of ${formatBytes(figures.bytesTotal)}, ` +
      `${formatMegabytesPerSecond(figures.bytesPerSecond)}, ETA ${figures.etaSeconds === undefined ? '-' : formatDuration(figures.etaSeconds * 1000)}`;
    const now = Date.now();
    if (line === this.lastLine || now - this.lastAt < this.everyMs) return;
    this.lastAt = now;
    this.lastLine = line;
    this.out.write(`${new Date(now).toISOString()} ${line}\n`);
  }

  note(message: string): void {
    this.out.write(`${message}\n`);
  }

  stop(): void {}
}

/** A bar on a terminal, else a line at most every `everyMs`. */
export function createImportProgressView(out: NodeJS.WriteStream = process.stdout, everyMs = 2_000): ImportProgressView {
  return out.isTTY ? new BarView(out) : new LineView(out, everyMs);
}
