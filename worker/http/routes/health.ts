// GET /healthz (the process answers), GET /readyz (the database answers and has this build's schema), and
// GET /openapi.json (generated from the routes' own schemas). The only routes reachable without a key.
import type { FastifyInstance } from 'fastify';
import { checkSchema, expectedMigrations } from '../../db/readiness.js';
import { describeDatabaseError } from '../../db/database-errors.js';
import type { ApiDependencies } from '../server.js';

const PUBLIC = { access: 'public', rateLimit: false } as const;
const STATUS = { type: 'object', properties: { status: { type: 'string' } } } as const;

export function registerHealthRoutes(app: FastifyInstance, deps: ApiDependencies): void {
  const migrations = expectedMigrations();
  app.get('/healthz', { config: PUBLIC, schema: { tags: ['health'], security: [], response: { 200: STATUS } } }, async () => ({ status: 'ok' }));

  app.get(
    '/readyz',
    { config: PUBLIC, schema: { tags: ['health'], security: [], response: { 200: STATUS, 503: { $ref: 'Error#' } } } },
    async (request, reply) => {
      try {
        await checkSchema(deps.pool, migrations);
        return { status: 'ready' };
      } catch (error) {
        request.log.warn({ err: describeDatabaseError(error) }, 'not ready');
        return reply.code(503).send({ error: { code: 'DATABASE_UNAVAILABLE', message: 'the database is not reachable or its schema is behind this build' } });
      }
    },
  );

  app.get('/openapi.json', { config: PUBLIC, schema: { hide: true } }, async () => app.swagger());
}
