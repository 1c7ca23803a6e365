// The functions a backend (or the CLI) calls to ask for work: enqueue validates the payload with the kind's handler
// before anything is written, applies the kind's default idempotency key, refuses a submit over a queue limit, and
// says when the run should start and finish.
import { loadConfig, type QueueConfig } from './config.js';
import { isPool, withTransaction, type Queryable } from './db/pool.js';
import type { HandlerRegistry } from './handlers/handler-registry.js';
import { findBreach, lockAdmission, QueueLimitError } from './queue/admission.js';
import { PermanentJobError } from './queue/errors.js';
import { checkEnqueueRequest, enqueueJob, findActiveRun, type EnqueueRequest, type EnqueueResult } from './queue/enqueue.js';
import { estimateRun, measureThroughput, type RunEstimate } from './queue/estimate.js';
import { requireSubmitTenant } from './imports/tenant.js';
export { ENQUEUE_LIMITS } from './queue/enqueue.js';
export { QueueLimitError } from './queue/admission.js';

// Review of CSV imports: approve (finalize) or reject a run parked in review_ready.
export { finalizeImport, rejectImport } from './imports/csv/review.js';

export interface SubmitOptions {
  registry?: HandlerRegistry;
  defaultMaxAttempts?: number;
  /** Fair share and admission limits; default those of the process's configuration (FAIR_CLAIM, ADMISSION_* …). */
  queue?: QueueConfig;
}

export interface SubmitResult extends EnqueueResult {
  /** When the run should start and finish (queue/estimate.ts); for a reused run, its own estimate. */
  estimate: RunEstimate | null;
}

let processQueueConfig: QueueConfig | undefined;
function defaultQueueConfig(): QueueConfig {
  processQueueConfig ??= loadConfig().queue;
  return processQueueConfig;
}

/**
 * A run's tenant: the request's, or else its payload's (the import kinds read `tenant` from either). The dedupe scope,
 * the admission limits, fair share and the API's visibility all go by it, so the two must not disagree
 * (TENANT_MISMATCH, field payload.tenant).
 */
export function runTenant(requestTenant: string | null, payload: unknown): string | null {
  const payloadTenant = (payload as { tenant?: unknown }).tenant;
  const fromPayload = typeof payloadTenant === 'string' ? payloadTenant : null;
  if (fromPayload !== null && requestTenant !== null && fromPayload !== requestTenant) {
    throw new PermanentJobError(`the payload's tenant (${fromPayload}) is not the run's (${requestTenant}): give one tenant`, 'TENANT_MISMATCH', { field: 'payload.tenant' });
  }
  return requestTenant ?? fromPayload;
}

/**
 * Enqueues a run of `kind`. Refuses an unknown kind, an invalid payload, or a request over ENQUEUE_LIMITS (a payload
 * over 256 KiB of JSON, an over-long tenant or dedupe key, a priority outside the integer range …) with a
 * PermanentJobError, and a submit over a queue limit with a QueueLimitError (code QUEUE_LIMIT, `breach.retryAfterSeconds`):
 * nothing is written either way. A submit whose dedupe key an active run holds returns that run and is never refused.
 * When the request has no dedupe key, the kind's default one applies (pass `dedupeKey: null` to opt out). `db` is a
 * pool (the submit gets a transaction of its own) or a client inside the caller's transaction (the admission lock
 * is then held until the caller commits).
 */
export async function submitJob(db: Queryable, request: EnqueueRequest, options: SubmitOptions = {}): Promise<SubmitResult> {
  checkEnqueueRequest(request);
  // Loaded on first use: a caller that passes its own handlers does not load every kind's (handlers/registry.ts).
  const registry = options.registry ?? (await import('./handlers/registry.js')).defaultRegistry();
  const handler = registry.require(request.kind);
  const payload = handler.parsePayload(request.payload ?? {});
  const tenantId = runTenant(request.tenantId ?? null, payload);
  if (handler.requiresTenant) requireSubmitTenant(request.kind, tenantId);
  const dedupeKey = (request.dedupeKey === undefined ? handler.defaultDedupeKey?.(payload, tenantId) : request.dedupeKey) ?? null;
  const queue = options.queue ?? defaultQueueConfig();
  const admit = async (tx: Queryable): Promise<EnqueueResult> => {
    // Lock first: a submit that waited for the lock sees the run its predecessor admitted, by dedupe key and in the count.
    await lockAdmission(tx, request.kind, tenantId, queue.admission);
    const active = dedupeKey !== null ? await findActiveRun(tx, dedupeKey, tenantId) : null;
    if (active) return { job: active, reused: true };
    const sizeBytes = request.sizeBytes ?? 0;
    const breach = await findBreach(tx, { kind: request.kind, tenantId, sizeBytes }, queue.admission, () => measureThroughput(tx, request.kind));
    if (breach) throw new QueueLimitError(breach);
    return enqueueJob(
      tx,
      { ...request, tenantId, dedupeKey, maxAttempts: request.maxAttempts ?? handler.maxAttempts },
      options.defaultMaxAttempts,
      queue.fairShare,
    );
  };
  const result = isPool(db) ? await withTransaction(db, admit) : await admit(db);
  return { ...result, estimate: await estimateRun(db, result.job) };
}
