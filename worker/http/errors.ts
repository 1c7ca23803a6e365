// The one error shape of the API, `{ error: { code, message, field? } }`, and how every failure maps onto it. Codes
// are the queue's and the CLI's own (JOB_NOT_FOUND, INVALID_TRANSITION, INVALID_PAYLOAD, UNKNOWN_KIND …), plus the
// HTTP ones (UNAUTHENTICATED, FORBIDDEN, INVALID_REQUEST, BODY_TOO_LARGE, RATE_LIMITED …).
import type { FastifyError } from 'fastify';
import { ActionRefusedError } from '../actions/run-actions.js';
import { ApiKeyError } from '../auth/api-keys.js';
import { isConnectionError } from '../db/database-status.js';
import { QueueLimitError } from '../queue/admission.js';
import { NotDeadError } from '../queue/dead-letters.js';
import { JobError } from '../queue/errors.js';
import { StaleReviewError } from '../imports/csv/review.js';
import { DedupeConflictError, InvalidTransitionError, JobNotFoundError } from '../queue/operator.js';

export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/**
 * A submit refused by a queue limit, as a tenant key reads it: a limit of all tenants is named with its setting and
 * when to retry, without the figures (how many runs or bytes every tenant has queued, how long the oldest has waited),
 * which are the other tenants' business. A tenant's own limit is told whole; so is everything to an operator.
 */
export function queueLimitForTenant(error: QueueLimitError): Error {
  const breach = error.breach;
  if (breach.scope !== 'total') return error;
  return new ApiError(
    429,
    error.code,
    `the queue of ${breach.kind} runs of all tenants is at its limit (${breach.setting}); nothing was submitted; retry in ${breach.retryAfterSeconds} s`,
    undefined,
    { 'retry-after': String(breach.retryAfterSeconds) },
  );
}

/** A request that reached a server while it closes: not a fault, so logged as none (API and admin pages alike). */
export const SHUTTING_DOWN = 'SHUTTING_DOWN';
export const shuttingDown = () =>
  new ApiError(503, SHUTTING_DOWN, 'this server is shutting down; retry, and another will answer', undefined, { 'retry-after': '1' });

export interface ErrorBody {
  error: { code: string; message: string; field?: string };
}

export const notFound = (what = 'no such resource') => new ApiError(404, 'NOT_FOUND', what);
export const jobNotFound = (id: number) => new ApiError(404, 'JOB_NOT_FOUND', `job ${id} does not exist`);

/** The JSON-schema path of a validation failure as a field name: `payload.key`, `limit`, `ids[2]`. */
function fieldOf(error: FastifyError): string | undefined {
  const first = error.validation?.[0];
  if (!first) return undefined;
  const params = first.params as { missingProperty?: string; additionalProperty?: string };
  const path = (first.instancePath ?? '')
    .split('/')
    .filter((part) => part !== '')
    .map((part) => (/^\d+$/.test(part) ? `[${part}]` : `.${part}`))
    .join('')
    .replace(/^\./, '');
  const leaf = params.missingProperty ?? params.additionalProperty;
  if (leaf) return path ? `${path}.${leaf}` : leaf;
  return path || undefined;
}

function validationMessage(error: FastifyError, field: string | undefined): string {
  const first = error.validation?.[0];
  const params = first?.params as { additionalProperty?: string } | undefined;
  if (params?.additionalProperty) return `unknown field ${field}`;
  return field ? `${field} ${first?.message ?? 'is invalid'}` : (first?.message ?? error.message);
}

/**
 * The SQLSTATEs (class 22) of a value the database could not take as given: what a request's value can cause. The rest
 * of class 22 (division by zero, a null where none may be, an array subscript, an invalid parameter …) comes from our
 * own statements, so it stays a server fault (500, logged as an error), not a 400 that would hide it.
 */
const VALUE_REFUSALS = new Set([
  '22001', // string_data_right_truncation
  '22003', // numeric_value_out_of_range
  '22007', // invalid_datetime_format
  '22008', // datetime_field_overflow
  '22009', // invalid_time_zone_displacement_value
  '22021', // character_not_in_repertoire
  '22P02', // invalid_text_representation
  '22P05', // untranslatable_character
  '22032', // invalid_json_text
]);

