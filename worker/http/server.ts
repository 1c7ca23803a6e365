// The HTTP/JSON API of `bulk-import serve`: Fastify 5, every request and response described by a JSON schema (the
// same schemas validate, serialize and make /openapi.json), API keys with tenant and operator roles, one error shape,
// per-key rate limits, a body limit and timeouts. All SQL stays in worker/queue/ and beside its tables; routes only
// check access, call those functions and shape the answer.
import { AjvCompiler, type ValidatorFactory } from '@fastify/ajv-compiler';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import type { S3Client } from '@aws-sdk/client-s3';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ApiKey } from '../auth/api-keys.js';
import { VerifiedKeyCache } from '../auth/verified-keys.js';
import { requireDatabase, type Config } from '../config.js';
import type { Pool } from '../db/pool.js';
import { defaultRegistry, type HandlerRegistry } from '../handlers/registry.js';
import type { Logger } from '../logger.js';
import { inRequestSpan, registerRequestSpans } from '../tracing/http-spans.js';
import { loadSessionWithinLimit, RecentSessions, type LoadedSession, type SessionLimit } from './admin/session.js';
import { DEFAULT_ADMIN_OPTIONS, type AdminOptions } from './admin/options.js';
import { registerAdminPages } from './admin/plugin.js';
import { DEFAULT_LIMITS, type ApiLimits } from './limits.js';
import { ApiError, describeError, shuttingDown } from './errors.js';
import type { JobEventHub } from './event-hub.js';
import { SHARED_SCHEMAS } from './schemas.js';
import { registerActionRoutes } from './routes/actions.js';
import { registerDeadRoutes } from './routes/dead.js';
import { registerErrorRoutes } from './routes/errors.js';
import { registerEventRoutes } from './routes/events.js';
import type { ReadinessProbe } from './readiness-probe.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerJobRoutes } from './routes/jobs.js';
import { registerUploadRoutes } from './routes/uploads.js';

/** Who may call a route: anyone (health, spec), any valid key, or operator keys only. */
export type Access = 'public' | 'key' | 'operator';

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
    /** A GET route the admin pages read with their session cookie when no key is sent (event stream, CSV export). */
    sessionCookie?: boolean;
  }
  interface FastifyRequest {
    apiKey: ApiKey | null;
    /** The admin session whose cookie authenticated this request (routes with `sessionCookie`), else null. */
    cookieSession: LoadedSession | null;
  }
  interface FastifyInstance {
    /** Every route of the API as `METHOD /path` (tests check each is in the spec). */
    apiRoutes: string[];
    /** What GET /readyz asks (routes/health.ts). */
    readiness: ReadinessProbe;
  }
}

export interface ApiDependencies {
  pool: Pool;
  config: Config;
  log: Logger;
  registry: HandlerRegistry;
  limits: ApiLimits;
  /** Presigns uploads; undefined when S3 is not configured (POST /v1/uploads then answers 503). */
  s3: S3Client | undefined;
  bucket: string | undefined;
  /** Feeds the event streams; undefined turns GET /v1/jobs/{id}/events off (503). */
  events: JobEventHub | undefined;
  /** The admin pages under /admin (worker/http/admin/). */
  admin: AdminOptions;
}

export interface ApiServerOptions extends Omit<ApiDependencies, 'registry' | 'limits' | 'admin'> {
  registry?: HandlerRegistry;
  limits?: Partial<ApiLimits>;
  admin?: Partial<AdminOptions>;
  /**
   * The proxies whose X-Forwarded-For is believed: a number of hops (1: the address a load balancer saw and appended,
   * whatever the client wrote before it), or their addresses or CIDR ranges. The client's address then keys the rate
   * limit of requests without a key (the admin sign-in) and shows in the logs. Without it, behind a load balancer every
   * client has the balancer's address and shares one bucket: one client could lock everyone out of signing in. Never a
   * range clients can send from directly: they could then claim any address.
   */
  trustProxy?: readonly string[] | number;
}

/** The key of the request (set by the auth hook on every non-public route). */
export function keyOf(request: FastifyRequest): ApiKey {
  if (!request.apiKey) throw new ApiError(401, 'UNAUTHENTICATED', 'send an API key: Authorization: Bearer <key>');
  return request.apiKey;
}

/** The tenant a key is limited to (null: an operator key sees every tenant). */
export function tenantScope(request: FastifyRequest): string | null {
  const key = keyOf(request);
  return key.role === 'operator' ? null : key.tenantId;
}

/** Whether the request's key is an operator's (sees every tenant, and what views.ts shows operators only). */
export function isOperatorKey(request: FastifyRequest): boolean {
  return keyOf(request).role === 'operator';
}

/** For actions on one run: checked after the run was found visible, so another tenant's run stays a 404. */
export function requireOperator(request: FastifyRequest, what: string): void {
  if (!isOperatorKey(request)) throw new ApiError(403, 'FORBIDDEN', `${what} needs an operator key`);
}

