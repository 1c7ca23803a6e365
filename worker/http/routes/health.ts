// GET /healthz (the process answers), GET /readyz (the database answers and has this build's schema: one check shared by
// the requests of a second, readiness-probe.ts), and
// GET /openapi.json (generated from the routes' own schemas). The only routes reachable without a key.
import type { FastifyInstance } from 'fastify';
import { checkSchema, expectedMigrations } from '../../db/readiness.js';
import { describeDatabaseError } from '../../db/database-errors.js';
import { ReadinessProbe } from '../readiness-probe.js';
import type { ApiDependencies } from '../server.js';

const PUBLIC = { access: 'public', rateLimit: false } as const;
const STATUS = { type: 'object', properties: { status: { type: 'string' } } } as const;

/** How long /readyz reuses an answer: the load balancer checks every 15 s; a flood of requests reads once a second. */
export const READINESS_REUSE_MS = 1_000;

export function registerHealthRoutes(app: FastifyInstance, deps: ApiDependencies): void {
  const migrations = expectedMigrations();
  const readiness = new ReadinessProbe({
    check: () => checkSchema(deps.pool, migrations),
    reuseMs: READINESS_REUSE_MS,
    onFailure: (error) => deps.log.warn({ err: describeDatabaseError(error) }, 'not ready'),
  });
  app.decorate('readiness', readiness);
  app.get('/healthz', { config: PUBLIC, schema: { tags: ['health'], security: [], response: { 200: STATUS } } }, async () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    { config: PUBLIC, schema: { tags: ['health'], security: [], response: { 200: STATUS, 503: { $ref: 'Error#' } } } },
    async (_request, reply) => {
      try {
        await readiness.ready();
        return { status: 'ready' };
      } catch {
        return reply.code(503).send({ error: { code: 'DATABASE_UNAVAILABLE', message: 'the database is not reachable or its schema is behind this build' } });
      }
    },
  );

  app.get('/openapi.json', { config: PUBLIC, schema: { hide: true } }, async () => app.swagger());
}
