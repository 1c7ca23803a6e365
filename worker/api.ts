// The functions a backend (or the CLI) calls to ask for work: enqueue validates the payload with the kind's handler
// before anything is written, and applies the kind's default idempotency key.
import type { Queryable } from './db/pool.js';
import { defaultRegistry, type HandlerRegistry } from './handlers/registry.js';
import { checkEnqueueRequest, enqueueJob, type EnqueueRequest, type EnqueueResult } from './queue/enqueue.js';
export { ENQUEUE_LIMITS } from './queue/enqueue.js';

// Review of CSV imports: approve (finalize) or reject a run parked in review_ready.
export { finalizeImport, rejectImport } from './imports/csv/review.js';

export interface SubmitOptions {
  registry?: HandlerRegistry;
  defaultMaxAttempts?: number;
}

/**
 * Enqueues a run of `kind`. Refuses an unknown kind, an invalid payload, or a request over ENQUEUE_LIMITS (a payload
 * over 256 KiB of JSON, an over-long tenant or dedupe key, a priority outside the integer range …) with a
 * PermanentJobError (nothing is written). When the request has no dedupe key, the kind's default one applies (pass
 * `dedupeKey: null` to opt out).
 */
export async function submitJob(db: Queryable, request: EnqueueRequest, options: SubmitOptions = {}): Promise<EnqueueResult> {
  checkEnqueueRequest(request);
  const registry = options.registry ?? defaultRegistry();
  const handler = registry.require(request.kind);
  const payload = handler.parsePayload(request.payload ?? {});
  const dedupeKey =
    request.dedupeKey === undefined ? handler.defaultDedupeKey?.(payload, request.tenantId ?? null) : request.dedupeKey;
  return enqueueJob(
    db,
    { ...request, dedupeKey: dedupeKey ?? null, maxAttempts: request.maxAttempts ?? handler.maxAttempts },
    options.defaultMaxAttempts,
  );
}
