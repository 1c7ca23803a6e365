// The two info lines every attempt writes, whatever its kind and outcome: `job started` and `job finished` (the
// plan's start and end lines). The run's logger already carries job_id, kind, attempt and tenant_id, and (with
// tracing on) trace_id and span_id of the run span; these add the outcome, the duration and the run's counts.
import type { Logger } from '../logger.js';
import { metricValues, type JobMetrics } from '../handlers/metrics.js';
import type { ClaimedJob } from '../queue/types.js';
import type { AttemptEnd } from './attempt-end.js';

export function logJobStarted(log: Logger, job: ClaimedJob): void {
  log.info({ max_attempts: job.maxAttempts, resumed: job.progress !== null }, 'job started');
}

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
