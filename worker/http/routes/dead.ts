// The dead-letter state and the queue's figures, for operator keys: GET /v1/dead (keyset-paged), POST
// /v1/dead/replay, POST /v1/dead/purge, GET /v1/stats.
import type { FastifyInstance } from 'fastify';
import { listDeadJobs, purgeDead, replayDead } from '../../actions/run-actions.js';
import { parseDurationMs } from '../../cli/parse.js';
import { countJobsByKindAndState, readThroughput } from '../../queue/stats.js';
import { JOB_KIND_PATTERN_SOURCE } from '../../queue/types.js';
import { decodeCursor, encodeCursor } from '../cursor.js';
import { ApiError } from '../errors.js';
import { CURSOR, ERROR_RESPONSES, limitParam } from '../schemas.js';
import { actorOf, type ApiDependencies } from '../server.js';
import { jobSummaryView } from '../views.js';

const OPERATOR = { access: 'operator' } as const;
const KINDS = { type: 'array', items: { type: 'string', pattern: JOB_KIND_PATTERN_SOURCE }, maxItems: 20 } as const;
const DURATION = { type: 'string', pattern: '^\\s*\\d+\\s*(ms|s|m|h|d)?\\s*$', description: 'e.g. 30s, 15m, 12h, 7d' } as const;

function durationMs(value: string, field: string): number {
  try {
    return parseDurationMs(value);
  } catch (error) {
    throw new ApiError(400, 'INVALID_REQUEST', `${field}: ${(error as Error).message}`, field);
  }
}

export function registerDeadRoutes(app: FastifyInstance, deps: ApiDependencies): void {
  app.get<{ Querystring: { kind?: string[]; limit: number; cursor?: string } }>(
    '/v1/dead',
    {
      config: OPERATOR,
      schema: {
        tags: ['dead letters'],
        summary: 'dead runs not resolved, most recently dead first (operator keys)',
        querystring: { type: 'object', additionalProperties: false, properties: { kind: KINDS, limit: limitParam(50, 500), cursor: CURSOR } },
        response: {
          200: { type: 'object', properties: { jobs: { type: 'array', items: { $ref: 'JobSummary#' } }, next: { type: ['string', 'null'] } } },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (request) => {
      const { kind, limit, cursor } = request.query;
      const before = cursor ? decodeCursor(cursor, { at: 'timestamp', id: 'integer' }) : undefined;
      const jobs = await listDeadJobs(deps.pool, {
        kinds: kind,
        limit,
        before: before ? { finishedAt: before.at as Date, id: before.id as number } : undefined,
      });
      const last = jobs[jobs.length - 1];
      return {
        jobs: jobs.map((job) => jobSummaryView(job, true)),
        next: jobs.length === limit && last?.finishedAt ? encodeCursor({ at: last.finishedAt.toISOString(), id: last.id }) : null,
      };
    },
  );

  app.post<{ Body: { ids?: number[]; all?: boolean; kind?: string[]; resetAttempts?: boolean; note?: string } }>(
    '/v1/dead/replay',
    {
      config: OPERATOR,
      schema: {
        tags: ['dead letters'],
        summary: 'run dead runs again as the same run records: the given ids (all must be dead; all or none), or all: true',
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ids: { type: 'array', items: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER }, minItems: 1, maxItems: 1000 },
            all: { type: 'boolean' },
            kind: KINDS,
            resetAttempts: { type: 'boolean' },
            note: { type: 'string', maxLength: 2000 },
          },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              replayed: { type: 'array', items: { $ref: 'JobSummary#' } },
              skipped: {
                type: 'array',
                description: 'with all: dead runs left dead, their dedupe key in use by `heldBy` (an active run, or one replayed instead)',
                items: {
                  type: 'object',
                  properties: { id: { type: 'integer' }, kind: { type: 'string' }, tenant: { type: ['string', 'null'] }, dedupeKey: { type: 'string' }, heldBy: { type: 'integer' } },
                },
              },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (request) => {
      const body = request.body;
      if (body.all && body.ids) throw new ApiError(400, 'INVALID_REQUEST', 'give ids or all: true, not both', 'ids');
      if (!body.all && !body.ids) throw new ApiError(400, 'INVALID_REQUEST', 'give the ids of dead runs to replay, or all: true', 'ids');
      if (body.kind && !body.all) throw new ApiError(400, 'INVALID_REQUEST', 'kind only applies with all: true', 'kind');
      const { replayed, skipped } = await replayDead(deps.pool, actorOf(request), {
        ids: body.ids,
        all: body.all,
        kinds: body.kind,
        resetAttempts: body.resetAttempts ?? false,
        note: body.note,
      });
      request.log.info({ count: replayed.length, skipped: skipped.length, actor: request.apiKey?.name }, 'dead runs replayed');
      return {
        replayed: replayed.map((job) => jobSummaryView(job, true)),
        skipped: skipped.map((run) => ({ id: run.id, kind: run.kind, tenant: run.tenantId, dedupeKey: run.dedupeKey, heldBy: run.heldBy })),
      };
    },
  );

  app.post<{ Body: { olderThan: string; kind?: string[]; dryRun?: boolean; note?: string } }>(
    '/v1/dead/purge',
    {
      config: OPERATOR,
      schema: {
        tags: ['dead letters'],
        summary: 'delete dead runs that died longer ago than olderThan (their item records go with them; the history keeps a purged entry)',
        body: {
          type: 'object',
          required: ['olderThan'],
          additionalProperties: false,
          properties: { olderThan: DURATION, kind: KINDS, dryRun: { type: 'boolean' }, note: { type: 'string', maxLength: 2000 } },
        },
        response: {
          200: {
            type: 'object',
            properties: {
              dryRun: { type: 'boolean' },
              count: { type: 'integer' },
              jobs: {
                type: 'array',
                items: { type: 'object', properties: { id: { type: 'integer' }, kind: { type: 'string' }, tenant: { type: ['string', 'null'] }, finishedAt: { type: 'string' } } },
              },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (request) => {
      const body = request.body;
      const purged = await purgeDead(deps.pool, actorOf(request), {
        olderThanMs: durationMs(body.olderThan, 'olderThan'),
        kinds: body.kind,
        dryRun: body.dryRun ?? false,
        note: body.note ?? null,
      });
      return {
        dryRun: body.dryRun ?? false,
        count: purged.length,
        jobs: purged.map((job) => ({ id: job.id, kind: job.kind, tenant: job.tenantId, finishedAt: job.finishedAt.toISOString() })),
      };
    },
  );

  app.get<{ Querystring: { window: string } }>(
    '/v1/stats',
    {
      config: OPERATOR,
      schema: {
        tags: ['stats'],
        summary: 'runs per kind and state, and what finished in the window (operator keys)',
        querystring: { type: 'object', additionalProperties: false, properties: { window: { ...DURATION, default: '1h' } } },
        response: {
          200: {
            type: 'object',
            properties: {
              windowMs: { type: 'integer' },
              counts: { type: 'array', items: { type: 'object', properties: { kind: { type: 'string' }, state: { type: 'string' }, count: { type: 'integer' } } } },
              throughput: { type: 'array', items: { type: 'object', additionalProperties: true } },
            },
          },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (request) => {
      const windowMs = durationMs(request.query.window, 'window');
      if (windowMs <= 0) throw new ApiError(400, 'INVALID_REQUEST', 'window must be longer than 0', 'window');
      const [counts, throughput] = await Promise.all([countJobsByKindAndState(deps.pool), readThroughput(deps.pool, windowMs)]);
      return { windowMs, counts, throughput };
    },
  );
}
