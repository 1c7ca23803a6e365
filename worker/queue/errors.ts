// How a failure is classified (transient → retry with backoff; permanent → failed at once) and recorded.
import { boundValue, MAX_ERROR_MESSAGE_CHARS, MAX_ERROR_STACK_CHARS, truncateText } from '../bounds.js';
import { READ_ONLY_TRANSACTION } from '../db/database-status.js';
import type { ErrorClass, JobErrorRecord } from './types.js';

/** Base for errors a handler throws on purpose: carries a code and the context an operator needs. */
export class JobError extends Error {
  /** The message quotes a dependency's own (an SDK's, naming an account or a role): recorded as internal (visible-errors.ts). */
  readonly internal: boolean;

  constructor(
    message: string,
    readonly errorClass: ErrorClass,
    readonly code: string,
    readonly context: Record<string, unknown> = {},
    options?: JobErrorOptions,
  ) {
    super(message, options);
    this.name = errorClass === 'permanent' ? 'PermanentJobError' : 'TransientJobError';
    this.internal = options?.internal ?? false;
  }
}

export interface JobErrorOptions {
  cause?: unknown;
  /** See JobError.internal. */
  internal?: boolean;
}

/** Retrying cannot help: bad payload, missing mount, over a ceiling. The run ends `failed` at once. */
export class PermanentJobError extends JobError {
  constructor(message: string, code = 'PERMANENT', context: Record<string, unknown> = {}, options?: JobErrorOptions) {
    super(message, 'permanent', code, context, options);
  }
}

/** Retrying later may help. The run goes back to `queued` after a backoff, or `dead` when attempts are used up. */
export class TransientJobError extends JobError {
  constructor(message: string, code = 'TRANSIENT', context: Record<string, unknown> = {}, options?: JobErrorOptions) {
    super(message, 'transient', code, context, options);
  }
}

/** The code of the error the rescuer records for a run whose worker stopped heartbeating (maintenance.ts). */
export const LEASE_EXPIRED_CODE = 'LEASE_EXPIRED';

/** The code of a mass import's file whose key holds another tenant's document (item-outcome-batcher.ts). */
export const KEY_OF_OTHER_TENANT_CODE = 'KEY_OF_OTHER_TENANT';

/** The code of a mass import that finds no campaign mount at IMPORT_ROOT (campaign-mount.ts). */
export const CAMPAIGN_MOUNT_MISSING_CODE = 'CAMPAIGN_MOUNT_MISSING';

/** The code of a mass import's file that is a symbolic link leading outside the import root (directory-walk.ts). */
export const SYMLINK_OUTSIDE_ROOT_CODE = 'SYMLINK_OUTSIDE_ROOT';

// SQLSTATEs worth a retry: serialization failure, deadlock, connection exceptions (class 08), admin shutdown and
// crash recovery (57P0x), too many connections, lock timeout, query canceled by statement timeout, a write refused as
// read-only (a session left on a demoted instance after a switchover: database-status.ts).
const TRANSIENT_SQLSTATES = new Set(['40001', '40P01', '57P01', '57P02', '57P03', '53300', '55P03', '57014', READ_ONLY_TRANSACTION]);
export const TRANSIENT_NODE_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH',
  'ENETUNREACH', 'ENETDOWN', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT',
]);
const TRANSIENT_AWS_NAMES = new Set([
  'SlowDown', 'Throttling', 'ThrottlingException', 'RequestTimeout', 'RequestTimeTooSkewed', 'InternalError',
  'ServiceUnavailable', 'TimeoutError', 'RequestTimeoutException', 'NetworkingError',
]);

interface ErrorLike {
  name?: string;
  code?: string;
  message?: string;
  stack?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
  cause?: unknown;
}

export interface Classification {
  errorClass: ErrorClass;
  code: string;
}

/** Decides whether an error is worth a retry. Unknown errors count as transient: they retry, then go `dead`. */
export function classifyError(error: unknown): Classification {
  if (error instanceof JobError) return { errorClass: error.errorClass, code: error.code };
  const e = (error ?? {}) as ErrorLike;
  const status = e.$metadata?.httpStatusCode;
  if (typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && !e.code.startsWith('E')) {
    const transient = TRANSIENT_SQLSTATES.has(e.code) || e.code.startsWith('08');
    // Other SQLSTATEs (constraint violations, bad input) are bugs or bad data; retrying cannot fix them.
    return { errorClass: transient ? 'transient' : 'permanent', code: e.code };
  }
  if (typeof e.code === 'string' && TRANSIENT_NODE_CODES.has(e.code)) return { errorClass: 'transient', code: e.code };
  if (e.name && TRANSIENT_AWS_NAMES.has(e.name)) return { errorClass: 'transient', code: e.name };
  if (status !== undefined) {
    const transient = status >= 500 || status === 429 || status === 408 || e.$retryable !== undefined;
    return { errorClass: transient ? 'transient' : 'permanent', code: e.name ?? `HTTP_${status}` };
  }
  if (e.cause && e.cause !== error) {
    const inner = classifyError(e.cause);
    if (inner.code !== 'UNKNOWN') return inner;
  }
  if (typeof e.message === 'string' && /Connection terminated|connection timeout|socket hang up/i.test(e.message)) {
    return { errorClass: 'transient', code: 'CONNECTION_LOST' };
  }
  return { errorClass: 'transient', code: typeof e.code === 'string' ? e.code : 'UNKNOWN' };
}

/**
 * The structured last_error of a failed attempt. Message, context and stack are cut to the bounds of bounds.ts, each
 * cut marked with a note, so a failure caused by a huge input does not store (or print) that input.
 */
export function toErrorRecord(error: unknown, attempt: number, workerId?: string): JobErrorRecord {
  const { errorClass, code } = classifyError(error);
  const e = (error ?? {}) as ErrorLike;
  const record: JobErrorRecord = {
    message: truncateText((typeof e.message === 'string' && e.message) || String(error), MAX_ERROR_MESSAGE_CHARS),
    code,
    class: errorClass,
    attempt,
    at: new Date().toISOString(),
  };
  if (workerId) record.worker = workerId;
  record.internal = !(error instanceof JobError) || error.internal;
  const context = error instanceof JobError ? error.context : undefined;
  if (context && Object.keys(context).length > 0) record.context = boundValue(context) as Record<string, unknown>;
  if (typeof e.stack === 'string' && !(error instanceof JobError)) {
    record.stack = truncateText(e.stack.split('\n').slice(0, 8).join('\n'), MAX_ERROR_STACK_CHARS);
  }
  return record;
}
