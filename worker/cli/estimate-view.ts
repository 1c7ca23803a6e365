// The start and finish estimate of a run (queue/estimate.ts) in one line, for `enqueue`, `show` and `watch`.
import type { RunEstimate } from '../queue/estimate.js';
import { formatDuration } from './output.js';

const BASIS: Record<RunEstimate['basis'], string> = {
  leases: 'from the runs leased now',
  history: 'from the last finished runs',
  none: 'no run of this kind measured yet',
};

function at(time: Date, now: number): string {
  const wait = time.getTime() - now;
  return `${time.toISOString()} (${wait <= 1000 ? 'now' : `in ${formatDuration(wait)}`})`;
}

/** E.g. "start ~2026-12-05T10:42:03.000Z (in 2m 10s), finish ~… — 1204 ahead, 9.3 runs/s from the runs leased now, 2 workers". */
export function describeEstimate(estimate: RunEstimate | null, now = Date.now()): string | undefined {
  if (!estimate) return undefined;
  const start = estimate.startAt ? `start ~${at(estimate.startAt, now)}` : 'start unknown';
  const finish = estimate.finishAt ? `, finish ~${at(estimate.finishAt, now)}` : '';
  const rate = estimate.runsPerSecond === null ? BASIS.none : `${estimate.runsPerSecond.toFixed(1)} runs/s ${BASIS[estimate.basis]}`;
  const workers = `${estimate.workers} worker${estimate.workers === 1 ? '' : 's'} holding leases`;
  return `${start}${finish} — ${estimate.ahead} ahead, ${rate}, ${workers}`;
}
