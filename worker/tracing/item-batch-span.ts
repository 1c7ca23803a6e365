// Bounded spans for work done item by item (a mass import's files): one span per batch of items, and of each batch
// one item traced in full — its own span with the S3 and pg spans of its upload, hash and commit beneath — while the
// other items run under an unsampled context, so their instrumented calls make no spans (with the default
// parent-based sampler). A 100,000-file import in batches of 256 makes about 400 batch spans and 400 traced files
// (each with a handful of S3 and pg spans), not 100,000 of each.
import { context, trace, TraceFlags, type Attributes, type Context, type Span } from '@opentelemetry/api';
import { inSpan, tracer } from './spans.js';

export class ItemBatchSpan {
  private readonly span: Span;
  private readonly active: Context;
  private started = 0;
  private settled = 0;
  private sealed = false;

  constructor(
    name: string,
    attributes: Attributes,
    private readonly itemSpanName: string,
  ) {
    this.span = tracer.startSpan(name, { attributes });
    this.active = trace.setSpan(context.active(), this.span);
  }

  /** Runs one item's work: the batch's first item in a span of its own, the others with their spans dropped. */
  runItem<T>(attributes: Attributes, work: (span: Span | undefined) => Promise<T>): Promise<T> {
    const traced = this.started === 0;
    this.started += 1;
    const run = traced
      ? inSpan(this.itemSpanName, attributes, (span) => work(span), { parent: this.active })
      : context.with(trace.setSpanContext(this.active, { ...this.span.spanContext(), traceFlags: TraceFlags.NONE }), () => work(undefined));
    return run.finally(() => {
      this.settled += 1;
      this.endWhenDone();
    });
  }

  /** No more items will start in this batch: the span ends once those started have settled. */
  seal(): void {
    this.sealed = true;
    this.endWhenDone();
  }

  private endWhenDone(): void {
    if (!this.sealed || this.settled < this.started) return;
    this.span.setAttribute('items.started', this.started);
    this.span.end();
  }
}
