// A server span per API request (`POST /v1/jobs` …), so that a run submitted through the API has the request as its
// trace root (or joins the caller's trace when the request carries a W3C traceparent header). Plain Fastify hooks:
// the span starts first thing on a request and is made the active context around each route handler (a body is read
// from the socket's events, which would lose a context set earlier); it ends with the response.
import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import type { FastifyInstance, FastifyReply, FastifyRequest, RouteHandlerMethod } from 'fastify';
import { tracer } from './spans.js';

const spans = new WeakMap<FastifyRequest, Span>();

/**
 * Runs `fn` with the request's span active: what it logs carries the span's trace_id and span_id. Fastify calls an
 * error handler outside the route handler's context, so the lines on-call starts from (`request failed`) need it.
 */
export function inRequestSpan<T>(request: FastifyRequest, fn: () => T): T {
  const span = spans.get(request);
  return span ? context.with(trace.setSpan(ROOT_CONTEXT, span), fn) : fn();
}

/** Registers the hooks; call before the routes are added (the route handlers are wrapped as they are registered). */
export function registerRequestSpans(app: FastifyInstance): void {
  app.addHook('onRoute', (route) => {
    const handler = route.handler as RouteHandlerMethod;
    route.handler = function tracedHandler(this: FastifyInstance, request: FastifyRequest, reply: FastifyReply) {
      const span = spans.get(request);
      return span ? context.with(trace.setSpan(context.active(), span), () => handler.call(this, request, reply)) : handler.call(this, request, reply);
    };
  });
  app.addHook('onRequest', async (request) => {
    const parent = propagation.extract(ROOT_CONTEXT, request.headers);
    const route = request.routeOptions.url ?? 'unknown route';
    const span = tracer.startSpan(
      `${request.method} ${route}`,
      { kind: SpanKind.SERVER, attributes: { 'http.request.method': request.method, 'http.route': route, 'url.path': request.url.split('?')[0] } },
      parent,
    );
    spans.set(request, span);
  });
  // The error as an event; the status says ERROR only for a 5xx answer (a refused request is not a server failure).
  app.addHook('onError', async (request, _reply, error) => {
    spans.get(request)?.recordException(error);
  });
  app.addHook('onResponse', async (request, reply) => {
    const span = spans.get(request);
    if (!span) return;
    span.setAttribute('http.response.status_code', reply.statusCode);
    if (reply.statusCode >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
    span.end();
    spans.delete(request);
  });
  // A client that went away before the answer: the span still ends.
  app.addHook('onRequestAbort', async (request) => {
    spans.get(request)?.end();
    spans.delete(request);
  });
}
