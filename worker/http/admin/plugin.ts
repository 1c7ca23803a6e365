// The admin pages of `bulk-import serve`, under /admin: server-rendered HTML on the API's own modules (the same
// queries, the same actions, the same authorization). A person signs in with an API key and acts as that key: a
// tenant key sees its tenant only (another tenant's run is "not found") and no operator action. Sessions live in
// admin_sessions (worker/auth/admin-sessions.ts); a POST a browser says came from another origin is refused, and
// every POST carries the session's CSRF token; every page is sent with a Content-Security-Policy that allows only this
// server's own style sheet and script.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { listDeadJobs, purgeDead, replayDead, requireVisibleJob } from '../../actions/run-actions.js';
import { createAdminSession, csrfTokenFor, endAdminSession } from '../../auth/admin-sessions.js';
import { findActiveApiKey } from '../../auth/api-keys.js';
import { INT32_MAX } from '../cursor.js';
import { ApiError, describeError, notFound, SHUTTING_DOWN } from '../errors.js';
import { actorOf, keyOf, requireOperator, type ApiDependencies } from '../server.js';
import { inRequestSpan } from '../../tracing/http-spans.js';
import { ADMIN_ICON, ADMIN_SCRIPT, ADMIN_STYLE } from './assets.js';
import type { Html } from './html.js';
import type { Viewer } from './layout.js';
import { confirmActionPage } from './pages/confirm.js';
import { csvReviewPage } from './pages/csv-review.js';
import { confirmPurgePage, confirmReplayAllPage, deadLettersPage, readDiedNoLaterThan, readKind, readOlderThan } from './pages/dead-letters.js';
import { massImportPage } from './pages/mass-import.js';
import type { AdminOptions } from './options.js';
import { pageAction, type ActionForm } from './pages/run-actions.js';
import { runDetailPage } from './pages/run-detail.js';
import { runsPage, type RunsQuery } from './pages/runs.js';
import { messagePage, signInPage } from './pages/sign-in.js';
import {
  addCookie,
  afterSignIn,
  cookieHeader,
  DUPLICATED_COOKIES_MESSAGE,
  duplicatedCookies,
  loadSessionWithinLimit,
  readAdminCookie,
  requireCsrf,
  requireSameOrigin,
  requireSignInToken,
  SESSION_COOKIE,
  SESSION_ENDED,
  SIGN_IN_COOKIE,
  signInTokenFor,
  type SessionLimit,
} from './session.js';

/** The sign-in form's token lives this long. */
const SIGN_IN_TTL_SECONDS = 15 * 60;
/** Largest form body (a finalize's excluded rows are the longest field). */
const FORM_BODY_LIMIT = 256 * 1024;

const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
};

declare module 'fastify' {
  interface FastifyRequest {
    /** The admin session's token (admin pages only; null before sign-in). */
    adminSessionToken: string | null;
  }
  interface FastifyContextConfig {
    /** Admin pages: reachable before sign-in (the sign-in form and the assets). */
    adminPublic?: boolean;
  }
}

type Form = Record<string, string>;
type IdParams = { Params: { id: number } };

const ID_PARAMS = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } },
} as const;

function viewerOf(request: FastifyRequest): Viewer {
  const token = request.adminSessionToken;
  if (!token) throw new ApiError(401, 'UNAUTHENTICATED', 'sign in first');
  return { key: keyOf(request), csrf: csrfTokenFor(token) };
}

function sendPage(reply: FastifyReply, content: Html, status = 200): FastifyReply {
  return reply.code(status).type('text/html; charset=utf-8').header('cache-control', 'no-store').send(content.text);
}

const field = (form: Form | undefined, name: string): string => (typeof form?.[name] === 'string' ? form[name]! : '');

function actionForm(form: Form | undefined): ActionForm {
  return {
    note: field(form, 'note'),
    resetAttempts: field(form, 'resetAttempts') === 'true',
    excludeRows: field(form, 'excludeRows'),
    validatedAt: field(form, 'validatedAt'),
  };
}

/** A keyset position from the query string: a row or item number (a Postgres integer); anything else is the first page. */
function position(value: unknown, first: number): number {
  const number = typeof value === 'string' && /^\d{1,10}$/.test(value) ? Number(value) : Number.NaN;
  return number <= INT32_MAX ? number : first;
}

/** The query names a page reads as a list. */
const MULTI_VALUED_QUERY = new Set(['state']);

