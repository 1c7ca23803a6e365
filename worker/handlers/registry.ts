// Which handler runs which kind. Each kind lives in its own module and is listed here once.
import { PermanentJobError } from '../queue/errors.js';
import { auditHandler } from './audit.js';
import { backfillHandler } from './backfill.js';
import { csvFinalizeHandler } from './csv-finalize.js';
import { csvValidateHandler } from './csv-validate.js';
import { massImportHandler } from './mass-import.js';
import { noopHandler } from './noop.js';
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

/** Every kind this build of the worker can run. */
export function defaultRegistry(): HandlerRegistry {
  return new HandlerRegistry([noopHandler, massImportHandler, backfillHandler, csvValidateHandler, csvFinalizeHandler, auditHandler]);
}
