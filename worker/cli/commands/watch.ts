// `watch [<id>]`: follow running runs live (bars with rate and ETA on a terminal, plain lines otherwise, JSON lines
// with --json). With an id it exits when that run ends, and its exit code says how it ended.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import type { Pool } from '../../db/pool.js';
import { estimateRun } from '../../queue/estimate.js';
import { getJob, listJobs, requireJob } from '../../queue/operator.js';
import type { JobRow, JobState } from '../../queue/types.js';
import { withDatabase } from '../context.js';
import { describeEstimate } from '../estimate-view.js';
import { integerIn, parseJobId, parseList } from '../parse.js';
import { ProgressRate } from '../progress-rate.js';
import { BarView, JsonLineView, LineView, type WatchView } from '../watch-views.js';

/** Exit code of `watch <id>` per final state (1 stays "the command itself failed", e.g. no such job). */
export const WATCH_EXIT_CODES: Partial<Record<JobState, number>> = {
  succeeded: 0,
  review_ready: 0,
  partial: 3,
  failed: 4,
  dead: 5,
  canceled: 6,
};

const FOLLOWED: readonly JobState[] = ['queued', 'running'];
const ESTIMATE_REFRESH_MS = 5_000;

interface WatchOptions {
  interval: number;
  kind?: string[];
  json?: boolean;
}

export function registerWatchCommand(program: Command): void {
  program
    .command('watch [id]')
    .description(
      'follow running jobs live: progress, rate, ETA. With an id, exit when that job ends: 0 succeeded or ' +
        'review_ready, 3 partial, 4 failed, 5 dead, 6 canceled. Without, follow every running job until none is running or queued',
    )
    .option('--interval <ms>', 'refresh period, 100-3600000', integerIn(100, 3_600_000), 1000)
    .option('--kind <list>', 'without an id: only these kinds', parseList)
    .option('--json', 'JSON lines: one per change of a job, and a final one when it ends')
    .action(async (id: string | undefined, options: WatchOptions) => {
      const jobId = id === undefined ? undefined : parseJobId(id);
      const view: WatchView = options.json ? new JsonLineView() : process.stdout.isTTY ? new BarView() : new LineView();
      // Ctrl-C ends the wait between two refreshes at once (an interval may be an hour).
      const interrupt = new AbortController();
      const onInterrupt = () => interrupt.abort();
      process.once('SIGINT', onInterrupt);
      try {
        const code = await withDatabase((pool) =>
          jobId === undefined ? watchAll(pool, view, options, interrupt.signal) : watchOne(pool, jobId, view, options, interrupt.signal),
        );
        process.exitCode = interrupt.signal.aborted ? 130 : code;
      } finally {
        process.off('SIGINT', onInterrupt);
        view.close();
      }
    });
}

async function watchOne(pool: Pool, id: number, view: WatchView, options: WatchOptions, interrupted: AbortSignal): Promise<number> {
  const rate = new ProgressRate();
  let estimateNote: string | undefined;
  let estimatedAt = 0;
  for (;;) {
    const job = await requireJob(pool, id);
    // While the run waits: when it should start, refreshed every 5 s.
    if (job.state === 'queued' && Date.now() - estimatedAt >= ESTIMATE_REFRESH_MS) {
      estimatedAt = Date.now();
      const note = `job ${id} queued: ${describeEstimate(await estimateRun(pool, job)) ?? 'no estimate'}`;
      if (note !== estimateNote) view.note(note);
      estimateNote = note;
    }
    const figures = rate.observe(job.progress);
    if (!FOLLOWED.includes(job.state)) {
      view.finish(job, figures);
      return WATCH_EXIT_CODES[job.state] ?? 1;
    }
    view.update(job, figures);
    if (!(await pause(options.interval, interrupted))) return 130;
  }
}

async function watchAll(pool: Pool, view: WatchView, options: WatchOptions, interrupted: AbortSignal): Promise<number> {
  const followed = new Map<number, ProgressRate>();
  const kinds = options.kind ? { kinds: options.kind } : {};
  let saidWaiting = false;
  for (;;) {
    const running = await listJobs(pool, { states: ['running'], limit: 200, ...kinds });
    for (const job of running) if (!followed.has(job.id)) followed.set(job.id, new ProgressRate());
    const current = new Map(running.map((job) => [job.id, job]));
    for (const [id, rate] of followed) {
      const job: JobRow | null = current.get(id) ?? (await getJob(pool, id));
      if (!job) {
        view.note(`job ${id} no longer exists (deleted)`);
        followed.delete(id);
      } else if (FOLLOWED.includes(job.state)) view.update(job, rate.observe(job.progress));
      else {
        view.finish(job, rate.observe(job.progress));
        followed.delete(id);
      }
    }
    if (followed.size === 0) {
      const queued = await listJobs(pool, { states: ['queued'], limit: 1, ...kinds });
      if (queued.length === 0) {
        view.note('No job is running or queued.');
        return 0;
      }
      if (!saidWaiting) view.note('Jobs are queued but none is running: waiting for a worker to claim them.');
      saidWaiting = true;
    } else saidWaiting = false;
    if (!(await pause(options.interval, interrupted))) return 130;
  }
}

/** Waits `ms` between two refreshes; false when interrupted (before or during the wait). */
async function pause(ms: number, interrupted: AbortSignal): Promise<boolean> {
  if (interrupted.aborted) return false;
  await sleep(ms, undefined, { signal: interrupted }).catch(() => {});
  return !interrupted.aborted;
}