/**
 * The API's rate limiter for requests its route hook never sees (server.ts): a page whose session cookie is unknown
 * is refused by this plugin's own hook, which runs first.
 */
export interface RefusalLimits extends SessionLimit {
  /** Counts a refused request in the address's bucket; 429 once that bucket is over. */
  countRefused(request: FastifyRequest): Promise<void>;
}

export async function registerAdminPages(app: FastifyInstance, deps: ApiDependencies, options: AdminOptions, limits: RefusalLimits): Promise<void> {
  await app.register(
    async (admin) => {
      admin.decorateRequest('adminSessionToken', null);
      admin.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_BODY_LIMIT }, (_request, body, done) => {
        const form: Form = {};
        for (const [name, value] of new URLSearchParams(body as string)) if (!(name in form)) form[name] = value;
        done(null, form);
      });
      // A name repeated in the query string (`?kind=a&kind=b`) reads as an array; every page reads one value of each
      // name but `state` (a set of states), so the first value counts, as for a form's fields.
      admin.addHook('preValidation', async (request) => {
        const query = request.query as Record<string, unknown>;
        for (const [name, value] of Object.entries(query)) if (Array.isArray(value) && !MULTI_VALUED_QUERY.has(name)) query[name] = value[0];
      });
      admin.addHook('onSend', async (_request, reply) => {
        void reply.headers(SECURITY_HEADERS);
      });
      // Every page but the sign-in form and the assets needs a session; a GET without one goes to the sign-in form.
      // An unknown session costs a database lookup: refused ones count against the address, as the API's unknown keys
      // do (and an address at its limit is refused before the lookup, unless the session was seen valid lately:
      // loadSessionWithinLimit).
      admin.addHook('onRequest', async (request, reply) => {
        // First of all, the sign-in included: a POST a browser sent from a page of another origin (a sibling
        // subdomain is same-site: SameSite cookies and the sign-in form's double submit do not stop it) does nothing.
        if (request.method !== 'GET' && request.method !== 'HEAD') requireSameOrigin(request);
        if (request.routeOptions.config?.adminPublic) return;
        const session = await loadSessionWithinLimit(deps.pool, request, limits);
        if (!session) {
          await limits.countRefused(request);
          // To the sign-in form, which comes back here afterwards (a link from a notification keeps its run); a browser
          // that sent a session that no longer holds is told why.
          const ended = readAdminCookie(request, SESSION_COOKIE) !== undefined;
          const next = afterSignIn(request.url);
          const query = new URLSearchParams({ ...(next !== '/admin/runs' ? { next } : {}), ...(ended ? { ended: '1' } : {}) }).toString();
          if (request.method === 'GET' || request.method === 'HEAD') return reply.redirect(`/admin/sign-in${query ? `?${query}` : ''}`, 303);
          throw new ApiError(401, 'UNAUTHENTICATED', SESSION_ENDED);
        }
        request.adminSessionToken = session.token;
      });
      // Every POST of a signed-in page carries the session's CSRF token (checked before the route does anything).
      admin.addHook('preHandler', async (request) => {
        if (request.method === 'POST' && !request.routeOptions.config?.adminPublic) requireCsrf(request.adminSessionToken ?? '', request.body);
      });
      admin.setErrorHandler((error, request, reply) => {
        const { status, body, headers, internal, uncaught } = describeError(error);
        inRequestSpan(request, () => {
          if (internal) request.log.error({ err: error }, 'admin page failed');
          else if (uncaught) request.log.warn({ err: error, code: body.error.code, status }, 'admin request refused by the database');
          else if (status !== 404) request.log.info({ code: body.error.code, status }, 'admin request refused');
        });
        const viewer = request.adminSessionToken && request.apiKey ? viewerOf(request) : null;
        const title =
          status === 404 ? 'Not found' : status === 403 ? 'Not allowed' : status === 401 ? 'Sign in' : body.error.code === SHUTTING_DOWN ? 'Restarting' : status >= 500 ? 'Something went wrong' : 'Refused';
        void reply.headers(headers);
        // A form sent after the session ended: the sign-in form itself, coming back to the form's page afterwards
        // (what was typed in it is lost: a POST is not replayed after a sign-in).
        if (status === 401 && viewer === null) return sendSignIn(request, reply, SESSION_ENDED, afterSignIn(request.url), 401);
        return sendPage(reply, messagePage(title, body.error.message, viewer), status);
      });
      admin.setNotFoundHandler((request, reply) =>
        sendPage(reply, messagePage('Not found', `no page ${request.url.split('?')[0]}`, request.adminSessionToken && request.apiKey ? viewerOf(request) : null), 404),
      );

      for (const asset of [ADMIN_STYLE, ADMIN_SCRIPT, ADMIN_ICON]) {
        admin.get(asset.path.slice('/admin'.length), { config: { adminPublic: true } }, async (_request, reply) =>
          reply.type(asset.type).header('cache-control', 'public, max-age=31536000, immutable').send(asset.body),
        );
      }

      admin.get('', async (_request, reply) => reply.redirect('/admin/runs', 303));

      /** The sign-in form, its token in a cookie for the POST to match. */
      const sendSignIn = (request: FastifyRequest, reply: FastifyReply, message: string | undefined, next: string, status = 200) => {
        const token = signInTokenFor(request);
        addCookie(reply, cookieHeader(request, options, SIGN_IN_COOKIE, token, SIGN_IN_TTL_SECONDS, '/admin/sign-in'));
        return sendPage(reply, signInPage(token, message, next === '/admin/runs' ? undefined : next), status);
      };
      admin.get<{ Querystring: { next?: string; ended?: string } }>('/sign-in', { config: { adminPublic: true } }, async (request, reply) => {
        const message = duplicatedCookies(request).length > 0 ? DUPLICATED_COOKIES_MESSAGE : request.query.ended ? SESSION_ENDED : undefined;
        return sendSignIn(request, reply, message, afterSignIn(request.query.next));
      });
      admin.post<{ Body: Form | undefined }>('/sign-in', { config: { adminPublic: true } }, async (request, reply) => {
        requireSignInToken(request, request.body);
        const key = await findActiveApiKey(deps.pool, field(request.body, 'key').trim());
        if (!key) {
          request.log.info('admin sign-in refused');
          return sendSignIn(request, reply, 'That API key is unknown or revoked.', afterSignIn(field(request.body, 'next')), 401);
        }
        const session = await createAdminSession(deps.pool, key.id, options.sessionTtlMs);
        request.log.info({ actor: key.name, role: key.role }, 'admin signed in');
        addCookie(reply, cookieHeader(request, options, SIGN_IN_COOKIE, '', 0, '/admin/sign-in'));
        addCookie(reply, cookieHeader(request, options, SESSION_COOKIE, session.token, options.sessionTtlMs / 1000));
        return reply.redirect(afterSignIn(field(request.body, 'next')), 303);
      });
      admin.post('/sign-out', async (request, reply) => {
        await endAdminSession(deps.pool, request.adminSessionToken ?? '');
        request.log.info({ actor: request.apiKey?.name }, 'admin signed out');
        addCookie(reply, cookieHeader(request, options, SESSION_COOKIE, '', 0));
        return reply.redirect('/admin/sign-in', 303);
      });

      admin.get<{ Querystring: RunsQuery }>('/runs', async (request, reply) => sendPage(reply, await runsPage(deps, viewerOf(request), request.query)));
      admin.get<IdParams & { Querystring: { done?: string } }>('/runs/:id', { schema: { params: ID_PARAMS } }, async (request, reply) =>
        sendPage(reply, await runDetailPage(deps, viewerOf(request), request.params.id, request.query.done)),
      );
      admin.get<IdParams & { Querystring: { after?: string } }>('/runs/:id/review', { schema: { params: ID_PARAMS } }, async (request, reply) =>
        sendPage(reply, await csvReviewPage(deps, viewerOf(request), request.params.id, position(request.query.after, 0))),
      );
      admin.get<IdParams & { Querystring: { after?: string } }>('/runs/:id/files', { schema: { params: ID_PARAMS } }, async (request, reply) =>
        sendPage(reply, await massImportPage(deps, viewerOf(request), request.params.id, position(request.query.after, -1))),
      );

      const ACTION_PARAMS = { ...ID_PARAMS, required: ['id', 'action'], properties: { ...ID_PARAMS.properties, action: { type: 'string' } } };
      admin.get<{ Params: { id: number; action: string } }>('/runs/:id/:action', { schema: { params: ACTION_PARAMS } }, async (request, reply) => {
        const action = pageAction(request.params.action);
        if (!action) throw notFound(`no page ${request.url.split('?')[0]}`);
        return sendPage(reply, await confirmActionPage(deps, viewerOf(request), request.params.id, action));
      });
      admin.post<{ Params: { id: number; action: string }; Body: Form | undefined }>(
        '/runs/:id/:action',
        { schema: { params: ACTION_PARAMS } },
        async (request, reply) => {
          const action = pageAction(request.params.action);
          if (!action) throw notFound(`no page ${request.url.split('?')[0]}`);
          const { id } = request.params;
          const actor = actorOf(request);
          // The API's order: the run must be visible (else 404, as if it did not exist), then the role.
          await requireVisibleJob(deps.pool, actor, id);
          if (action.operatorOnly) requireOperator(request, action.name);
          const form = actionForm(request.body);
          try {
            await action.run(deps.pool, actor, id, form);
          } catch (error) {
            const { status, body, uncaught } = describeError(error);
            if (status >= 500 || status === 404) throw error;
            if (uncaught) request.log.warn({ err: error, jobId: id, action: action.name }, 'admin action refused by the database');
            const staleReview = body.error.code === 'REVIEW_STALE';
            return sendPage(reply, await confirmActionPage(deps, viewerOf(request), id, action, { error: body.error.message, form, staleReview }), status);
          }
          request.log.info({ jobId: id, action: action.name, actor: actor.name }, 'run action (admin page)');
          return reply.redirect(`/admin/runs/${id}?done=${action.name}`, 303);
        },
      );

      const operatorOnly = (request: FastifyRequest) => requireOperator(request, 'the dead-letter pages');
      admin.get<{ Querystring: { kind?: string; cursor?: string; done?: string; skipped?: string } }>('/dead', async (request, reply) => {
        operatorOnly(request);
        return sendPage(reply, await deadLettersPage(deps, viewerOf(request), request.query));
      });
      admin.get<{ Querystring: { kind?: string } }>('/dead/replay', async (request, reply) => {
        operatorOnly(request);
        return sendPage(reply, confirmReplayAllPage(viewerOf(request), readKind(request.query.kind)));
      });
      admin.post<{ Body: Form | undefined }>('/dead/replay', async (request, reply) => {
        operatorOnly(request);
        const kind = readKind(field(request.body, 'kind'));
        const form = actionForm(request.body);
        // Replay exactly what the list shows: an empty dead list replays nothing.
        if ((await listDeadJobs(deps.pool, { kinds: kind ? [kind] : undefined, limit: 1 })).length === 0) {
          return sendPage(reply, confirmReplayAllPage(viewerOf(request), kind, 'There are no dead runs to replay.'), 409);
        }
        const { replayed, skipped } = await replayDead(deps.pool, actorOf(request), {
          all: true,
          kinds: kind ? [kind] : undefined,
          resetAttempts: form.resetAttempts,
          note: form.note.trim() || null,
        });
        request.log.info({ count: replayed.length, skipped: skipped.length, kind: kind || null, actor: request.apiKey?.name }, 'dead runs replayed (admin page)');
        const left = skipped.length > 0 ? `&skipped=${skipped.length}` : '';
        return reply.redirect(`/admin/dead?done=replay${left}${kind ? `&kind=${encodeURIComponent(kind)}` : ''}`, 303);
      });
      admin.get<{ Querystring: { kind?: string; olderThan?: string } }>('/dead/purge', async (request, reply) => {
        operatorOnly(request);
        return sendPage(reply, await confirmPurgePage(deps, viewerOf(request), readKind(request.query.kind), readOlderThan(request.query.olderThan)));
      });
      admin.post<{ Body: Form | undefined }>('/dead/purge', async (request, reply) => {
        operatorOnly(request);
        const kind = readKind(field(request.body, 'kind'));
        const olderThan = readOlderThan(field(request.body, 'olderThan'));
        const purged = await purgeDead(deps.pool, actorOf(request), {
          olderThanMs: olderThan.ms,
          kinds: kind ? [kind] : undefined,
          diedNoLaterThan: readDiedNoLaterThan(field(request.body, 'diedNoLaterThan')),
          note: field(request.body, 'note').trim() || null,
        });
        request.log.info({ count: purged.length, kind: kind || null, actor: request.apiKey?.name }, 'dead runs purged (admin page)');
        return reply.redirect(`/admin/dead?done=purge${kind ? `&kind=${encodeURIComponent(kind)}` : ''}`, 303);
      });
    },
    { prefix: '/admin' },
  );
}

