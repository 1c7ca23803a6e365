// How `bulk-import watch` shows runs: live progress bars on a terminal, one plain line per change otherwise (logs,
// pipes), or JSON lines with --json.
import cliProgress from 'cli-progress';
import { defaultRegistry } from '../handlers/registry.js';
import type { JobRow } from '../queue/types.js';
import { formatBytes, formatDuration, terminalSafe } from './output.js';
import { formatRate, type ProgressFigures } from './progress-rate.js';

export interface WatchView {
  /** A run's latest state and progress (called every refresh). */
  update(job: JobRow, figures: ProgressFigures): void;
  /** The run has left `queued`/`running`: show its outcome once. */
  finish(job: JobRow, figures: ProgressFigures): void;
  /** Something to say that is not about one run. */
  note(message: string): void;
  close(): void;
}

function counter(figures: ProgressFigures): string {
  if (figures.done === undefined) return '';
  if (figures.total === undefined) return String(figures.done);
  // Runs that report bytes (mass imports) show them too: a big file moves them while the file counter cannot.
  const bytes =
    figures.bytesTotal !== undefined && figures.bytesTotal > 0 ? ` ${formatBytes(figures.bytesDone ?? 0)}/${formatBytes(figures.bytesTotal)}` : '';
  return `${figures.done}/${figures.total}${bytes}${figures.percent === undefined ? '' : ` (${Math.floor(figures.percent)}%)`}`;
}

function eta(figures: ProgressFigures): string {
  return figures.etaSeconds === undefined ? '-' : formatDuration(figures.etaSeconds * 1000);
}

function outcomeLine(job: JobRow): string {
  const took = job.startedAt && job.finishedAt ? ` after ${formatDuration(job.finishedAt.getTime() - job.startedAt.getTime())}` : '';
  return `job ${job.id} ${job.kind} ${job.state}${took}${outcomeReason(job)}`;
}

/**
 * Why a run ended as it did. Its last error is the reason of a failed or dead run only: a partial or canceled run may
 * carry one of an earlier attempt that was recovered (a lease that expired, an outage), which is not why it ended.
 */
function outcomeReason(job: JobRow): string {
  // The message may hold what others wrote (a file name, a row): shown, not obeyed, by the terminal.
  if ((job.state === 'failed' || job.state === 'dead') && job.lastError) return ` — ${terminalSafe(`${job.lastError.code}: ${job.lastError.message}`)}`;
  if (job.state === 'partial') {
    // Kinds that record failed items or rows list them (`bulk-import errors`, through the handler's listErrors); a
    // partial backfill failed none (rows were left unfilled).
    return defaultRegistry().get(job.kind)?.listErrors !== undefined
      ? ` — some of its items or rows failed: bulk-import errors ${job.id}`
      : ` — it left work undone: bulk-import show ${job.id} says what`;
  }
  return '';
}

/** Plain lines: one when a run's state or counter changes, one when it ends. */
export class LineView implements WatchView {
  private readonly last = new Map<number, string>();

  constructor(private readonly out: NodeJS.WritableStream = process.stdout) {}

  update(job: JobRow, figures: ProgressFigures): void {
    const phase = terminalSafe(figures.phase ?? '');
    const state = `${job.state} ${counter(figures)} ${phase}`;
    if (this.last.get(job.id) === state) return;
    this.last.set(job.id, state);
    const parts = [`job ${job.id}`, job.kind, job.state, counter(figures), phase];
    if (job.state === 'running') parts.push(`rate ${formatRate(figures.ratePerSecond)}`, `eta ${eta(figures)}`);
    this.out.write(`${new Date().toISOString()} ${parts.filter(Boolean).join('  ')}\n`);
  }

  finish(job: JobRow): void {
    this.last.delete(job.id);
    this.out.write(`${new Date().toISOString()} ${outcomeLine(job)}\n`);
  }

  note(message: string): void {
    this.out.write(`${new Date().toISOString()} ${message}\n`);
  }