export const actorOf = (request: FastifyRequest) => {
  const key = keyOf(request);
  return { name: key.name, tenantId: key.role === 'operator' ? null : key.tenantId };
};

const BEARER = /^Bearer[ \t]+(\S+)[ \t]*$/i;

const unauthenticated = (message: string): ApiError => new ApiError(401, 'UNAUTHENTICATED', message, undefined, { 'www-authenticate': 'Bearer' });

/** 429 in the API's error shape; the limiter sets Retry-After itself, a refusal counted by hand passes it. */
function rateLimited(max: number, after: string, retryAfterSeconds?: number): ApiError {
  const headers: Record<string, string> = retryAfterSeconds === undefined ? {} : { 'retry-after': String(retryAfterSeconds) };
  return new ApiError(429, 'RATE_LIMITED', `rate limit of ${max} requests per minute exceeded; retry in ${after}`, undefined, headers);
}

/**
 * Fastify's trustProxy: the trusted addresses and ranges as one list, or for a hop count the function proxy-addr makes
 * of one (hop 0 is the socket's peer, the nearest proxy); off when none is given.
 */
function trustProxySetting(trust: ApiServerOptions['trustProxy']): string | boolean | ((address: string, hop: number) => boolean) {
  if (typeof trust === 'number') return (_address, hop) => hop < trust;
  return trust && trust.length > 0 ? trust.join(',') : false;
}

const ajvCompilers = AjvCompiler();

/**
 * Validators that coerce query strings and path parameters (all text on the wire: `?limit=5` is the number 5) but not
 * JSON bodies, whose values have types of their own: coerced, `"dryRun": null` would be false and purge for real,
 * `"dedupeKey": false` the key "false" shared by every such submit, `"dedupeKey": ""` null (no dedupe at all). A body
 * value of the wrong type is `400 INVALID_REQUEST`, as API.md says.
 */
const bodyStrictValidators: ValidatorFactory = (externalSchemas, serverOptions) => {
  const coercing = ajvCompilers(externalSchemas, serverOptions);
  // The server's options (never JTD here) with coercion off.
  const strictOptions = { ...serverOptions, customOptions: { ...serverOptions?.customOptions, coerceTypes: false } } as Parameters<ValidatorFactory>[1];
  const strict = ajvCompilers(externalSchemas, strictOptions);
  return (route) => (route.httpPart === 'body' ? strict(route) : coercing(route));
};

