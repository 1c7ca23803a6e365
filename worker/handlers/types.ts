// The contract between the runner and a job kind.
import type { S3Client } from '@aws-sdk/client-s3';
import type { Config } from '../config.js';
import type { Pool, Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import type { CompletionState } from '../queue/finish.js';
import type { ClaimedJob } from '../queue/types.js';
import type { JobMetrics } from './metrics.js';
import type { JobProgress } from './progress.js';

/** Shared resources a handler may use; created once per worker process. */
export interface HandlerServices {
  config: Config;
  pool: Pool;
  /** Undefined when S3 is not configured (e.g. a worker that only runs backfills). */
  s3: S3Client | undefined;
  bucket: string | undefined;
}

export interface ProgressReporter {
  /**
   * Replaces the job's progress (shown by `bulk-import show`/`watch`, saved for resumption). Writes are throttled;
   * a refused write (lease lost) aborts the job's signal. Build it with jobProgress() (handlers/progress.ts).
   */
  update(progress: JobProgress): void;
  /** Writes the latest progress now. */
  flush(): Promise<void>;
  /**
   * Drops the progress not yet written and stores none with the attempt's outcome: for a handler that no longer
   * knows which of its progress the database holds (a COMMIT that carried progress lost its reply), so that an
   * older copy never replaces what was committed. The database's progress stays.
   */
  forget(): void;
}

export interface JobContext<P> {
  job: ClaimedJob;
  payload: P;
  /** Fires when the job must stop: lease lost, cancel requested, or worker shutting down. `signal.reason` says why. */
  signal: AbortSignal;
  /** Carries job_id, kind, attempt and tenant_id on every line. */
  log: Logger;
  progress: ProgressReporter;
  services: HandlerServices;
  /**
   * Call inside a transaction that records work for this job: it locks the job row for share and throws
   * LeaseLostError unless this worker still holds the lease, so work is never committed by a worker that lost it.
   */
  assertLeaseHeld(db: Queryable): Promise<void>;
  /**
   * The same check as an SQL boolean expression (values written in), for a statement that does more in the same
   * round trip: true while this worker holds the lease, and then it locks the job row like assertLeaseHeld.
   */
  leaseHeldCondition: string;
  /**
   * Resolves once this attempt's lease is known to hold for a while yet (a third of a lease) — at once while
   * heartbeats renew it; after they failed, only when one gets through. Rejects with LeaseLostError once the lease is
   * lost (or with the signal's reason). Await it before a side effect the database cannot fence, such as the write
   * that makes an S3 object: a worker cut off from the database past its lease may have been replaced by another
   * attempt that writes the same object.
   */
  leaseConfirmed(): Promise<void>;
}

export interface JobOutcome {
  /** `review_ready` parks the run until a person acts (see resumeParkedJob). Default `succeeded`. */
  state?: Exclude<CompletionState, 'canceled'>;
  result?: Record<string, unknown>;
  /** Figures published as CloudWatch metrics for the run, each with its unit: { Files: countMetric(n) … }. */
  metrics?: JobMetrics;
}

/** Per-item (file) or per-row failures of one run, for `show`, `errors` and `errors --csv`. */
export interface RunErrors {
  total: number;
  /** Column names of `rows`, in display order. */
  columns: string[];
  rows: Array<Record<string, unknown>>;
  /** Set when these are not all of the run's failed rows or items (why): its validation did not read the whole file. */
  incomplete?: string;
}

export interface JobHandler<P = unknown> {
  kind: string;
  description: string;
  /** Validates the raw payload; throw PermanentJobError with a clear message when it is invalid. */
  parsePayload(raw: Record<string, unknown>): P;
  run(context: JobContext<P>): Promise<JobOutcome | void>;
  /**
   * The idempotency key used when the enqueuer gives none, e.g. tenant + kind + target: the same import asked twice
   * reuses the active run. Undefined means no automatic dedupe.
   */
  defaultDedupeKey?(payload: P, tenantId: string | null): string | undefined;
  /** Attempts before `dead`, when the enqueuer gives none. */
  maxAttempts?: number;
  /** A run of this kind imports for a tenant: submit refuses one without a valid tenant (imports/tenant.ts). */
  requiresTenant?: boolean;
  /** Lists the run's failed items or rows (for kinds that have them), newest first, paged. */
  listErrors?(db: Queryable, jobId: number, page: { limit: number; offset: number }): Promise<RunErrors>;
  /**
   * Writes every failed row or item as CSV (original columns + row number + errors); returns how many rows. `reader`:
   * an operator (the CLI, an operator key) or the run's tenant, who reads no dependency's own text (visible-errors.ts).
   */
  exportErrorsCsv?(db: Queryable, jobId: number, out: NodeJS.WritableStream, reader: ErrorsReader): Promise<number>;
}

/** Who reads an export of a run's errors. */
export interface ErrorsReader {
  operator: boolean;
}

/** A handler of any payload type, for lists of handlers. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyJobHandler = JobHandler<any>;