  close(): void {}
}

/** JSON lines: one object per run per refresh in which it changed, and one `final` object when it ends. */
export class JsonLineView implements WatchView {
  private readonly last = new Map<number, string>();

  constructor(private readonly out: NodeJS.WritableStream = process.stdout) {}

  private write(value: Record<string, unknown>): void {
    this.out.write(`${JSON.stringify({ at: new Date().toISOString(), ...value })}\n`);
  }

  update(job: JobRow, figures: ProgressFigures): void {
    const line = { id: job.id, kind: job.kind, state: job.state, ...figures, progress: job.progress };
    const key = JSON.stringify([job.state, job.progress]);
    if (this.last.get(job.id) === key) return;
    this.last.set(job.id, key);
    this.write(line);
  }

  finish(job: JobRow, figures: ProgressFigures): void {
    this.last.delete(job.id);
    this.write({ id: job.id, kind: job.kind, state: job.state, final: true, ...figures, result: job.result, lastError: job.lastError });
  }

  note(message: string): void {
    this.write({ note: message });
  }

  close(): void {}
}

/** Live bars on a terminal: one per running run, with counter, rate and ETA; outcomes scroll above them. */
export class BarView implements WatchView {
  private readonly bars = new Map<number, cliProgress.SingleBar>();
  private readonly multibar: cliProgress.MultiBar;

  constructor(private readonly out: NodeJS.WritableStream = process.stdout) {
    this.multibar = new cliProgress.MultiBar(
      {
        stream: out,
        fps: 5,
        hideCursor: true,
        clearOnComplete: false,
        emptyOnZero: true,
        format: (options, params, payload: { label: string; counter: string; rate: string; eta: string; phase: string }) => {
          const size = options.barsize ?? 30;
          const filled = Math.round(Math.max(0, Math.min(1, params.progress)) * size);
          const bar = payload.counter ? `${'█'.repeat(filled)}${'░'.repeat(size - filled)}` : '·'.repeat(size);
          return `${payload.label} ${bar} ${payload.counter.padEnd(22)} ${payload.rate.padStart(8)}  ETA ${payload.eta.padEnd(6)} ${payload.phase}`;
        },
        barsize: 30,
      },
      cliProgress.Presets.shades_classic,
    );
  }

  update(job: JobRow, figures: ProgressFigures): void {
    const payload = {
      label: `${String(job.id).padStart(6)} ${job.kind.padEnd(14).slice(0, 14)} ${job.state.padEnd(8)}`,
      counter: counter(figures),
      rate: job.state === 'running' ? formatRate(figures.ratePerSecond) : '',
      eta: job.state === 'running' ? eta(figures) : '',
      phase: terminalSafe(figures.phase ?? ''),
    };
    // The bar follows bytes when the run reports them, else its counter.
    const inBytes = figures.bytesTotal !== undefined && figures.bytesTotal > 0;
    const total = inBytes ? figures.bytesTotal! : (figures.total ?? 0);
    const value = inBytes ? (figures.bytesDone ?? 0) : (figures.done ?? 0);
    const bar = this.bars.get(job.id);
    if (!bar) {
      this.bars.set(job.id, this.multibar.create(total, value, payload));
      return;
    }
    if (bar.getTotal() !== total) bar.setTotal(total);
    bar.update(value, payload);
  }

  finish(job: JobRow): void {
    const bar = this.bars.get(job.id);
    if (bar) {
      this.multibar.remove(bar);
      this.bars.delete(job.id);
    }
    this.print(outcomeLine(job));
  }

  note(message: string): void {
    this.print(message);
  }

  /** Above the bars while they are drawn (flushed at once: the command may end right after), else plainly. */
  private print(line: string): void {
    if (!this.multibar.isActive) {
      this.out.write(`${line}\n`);
      return;
    }
    this.multibar.log(`${line}\n`);
    this.multibar.update();
  }

  close(): void {
    this.multibar.stop();
  }
}