export async function buildApiServer(options: ApiServerOptions): Promise<FastifyInstance> {
  const deps: ApiDependencies = {
    ...options,
    registry: options.registry ?? defaultRegistry(),
    limits: { ...DEFAULT_LIMITS, ...options.limits },
    admin: { ...DEFAULT_ADMIN_OPTIONS, ...options.admin },
  };
  const app = Fastify({
    // pino's Logger is a FastifyBaseLogger; the cast keeps the instance's type the default one the routes take.
    loggerInstance: options.log.child({ component: 'api' }) as FastifyBaseLogger,
    bodyLimit: deps.limits.bodyLimitBytes,
    requestTimeout: deps.limits.requestTimeoutMs,
    connectionTimeout: deps.limits.requestTimeoutMs * 2,
    // Requests that still arrive while the server closes (on a busy keep-alive connection) are refused by the hook
    // below, in the API's error shape; Fastify's own 503 has another.
    return503OnClosing: false,
    trustProxy: trustProxySetting(options.trustProxy),
    // Refuse unknown fields (naming them) instead of dropping them silently. Query strings and path parameters are
    // text and are coerced to their schema's types; a JSON body is not (bodyStrictValidators).
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true } },
    schemaController: { compilersFactory: { buildValidator: bodyStrictValidators } },
  });
  // A body is JSON or, on the admin pages, a form (their plugin's own parser): Fastify's built-in text/plain parser
  // would hand a JSON text sent as text/plain to the schema as a string ("must be object"), not refuse it as 415.
  app.removeContentTypeParser('text/plain');
  app.decorateRequest('apiKey', null);
  app.decorateRequest('cookieSession', null);
  // First of the hooks: a request refused by authentication still has its span (worker/tracing/).
  registerRequestSpans(app);
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async () => {
    if (closing) throw shuttingDown();
  });
  const routes: string[] = [];
  app.decorate('apiRoutes', routes);
  app.addHook('onRoute', (route) => {
    // The admin pages are HTML for browsers, not API routes: not in the spec (hidden) nor in this list.
    if (route.url.startsWith('/admin')) {
      route.schema = { ...route.schema, hide: true };
      return;
    }
    for (const method of [route.method].flat()) if (method !== 'HEAD') routes.push(`${method} ${route.url}`);
  });
  for (const schema of SHARED_SCHEMAS) app.addSchema(schema);

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'bulk-import API', version: '1', description: 'Submit, follow and steer bulk-import runs. See docs/API.md.' },
      components: { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', description: 'an API key made by `bulk-import api-keys create`' } } },
      security: [{ apiKey: [] }],
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, index) => (typeof json.$id === 'string' ? json.$id : `def-${index}`) },
  });

  // Keys verified once are trusted for a few seconds while revocations can be heard (auth/verified-keys.ts).
  const verifiedKeys = new VerifiedKeyCache(deps.pool, deps.config.databaseUrl ? requireDatabase(deps.config) : undefined, deps.log);
  await verifiedKeys.start();
  app.addHook('onClose', () => verifiedKeys.stop());

  await app.register(rateLimit, {
    global: true,
    max: deps.limits.rateLimitPerMinute,
    timeWindow: 60_000,
    // Per key once authenticated (route hooks run after the auth hook), per address otherwise.
    keyGenerator: (request) => (request.apiKey ? `key:${request.apiKey.id}` : `ip:${request.ip}`),
    errorResponseBuilder: (_request, context) => rateLimited(context.max, context.after),
  });
  // The limiter's own check is a route hook, so it runs after the authentication hook below: a request that hook
  // refuses (401, 403) is counted here instead, in the same buckets (the address's when no key was valid). Without it
  // unauthenticated requests were never limited, and each unknown key or session cost a database lookup.
  const limiter = app.createRateLimit();
  const countRefused = async (request: FastifyRequest): Promise<void> => {
    const counted = await limiter(request);
    if (!counted.isAllowed && counted.isExceeded) throw rateLimited(counted.max, `${counted.ttlInSeconds} s`, counted.ttlInSeconds);
  };
  const countRefusal = async (request: FastifyRequest, refusal: ApiError): Promise<never> => {
    await countRefused(request);
    throw refusal;
  };
  // An address (or key) at its limit gets 429 before its next key or session is looked up.
  const refuseLookupsWhileLimited = async (request: FastifyRequest): Promise<void> => {
    const seen = await limiter(request, { increment: false });
    if (!seen.isAllowed && seen.remaining === 0) throw rateLimited(seen.max, `${seen.ttlInSeconds} s`, seen.ttlInSeconds);
  };

  // The admin pages and the two GET routes that take a session cookie look sessions up behind the same limit.
  const sessionLimit: SessionLimit = { refuseWhileLimited: refuseLookupsWhileLimited, recentSessions: new RecentSessions() };

  // Authentication first: nothing but health and the spec is reachable without a valid key.
  app.addHook('onRequest', async (request) => {
    // The admin pages (and their 404s) check their own session (admin/plugin.ts).
    if ((request.routeOptions.url ?? request.url).startsWith('/admin')) return;
    const access = request.routeOptions.config?.access ?? 'key';
    if (access === 'public') return;
    const match = BEARER.exec(request.headers.authorization ?? '');
    // A signed-in admin page follows a run's events and downloads its failed rows with its session cookie: the
    // session acts as its key. Only read-only GET routes that say so take a cookie (no cross-site writes).
    if (!match && request.routeOptions.config?.sessionCookie && request.method === 'GET') {
      request.cookieSession = await loadSessionWithinLimit(deps.pool, request, sessionLimit);
      if (request.cookieSession) return;
    }
    if (!match) return countRefusal(request, unauthenticated('send an API key: Authorization: Bearer <key>'));
    const key = await verifiedKeys.find(match[1]!, () => refuseLookupsWhileLimited(request));
    if (!key) return countRefusal(request, unauthenticated('the API key is unknown or revoked'));
    request.apiKey = key;
    if (access === 'operator' && key.role !== 'operator') return countRefusal(request, new ApiError(403, 'FORBIDDEN', 'this route needs an operator key'));
  });

  app.setErrorHandler((error, request, reply: FastifyReply) => {
    const { status, body, headers, internal, uncaught } = describeError(error);
    inRequestSpan(request, () => {
      if (internal) request.log.error({ err: error }, 'request failed');
      else if (uncaught) request.log.warn({ err: error, code: body.error.code, status }, 'request refused by the database');
      else if (status !== 404) request.log.info({ code: body.error.code, status }, 'request refused');
    });
    void reply.code(status).headers(headers).type('application/json').send(body);
  });
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url.split('?')[0]}` } });
  });

  registerHealthRoutes(app, deps);
  registerJobRoutes(app, deps);
  registerActionRoutes(app, deps);
  registerUploadRoutes(app, deps);
  registerErrorRoutes(app, deps);
  registerEventRoutes(app, deps, verifiedKeys);
  registerDeadRoutes(app, deps);
  await registerAdminPages(app, deps, deps.admin, { ...sessionLimit, countRefused });
  await app.ready();
  return app;
}