/** Status, headers and body for any error a route or the framework throws. */
export function describeError(error: unknown): {
  status: number;
  body: ErrorBody;
  headers: Record<string, string>;
  /** A fault of the server: logged as an error. */
  internal: boolean;
  /** A refusal no check of ours made (the database's): logged as a warning, with the error. */
  uncaught?: boolean;
} {
  const reply = (status: number, code: string, message: string, field?: string, headers: Record<string, string> = {}) => ({
    status,
    body: { error: { code, message, ...(field ? { field } : {}) } },
    headers,
    internal: status >= 500,
  });
  if (error instanceof ApiError) {
    const described = reply(error.statusCode, error.code, error.message, error.field, error.headers);
    return error.code === SHUTTING_DOWN ? { ...described, internal: false } : described;
  }
  if (error instanceof JobNotFoundError) return reply(404, 'JOB_NOT_FOUND', error.message);
  if (error instanceof InvalidTransitionError) return reply(409, 'INVALID_TRANSITION', error.message);
  if (error instanceof StaleReviewError) return reply(409, error.code, error.message, 'validatedAt');
  if (error instanceof DedupeConflictError) return reply(409, 'DEDUPE_CONFLICT', error.message);
  if (error instanceof NotDeadError) return reply(409, 'NOT_DEAD', error.message);
  if (error instanceof ActionRefusedError) return reply(error.code === 'NOT_A_CSV_IMPORT' ? 409 : 400, error.code, error.message, error.code.includes('NOTE') ? 'note' : undefined);
  if (error instanceof ApiKeyError) return reply(400, 'INVALID_API_KEY_REQUEST', error.message);
  if (error instanceof QueueLimitError) {
    // Over a queue limit (admission control): nothing was written; the caller may try again after Retry-After.
    return reply(429, error.code, error.message, undefined, { 'retry-after': String(error.breach.retryAfterSeconds) });
  }
  if (error instanceof JobError) {
    // Refusals of a request (enqueue limits, payload readers, unknown kind) name their field in the context.
    const context = error.context as { field?: unknown };
    const field = typeof context.field === 'string' ? (error.code === 'INVALID_PAYLOAD' ? `payload.${context.field}` : context.field) : undefined;
    return reply(error.code === 'PAYLOAD_TOO_LARGE' || error.code === 'RUN_TOO_LARGE' ? 413 : 400, error.code, error.message, field);
  }
  const fastifyError = error as FastifyError;
  if (fastifyError.validation) {
    const field = fieldOf(fastifyError);
    return reply(400, 'INVALID_REQUEST', validationMessage(fastifyError, field), field);
  }
  if (fastifyError.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply(413, 'BODY_TOO_LARGE', fastifyError.message);
  if (fastifyError.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') return reply(415, 'UNSUPPORTED_MEDIA_TYPE', 'send JSON (Content-Type: application/json)');
  if (typeof fastifyError.statusCode === 'number' && fastifyError.statusCode >= 400 && fastifyError.statusCode < 500) {
    return reply(fastifyError.statusCode, 'INVALID_REQUEST', fastifyError.message);
  }
  // Backstop: a value the routes' own checks let through and the database refused as data (VALUE_REFUSALS: out of
  // range, not a valid date, not valid text) is the request's fault, not the server's. Logged, since a check missed it.
  const sqlState = (error as { code?: unknown }).code;
  if (typeof sqlState === 'string' && VALUE_REFUSALS.has(sqlState) && error instanceof Error) {
    return { ...reply(400, 'INVALID_REQUEST', `the database refused a value of this request: ${error.message}`), uncaught: true };
  }
  if (isConnectionError(error)) return reply(503, 'DATABASE_UNAVAILABLE', 'the database is not reachable; try again shortly', undefined, { 'retry-after': '5' });
  if (sqlState === '57014') return reply(503, 'TIMEOUT', 'the request took too long; try again, or narrow it', undefined, { 'retry-after': '5' });
  return reply(500, 'INTERNAL', 'internal error (logged)');
}

export const ERROR_SCHEMA = {
  $id: 'Error',
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: { code: { type: 'string' }, message: { type: 'string' }, field: { type: 'string' } },
    },
  },
} as const;
