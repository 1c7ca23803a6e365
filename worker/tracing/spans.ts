// The project's spans, through @opentelemetry/api only (a no-op until worker/tracing/sdk.ts registers the SDK):
// one tracer, a helper that runs a step in a span and records its failure, and the W3C `traceparent` of a run.
import { context, isSpanContextValid, propagation, ROOT_CONTEXT, SpanStatusCode, trace, type Attributes, type Context, type Span, type SpanOptions } from '@opentelemetry/api';

export const tracer = trace.getTracer('bulk-import-worker');

/** Marks the span failed with the error (an exception event plus an ERROR status). */
export function recordFailure(span: Span, error: unknown): void {
  const exception = error instanceof Error ? error : new Error(String(error));
  span.recordException(exception);
  span.setStatus({ code: SpanStatusCode.ERROR, message: exception.message.slice(0, 500) });
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string') span.setAttribute('error.type', code);
}

/**
 * Runs `step` in a new child span of the active one (its pg and S3 calls and log lines land beneath it) and ends it
 * when the step settles; a thrown error is recorded on the span and thrown on.
 */
export async function inSpan<T>(
  name: string,
  attributes: Attributes,
  step: (span: Span) => Promise<T>,
  options: SpanOptions & { parent?: Context } = {},
): Promise<T> {
  const { parent, ...spanOptions } = options;
  return tracer.startActiveSpan(name, { ...spanOptions, attributes }, parent ?? context.active(), async (span) => {
    try {
      return await step(span);
    } catch (error) {
      recordFailure(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

/**
 * The W3C traceparent of the active span, null when there is none (tracing off, nothing traced). A span the sampler
 * dropped still counts: its sampled flag travels with the run, so the worker's spans of that run are dropped too.
 */
export function activeTraceparent(active: Context = context.active()): string | null {
  const span = trace.getSpan(active);
  if (!span || !isSpanContextValid(span.spanContext())) return null;
  const carrier: Record<string, string> = {};
  propagation.inject(active, carrier);
  return carrier.traceparent ?? null;
}

/** The context a stored traceparent stands for (the root context when there is none or it does not parse). */
export function contextOfTraceparent(traceparent: string | null | undefined): Context {
  if (!traceparent) return ROOT_CONTEXT;
  return propagation.extract(ROOT_CONTEXT, { traceparent });
}
