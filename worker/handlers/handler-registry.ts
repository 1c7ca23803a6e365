// Which handler runs which kind: a map from kind to handler, refusing a kind registered twice or unknown. Kept apart
// from the default registry (registry.ts), which loads every handler and what it needs (the S3 SDK, the CSV parser):
// a caller that names its own handlers (the submitter processes of the admission tests) does not load the others.
import { PermanentJobError } from '../queue/errors.js';
import type { AnyJobHandler, JobHandler } from './types.js';

export class HandlerRegistry {
  private readonly handlers = new Map<string, JobHandler<unknown>>();

  constructor(handlers: AnyJobHandler[] = []) {
    for (const handler of handlers) this.register(handler);
  }

  register<P>(handler: JobHandler<P>): this {
    if (this.handlers.has(handler.kind)) throw new Error(`job kind ${handler.kind} is registered twice`);
    this.handlers.set(handler.kind, handler as JobHandler<unknown>);
    return this;
  }

  get(kind: string): JobHandler<unknown> | undefined {
    return this.handlers.get(kind);
  }

  require(kind: string): JobHandler<unknown> {
    const handler = this.handlers.get(kind);
    if (!handler) {
      throw new PermanentJobError(`unknown job kind "${kind}"; known kinds: ${this.kinds().join(', ')}`, 'UNKNOWN_KIND');
    }
    return handler;
  }

  kinds(): string[] {
    return [...this.handlers.keys()].sort();
  }
}
