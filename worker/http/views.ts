// Runs as the API shows them: the run record (state, attempts, progress with rate and ETA, result, structured last
// error, timestamps, who started it, the history of actions) and the listing's shorter form.
import { progressCounts, sensibleEta } from '../cli/progress-rate.js';
import type { JobActionRecord, Resolution } from '../queue/job-actions.js';
import type { JobSummaryRow } from '../queue/operator.js';
import type { JobErrorRecord, JobRow } from '../queue/types.js';
import { internalErrorMessage, isInternalError, itemErrorMessage } from '../queue/visible-errors.js';
import { MASS_IMPORT_KIND } from '../handlers/kinds.js';
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

/** What a tenant sees in place of an operator's name (an API key's, a `cli:<user>` account's). */
export const OPERATOR_ACTOR = 'operator';

/**
 * The last error as a caller sees it: code, message, class, attempt, time and context; the stack stays in the logs and
 * `bulk-import show`. An operator (a key or session that sees every tenant) sees it whole and which worker failed
 * (host:pid, an internal address on Fargate). A tenant sees neither, and for an internal failure (a driver's or the
 * SDK's message may name hosts, addresses, tables) a plain sentence with its code in place of the message, and no
 * context.
 */
export function lastErrorView(error: JobErrorRecord | null, operator: boolean): LastErrorView | null {
  if (!error) return null;
  const { stack: _stack, worker, ...rest } = error;
  const shown = { ...rest, internal: isInternalError(error) };
  if (operator) return worker === undefined ? shown : { ...shown, worker };
  if (!shown.internal) return shown;
  // Its context is the internal failure's too (a bucket, a probe, the mount's path): the code and the sentence only.
  const { context: _context, ...plain } = shown;
  return { ...plain, message: internalErrorMessage(error.code) };
}

export type LastErrorView = Omit<JobErrorRecord, 'stack' | 'internal'> & { internal: boolean };

/** Who resolved a run as the caller may see it: only operators resolve (the API, the admin page, the CLI). */
export function resolvedByView(resolution: Pick<Resolution, 'by'>, operator: boolean): string {
  return operator ? resolution.by : OPERATOR_ACTOR;
}

/** Who submitted the run (its `submitted` action's actor) as the caller may see it; null when no action says. */
export function submitterView(actions: JobActionRecord[], operator: boolean): string | null {
  const submitted = actions.find((action) => action.action === 'submitted');
  return submitted ? actorView(submitted, operator) : null;
}

/** An actor's name as the caller may see it: a tenant sees an operator's action as {@link OPERATOR_ACTOR}. */
export function actorView(action: Pick<JobActionRecord, 'actor' | 'byOperator'>, operator: boolean): string {
  return operator || !action.byOperator ? action.actor : OPERATOR_ACTOR;
}

/** `operator`: the caller sees every tenant (an operator key or session); a tenant's view leaves out what is internal. */
export function jobSummaryView(job: JobSummaryRow, operator: boolean) {
  return {
    id: job.id,
    kind: job.kind,
    tenant: job.tenantId,
    state: job.state,
    attempts: job.attempts,
    maxAttempts: job.maxAttempts,
    progress: progressView(job),
    lastError: lastErrorView(job.lastError, operator),
    createdAt: iso(job.createdAt)!,
    startedAt: iso(job.startedAt),
    finishedAt: iso(job.finishedAt),
    updatedAt: iso(job.updatedAt)!,
  };
}

export function actionView(action: JobActionRecord, operator: boolean) {
  return { action: action.action, actor: actorView(action, operator), note: action.note, stateAfter: action.stateAfter, at: iso(action.at)! };
}

/**
 * A run's result as the caller may read it. A mass import's `unsafe` sample (its dry-run report) quotes each file's
 * failure as the walk wrote it — a link's target on the worker's file system included: a tenant reads each reason as
 * it reads a failed file's message (itemErrorMessage). Read-time, so reports stored before this rule are covered too.
 */
export function resultView(job: Pick<JobRow, 'kind' | 'result'>, operator: boolean): Record<string, unknown> | null {
  const result = job.result;
  const unsafe = result?.unsafe as { sample?: unknown } | undefined;
  if (operator || job.kind !== MASS_IMPORT_KIND || !result || !unsafe || !Array.isArray(unsafe.sample)) return result;
  const sample = (unsafe.sample as Array<Record<string, unknown>>).map((entry) =>
    typeof entry.code === 'string' && typeof entry.reason === 'string' ? { ...entry, reason: itemErrorMessage(entry.code, entry.reason, false) } : entry,
  );
  return { ...result, unsafe: { ...unsafe, sample } };
}

/** A run's own record; `operator` as for {@link jobSummaryView} (a tenant sees no operator's name either). */
export function jobDetailView(job: JobRow, extra: { resolution?: Resolution | null; actions?: JobActionRecord[] }, operator: boolean) {
  const actions = extra.actions ?? [];
  return {
    ...jobSummaryView(job, operator),
    priority: job.priority,
    dedupeKey: job.dedupeKey,
    payload: job.payload,
    result: resultView(job, operator),
    runAt: iso(job.runAt)!,
    cancelRequested: job.cancelRequestedAt !== null,
    outage: job.outageDependency && job.outageStartedAt ? { dependency: job.outageDependency, since: iso(job.outageStartedAt)! } : null,
    resolution: extra.resolution ? { by: resolvedByView(extra.resolution, operator), note: extra.resolution.note, at: iso(extra.resolution.at)! } : null,
    startedBy: submitterView(actions, operator),
    actions: actions.map((action) => actionView(action, operator)),
  };
}
