// A run's spans in the worker: one `claim` span and one `run <kind>` span per attempt, both in the trace of the
// submitter (the run's stored traceparent, written by enqueue), so a retried run is one trace with a claim and a run
// span for each attempt. The run span is the active context while the handler works and the outcome is stored: the
// steps' spans, the pg and S3 spans and every log line of the attempt (trace_id, span_id) fall beneath it.
import { context, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import type { JobMetrics } from '../handlers/metrics.js';
import type { ClaimedJob } from '../queue/types.js';
import type { AttemptEnd } from '../runner/attempt-end.js';
import { tracingStarted } from './sdk.js';
import { activeTraceparent, contextOfTraceparent, recordFailure, tracer } from './spans.js';

/** The attributes every span of a run carries. */
export function jobAttributes(job: Pick<ClaimedJob, 'id' | 'kind' | 'attempt' | 'tenantId'>) {
  return { 'job.id': job.id, 'job.kind': job.kind, attempt: job.attempt, ...(job.tenantId ? { tenant: job.tenantId } : {}) };
}

/**
 * Records the claim of one job as a span under its enqueue (or as a new trace when the submitter was not traced),
 * from when the claim statement started to now, and returns its traceparent: the parent of the attempt's run span.
 * The claim statement is one for many jobs; each job's trace gets its own span of it.
 */
export function recordClaimSpan(job: ClaimedJob, enqueuedBy: string | null, startTimeMs: number, workerId: string): string | null {
  // Without the SDK the no-op span carries no traceparent on (no propagator is registered): null either way.
  if (!tracingStarted()) return null;
  const span = tracer.startSpan(
    'claim',
    {
      kind: SpanKind.CONSUMER,
      startTime: startTimeMs,
      attributes: { ...jobAttributes(job), 'worker.id': workerId, 'job.queued_ms': Math.max(0, startTimeMs - job.createdAt.getTime()) },
    },
    contextOfTraceparent(enqueuedBy),
  );
  span.end();
  return activeTraceparent(trace.setSpan(context.active(), span));
}

/** Runs one attempt (handler and outcome) with its `run <kind>` span active; the span ends when it settles. */
export async function runInJobSpan(job: ClaimedJob, attempt: () => Promise<void>): Promise<void> {
  if (!tracingStarted()) return attempt();
  const span = tracer.startSpan(`run ${job.kind}`, { kind: SpanKind.CONSUMER, attributes: jobAttributes(job) }, contextOfTraceparent(job.traceparent));
  try {
    await context.with(trace.setSpan(context.active(), span), attempt);
  } finally {
    span.end();
  }
}

/**
 * Tells the active run span how the attempt ended (the runner's jobFinished event is emitted inside it): the state
 * it left the run in, the run's counts, and the error of a failed attempt.
 */
export function recordAttemptOutcome(event: {
  state: AttemptEnd;
  error?: unknown;
  metrics?: JobMetrics | undefined;
}): void {
  const span: Span | undefined = trace.getActiveSpan();
  if (!span?.isRecording()) return;
  span.setAttribute('job.outcome', event.state);
  for (const [name, metric] of Object.entries(event.metrics ?? {})) span.setAttribute(`job.${name.toLowerCase()}`, metric.value);
  if (event.error !== undefined) recordFailure(span, event.error);
  else if (event.state !== 'lost') span.setStatus({ code: SpanStatusCode.OK });
}
