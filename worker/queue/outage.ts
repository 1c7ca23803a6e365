// Dependency outages: S3 or the database unavailable. Such a failure is not the run's fault, so it does not spend an
// attempt: the queue puts the run back with a backoff that grows with the outage (finish.ts recordFailure) until the
// outage has lasted longer than DEPENDENCY_OUTAGE_BUDGET_MS, and only then ends it `dead` with DEPENDENCY_OUTAGE.
//
// Which failures are outages:
//   - a DependencyOutageError, thrown by a handler that knows (the mass import's breaker, a CSV read of S3);
//   - an error a handler marked with markOutage (e.g. a socket reset while an S3 object body streams);
//   - an AWS SDK error (it carries $metadata) after the SDK's own retries: network errors, timeouts, 5xx, SlowDown;
//   - a Postgres connection error: SQLSTATE class 08, 57P01-57P03 (shutdown, crash recovery, cannot connect now),
//     53300 (too many connections), and pg's own connection failures (refused, terminated, connect timeout). The
//     runner records these only once the database answers again (worker.ts retries the write).
// Everything else keeps the ordinary rules (errors.ts): permanent → failed, transient → retry counting attempts.
import { JobError, TransientJobError, TRANSIENT_NODE_CODES, type JobErrorOptions } from './errors.js';
import { isConnectionError, isLoginRefusal } from '../db/database-status.js';

export type Dependency = 's3' | 'database';

export const DEPENDENCIES: readonly Dependency[] = ['s3', 'database'];

/** The code of the last_error of a run that waited longer than the outage budget. */
export const DEPENDENCY_OUTAGE_CODE = 'DEPENDENCY_OUTAGE';
/**
 * How many new outages in a row a run is given back for (recordFailure, last_error.context.outageRestarts). An attempt
 * that breaks its own connection after running a while (a statement a DBA kills, a query that takes its backend
 * down), or whose read is cut at the same point every time (a proxy's transfer limit, a damaged object), looks like a
 * new outage every time and would otherwise be given back for ever, paging nobody. Not max_attempts: a one-attempt CSV
 * import in a flapping S3 waits out several. Progress an attempt keeps (OutageReport.progressKept: a mass import's
 * imported files) starts the count again, so a campaign that meets S3 throttling now and then over days is never
 * spent by it.
 */
export const MAX_OUTAGE_RESTARTS = 10;

/** How a dependency is named in messages and in `bulk-import show`. */
export function dependencyName(dependency: Dependency): string {
  return dependency === 's3' ? 'S3' : 'the database';
}

/** What is known about one outage failure. */
export interface OutageReport {
  dependency: Dependency;
  /** When this attempt first saw the dependency fail; default: the moment the failure is recorded. */
  since?: Date | undefined;
  /**
   * The dependency worked earlier in this attempt (files imported, bytes read): this is a new outage, not the one an
   * earlier attempt waited out. Default: decided by the runner from how long the attempt ran.
   */
  progressed?: boolean | undefined;
  /**
   * What this attempt got done stays done for the next (a mass import's imported files): a new outage after it starts
   * the run's count of new outages again (MAX_OUTAGE_RESTARTS). Bytes a CSV read do not: validation reads the file
   * again from the top. Set for a DependencyOutageError that says it progressed.
   */
  progressKept?: boolean | undefined;
}

/** Thrown by a handler that knows the run cannot go on because a dependency is unavailable. */
export class DependencyOutageError extends TransientJobError {
  constructor(
    message: string,
    readonly dependency: Dependency,
    readonly since: Date,
    readonly progressed: boolean,
    code = dependency === 's3' ? 'S3_UNAVAILABLE' : 'DATABASE_UNAVAILABLE',
    context: Record<string, unknown> = {},
    options?: JobErrorOptions,
  ) {
    super(message, code, { dependency, ...context }, options);
    this.name = 'DependencyOutageError';
  }
}

const marked = new WeakMap<object, OutageReport>();

/**
 * Marks an error as an outage of `dependency` (for errors whose shape does not say where they came from, such as a
 * socket reset while an S3 body streams). The same error object then classifies as that outage wherever it ends up.
 */
export function markOutage<E>(error: E, report: OutageReport): E {
  if (typeof error === 'object' && error !== null && !marked.has(error)) marked.set(error, report);
  return error;
}

/**
 * An outage error that ends an attempt whose progress stays done for the next (a CSV finalize's committed batches,
 * which the next attempt resumes after): a new outage, after progress kept (OutageReport.progressKept). Other errors
 * pass unchanged.
 */
export function markProgressKept<E>(error: E): E {
  const report = outageOf(error);
  if (report && typeof error === 'object' && error !== null && !(error instanceof DependencyOutageError)) {
    marked.set(error, { ...report, progressed: true, progressKept: true });
  }
  return error;
}

interface ErrorShape {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  $metadata?: { httpStatusCode?: number };
  cause?: unknown;
}

// AWS error names that mean S3 itself is unavailable or overloaded (with HTTP 5xx they come after the SDK's retries).
const S3_OUTAGE_NAMES = new Set([
  'InternalError', 'ServiceUnavailable', 'SlowDown', 'RequestTimeout', 'TimeoutError', 'NetworkingError',
  'RequestTimeoutException', 'Throttling', 'ThrottlingException',
]);

