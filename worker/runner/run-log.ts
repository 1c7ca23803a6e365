// The info lines of an attempt, whatever its kind and outcome. `job finished` is the one line every attempt writes:
// its outcome, duration and the run's counts. `job started` is written at info only by an attempt still running after
// STARTED_LINE_AFTER_MS, so a long import shows in the log while it runs and a queue of short jobs costs one line per
// job, not two (at debug every attempt writes it at once). The run's logger already carries job_id, kind, attempt and
// tenant_id, and (with tracing on) trace_id and span_id of the run span.
import type { Logger } from '../logger.js';
import { metricValues, type JobMetrics } from '../handlers/metrics.js';
import type { ClaimedJob } from '../queue/types.js';
import type { AttemptEnd } from './attempt-end.js';

/** How long an attempt runs before it writes `job started` at info. */
export const STARTED_LINE_AFTER_MS = 1_000;

/** Writes (or schedules) `job started`; call the returned function when the attempt ends. */
export function logJobStarted(log: Logger, job: ClaimedJob): () => void {
  const fields = { max_attempts: job.maxAttempts, resumed: job.progress !== null };
  if (log.isLevelEnabled('debug')) {
    log.debug(fields, 'job started');
    return doNothing;
  }
  if (!log.isLevelEnabled('info')) return doNothing;
  const startedAt = Date.now();
  // The timer keeps the async context: with tracing on, the line still carries the run span.
  const timer = setTimeout(() => log.info({ ...fields, started_at: new Date(startedAt).toISOString() }, 'job started'), STARTED_LINE_AFTER_MS);
  timer.unref();
  return () => clearTimeout(timer);
}

const doNothing = (): void => {};

/**
 * `counts`: the figures the handler reported for the run (Files, Bytes, Rows … as in its CloudWatch metrics); for an
 * attempt that ended without an outcome, the numbers of its last saved progress (done, total, failed …).
 */
export function logJobFinished(
  log: Logger,
  event: { state: AttemptEnd; durationMs: number; metrics?: JobMetrics | undefined },
  progress: Record<string, unknown> | null,
): void {
  const counts = event.metrics ? metricValues(event.metrics) : numbersOf(progress);
  log.info({ outcome: event.state, duration_ms: Math.round(event.durationMs), counts }, 'job finished');
}

function numbersOf(progress: Record<string, unknown> | null): Record<string, number> {
  const numbers: Record<string, number> = {};
  for (const [name, value] of Object.entries(progress ?? {})) if (typeof value === 'number') numbers[name] = value;
  return numbers;
}
