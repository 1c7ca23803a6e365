// JSON schemas shared by the routes: requests are validated with them, responses serialized with them, and
// /openapi.json is generated from them, so the spec cannot drift from what the API does.
import { JOB_ACTIONS } from '../queue/job-actions.js';
import { JOB_STATES } from '../queue/types.js';
import { ERROR_SCHEMA } from './errors.js';

// `type: [t, 'null']` rather than anyOf: the serializer then writes the value without trying each branch with the
// validator (anyOf cost a few milliseconds per listing of 50 runs), and the spec shows it as `nullable: true`.
const nullable = <S extends { type: string }>(schema: S) => ({ ...schema, type: [schema.type, 'null'] });
const dateTime = { type: 'string', format: 'date-time' } as const;
const anyObject = { type: 'object', additionalProperties: true } as const;

export const JOB_ID_PARAMS = {
  type: 'object',
  required: ['id'],
  additionalProperties: false,
  properties: { id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER, description: 'job id' } },
} as const;

export const CURSOR = { type: 'string', minLength: 1, maxLength: 200, description: '`next` of the previous page' } as const;
export const limitParam = (fallback: number, max: number) => ({ type: 'integer', minimum: 1, maximum: max, default: fallback }) as const;

const PROGRESS_PROPERTIES = {
  description: 'done/total, percent, phase, rate and ETA (while running), and the handler\'s own figures in details',
  properties: {
    done: nullable({ type: 'number' }),
    total: nullable({ type: 'number' }),
    percent: nullable({ type: 'number' }),
    phase: nullable({ type: 'string' }),
    ratePerSecond: nullable({ type: 'number' }),
    etaSeconds: nullable({ type: 'number' }),
    details: anyObject,
  },
} as const;

export const PROGRESS_SCHEMA = { $id: 'Progress', type: 'object', ...PROGRESS_PROPERTIES } as const;

const summaryProperties = {
  id: { type: 'integer' },
  kind: { type: 'string' },
  tenant: nullable({ type: 'string' }),
  state: { type: 'string', enum: [...JOB_STATES] },
  attempts: { type: 'integer' },
  maxAttempts: { type: 'integer' },
  progress: nullable({ ...PROGRESS_PROPERTIES, type: 'object' }),
  lastError: nullable({
    type: 'object',
    properties: {
      code: { type: 'string' },
      message: { type: 'string' },
      class: { type: 'string' },
      attempt: { type: 'integer' },
      at: { type: 'string' },
      worker: { type: 'string' },
      internal: { type: 'boolean', description: "an internal failure's message: shown to operator keys only, tenant keys get a plain sentence" },
      context: anyObject,
    },
  }),
  createdAt: dateTime,
  startedAt: nullable(dateTime),
  finishedAt: nullable(dateTime),
  updatedAt: dateTime,
} as const;

export const JOB_SUMMARY_SCHEMA = { $id: 'JobSummary', type: 'object', properties: summaryProperties } as const;

export const ACTION_SCHEMA = {
  $id: 'JobAction',
  type: 'object',
  properties: {
    action: { type: 'string', enum: [...JOB_ACTIONS] },
    actor: { type: 'string', description: 'an API key name or cli:<user>; to a tenant key, "operator" for an operator\'s action' },
    note: nullable({ type: 'string' }),
    stateAfter: nullable({ type: 'string' }),
    at: dateTime,
  },
} as const;

export const JOB_SCHEMA = {
  $id: 'Job',
  type: 'object',
  properties: {
    ...summaryProperties,
    priority: { type: 'integer' },
    dedupeKey: nullable({ type: 'string' }),
    payload: anyObject,
    result: nullable(anyObject),
    runAt: dateTime,
    cancelRequested: { type: 'boolean' },
    outage: nullable({ type: 'object', properties: { dependency: { type: 'string' }, since: dateTime } }),
    resolution: nullable({ type: 'object', properties: { by: { type: 'string' }, note: { type: 'string' }, at: dateTime } }),
    startedBy: nullable({ type: 'string', description: 'the actor (API key name or cli:<user>) that submitted the run; to a tenant key, "operator" for an operator' }),
    actions: { type: 'array', items: { $ref: 'JobAction#' } },
    estimate: nullable({
      type: 'object',
      description: 'while queued or running: when the run should start and finish (runs ahead, measured rate, workers holding leases)',
      properties: {
        startAt: nullable(dateTime),
        finishAt: nullable(dateTime),
        ahead: { type: 'integer' },
        runsPerSecond: nullable({ type: 'number' }),
        meanRunMs: nullable({ type: 'number' }),
        running: { type: 'integer' },
        workers: { type: 'integer' },
        basis: { type: 'string', enum: ['leases', 'history', 'none'] },
      },
    }),
  },
} as const;

export const SHARED_SCHEMAS = [ERROR_SCHEMA, PROGRESS_SCHEMA, JOB_SUMMARY_SCHEMA, ACTION_SCHEMA, JOB_SCHEMA];

/** Error responses every authenticated route may give. */
export const ERROR_RESPONSES = {
  400: { $ref: 'Error#' },
  401: { $ref: 'Error#' },
  403: { $ref: 'Error#' },
  404: { $ref: 'Error#' },
  409: { $ref: 'Error#' },
  413: { $ref: 'Error#' },
  429: { $ref: 'Error#' },
  503: { $ref: 'Error#' },
} as const;

/** The body of an action: optional (no body, or `{}`, or `{"note": …}`). */
export const NOTE_BODY = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: { note: { type: 'string', maxLength: 2000, description: 'why (kept in the run history)' } },
} as const;