/**
 * Whether an error from the S3 client (or from an S3 response body) says S3 is unavailable: a network error, a
 * timeout, HTTP 5xx. Not 4xx (a missing object, a refused credential, a changed object): those are about the request.
 */
export function isS3OutageError(error: unknown): boolean {
  const e = (error ?? {}) as ErrorShape;
  const status = e.$metadata?.httpStatusCode;
  if (typeof status === 'number') return status >= 500;
  if (typeof e.name === 'string' && S3_OUTAGE_NAMES.has(e.name)) return true;
  if (typeof e.code === 'string' && (TRANSIENT_NODE_CODES.has(e.code) || e.code === 'ERR_STREAM_PREMATURE_CLOSE')) return true;
  return typeof e.message === 'string' && /^(aborted|socket hang up)$|premature close/i.test(e.message);
}

/**
 * Whether an error from pg says the database is unreachable or went away (not a bad statement), or refused a new
 * session's login: a password rotated under a running worker is fixed by a new task or a rollback, not by the run, which
 * waits for it (within the outage budget) instead of failing for good.
 */
export function isDatabaseOutageError(error: unknown): boolean {
  // A network error that came through the AWS SDK (it carries $metadata) is S3's, not the database's: handlers' S3
  // calls all go through the SDK, and S3 body streams are marked where they are read.
  if ((error as ErrorShape | null)?.$metadata !== undefined) return false;
  return isConnectionError(error) || isLoginRefusal(error);
}

/** The outage a failure reports, or undefined when it is not an outage of S3 or the database. */
export function outageOf(error: unknown, depth = 0): OutageReport | undefined {
  if (error instanceof DependencyOutageError) {
    return { dependency: error.dependency, since: error.since, progressed: error.progressed, progressKept: error.progressed };
  }
  if (typeof error === 'object' && error !== null) {
    const report = marked.get(error);
    if (report) return report;
  }
  // A handler's own classification stands (a TransientJobError about files, a PermanentJobError about the payload).
  if (error instanceof JobError) return undefined;
  const e = (error ?? {}) as ErrorShape;
  if (e.$metadata !== undefined) return isS3OutageError(error) ? { dependency: 's3' } : undefined;
  if (isDatabaseOutageError(error)) return { dependency: 'database' };
  // AggregateError (every address of a host refused) and wrapped errors.
  const inner = (error as { errors?: unknown }).errors;
  if (depth < 3 && Array.isArray(inner) && inner.length > 0) return outageOf(inner[0], depth + 1);
  if (depth < 3 && e.cause !== undefined && e.cause !== error) return outageOf(e.cause, depth + 1);
  return undefined;
}

/** The outage settings of the runner (config.ts). */
export interface OutagePolicy {
  /** How long a run may wait for one outage before it ends `dead`; 0 = outages are ordinary transient failures. */
  budgetMs: number;
  /** The first wait; later waits grow with the outage (as long as it has lasted so far), up to maxMs. */
  baseMs: number;
  maxMs: number;
}

/** What recordFailure needs to know about an outage failure. */
export interface OutageFailure {
  dependency: Dependency;
  /** How long ago this attempt first saw the dependency fail (the database's clock then dates the outage). */
  sinceMsAgo: number;
  /**
   * When `sinceMsAgo` was measured (this process's clock, epoch ms). A failure of a database outage is stored only
   * once the database answers again, seconds or minutes later: the store adds the time since, or the outage would be
   * dated at the store.
   */
  measuredAt?: number;
  /** This attempt saw the dependency work first: the outage starts now rather than continuing an earlier one. */
  progressed: boolean;
  /** OutageReport.progressKept: a new outage after it does not count against MAX_OUTAGE_RESTARTS, and starts it again. */
  progressKept: boolean;
  policy: OutagePolicy;
  /** Jitter factor in [0.5, 1] applied to the wait (equal jitter: never a retry storm of zero waits). */
  jitter: number;
}

/**
 * The outage part of a failure for recordFailure, or undefined when the failure is no outage (or outages are off).
 * An attempt that ran longer than the longest outage wait before an unmarked outage error counts as having seen the
 * dependency work: a run that imported for an hour and then met a failover starts a new outage, while a run that
 * fails at once, attempt after attempt, keeps counting the same one.
 */
export function outageFailure(
  failure: unknown,
  policy: OutagePolicy,
  attemptMs: number,
  now = Date.now(),
  random: () => number = Math.random,
  seenSince?: (dependency: Dependency) => Date | undefined,
): OutageFailure | undefined {
  if (policy.budgetMs <= 0) return undefined;
  const report = outageOf(failure);
  if (!report) return undefined;
  // The failure's own time, else when the runner saw the dependency go (a plain pg error says nothing of when).
  const since = report.since ?? seenSince?.(report.dependency);
  return {
    dependency: report.dependency,
    sinceMsAgo: Math.max(0, since ? now - since.getTime() : 0),
    measuredAt: now,
    progressed: report.progressed ?? attemptMs > policy.maxMs,
    progressKept: report.progressKept ?? false,
    policy,
    jitter: 0.5 + random() / 2,
  };
}
