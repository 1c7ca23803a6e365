// Runs as the API shows them: the run record (state, attempts, progress with rate and ETA, result, structured last
// error, timestamps, who started it, the history of actions) and the listing's shorter form.
import { progressCounts, sensibleEta } from '../cli/progress-rate.js';
import type { JobActionRecord, Resolution } from '../queue/job-actions.js';
import type { JobSummaryRow } from '../queue/operator.js';
import type { JobRow } from '../queue/types.js';
import { isoTime } from './iso-time.js';

const iso = (date: Date | null | undefined): string | null => (date ? isoTime(date) : null);

function finite(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

export interface ProgressView {
  done: number | null;
  total: number | null;
  percent: number | null;
  phase: string | null;
  /** Items or rows per second: the handler's own figure, else the mean since the run started. */
  ratePerSecond: number | null;
  etaSeconds: number | null;
  /** Everything the handler reports (bytes, per-phase counters …). */
  details: Record<string, unknown>;
}

export function progressView(job: Pick<JobRow, 'progress' | 'startedAt' | 'state'>, now = Date.now()): ProgressView | null {
  const progress = job.progress;
  if (!progress) return null;
  const { done, total } = progressCounts(progress);
  const elapsedSeconds = job.startedAt ? (now - job.startedAt.getTime()) / 1000 : 0;
  const mean = done !== undefined && job.state === 'running' && elapsedSeconds >= 1 ? done / elapsedSeconds : undefined;
  const rate = finite(progress.rate) ?? mean;
  const remaining = done !== undefined && total !== undefined ? Math.max(0, total - done) : undefined;
  const eta = Object.hasOwn(progress, 'etaSeconds')
    ? finite(progress.etaSeconds)
    : remaining === 0
      ? 0
      : remaining !== undefined && rate !== undefined && rate > 0
        ? remaining / rate
        : undefined;
  const bytesDone = finite(progress.bytesDone);
  const bytesTotal = finite(progress.bytesTotal);
  const percent =
    bytesDone !== undefined && bytesTotal !== undefined && bytesTotal > 0
      ? Math.min(100, (100 * bytesDone) / bytesTotal)
      : done !== undefined && total !== undefined && total > 0
        ? Math.min(100, (100 * done) / total)
        : undefined;
  return {
    done: done ?? null,
    total: total ?? null,
    percent: percent === undefined ? null : Math.round(percent * 10) / 10,
    phase: typeof progress.phase === 'string' ? progress.phase : null,
    ratePerSecond: rate === undefined ? null : Math.round(rate * 100) / 100,
    etaSeconds: job.state === 'running' ? (sensibleEta(eta) ?? null) : null,
    details: progress,
  };
}

/**
 * The last error as callers see it: code, message, class, attempt, time and context. The stack stays in the logs and
 * `bulk-import show`; the worker that failed (host:pid, an internal address on Fargate) only for operators, in a
 * run's own record (listings and event streams are the same for every caller).
 */
function lastErrorView(job: Pick<JobRow, 'lastError'>, withWorker = false) {
  if (!job.lastError) return null;
  const { stack: _stack, worker, ...error } = job.lastError;
  return withWorker && worker !== undefined ? { ...error, worker } : error;
}

export function jobSummaryView(job: JobSummaryRow) {
  return {
    id: job.id,
    kind: job.kind,
    tenant: job.tenantId,
    state: job.state,
    attempts: job.attempts,
    maxAttempts: job.maxAttempts,
    progress: progressView(job),
    lastError: lastErrorView(job),
    createdAt: iso(job.createdAt)!,
    startedAt: iso(job.startedAt),
    finishedAt: iso(job.finishedAt),
    updatedAt: iso(job.updatedAt)!,
  };
}

export function actionView(action: JobActionRecord) {
  return { action: action.action, actor: action.actor, note: action.note, stateAfter: action.stateAfter, at: iso(action.at)! };
}

/** `operator`: the caller sees every tenant (an operator key), so it also sees which worker the last error came from. */
export function jobDetailView(job: JobRow, extra: { resolution?: Resolution | null; actions?: JobActionRecord[] } = {}, operator = false) {
  const actions = extra.actions ?? [];
  return {
    ...jobSummaryView(job),
    lastError: lastErrorView(job, operator),
    priority: job.priority,
    dedupeKey: job.dedupeKey,
    payload: job.payload,
    result: job.result,
    runAt: iso(job.runAt)!,
    cancelRequested: job.cancelRequestedAt !== null,
    outage: job.outageDependency && job.outageStartedAt ? { dependency: job.outageDependency, since: iso(job.outageStartedAt)! } : null,
    resolution: extra.resolution ? { by: extra.resolution.by, note: extra.resolution.note, at: iso(extra.resolution.at)! } : null,
    startedBy: actions.find((action) => action.action === 'submitted')?.actor ?? null,
    actions: actions.map(actionView),
  };
}
