// GET /v1/jobs/{id}/events: server-sent events of a run's state and progress changes. The stream opens with a
// `snapshot` (the run as it is) — or, when the client reconnects with Last-Event-ID and this process still holds what
// came after it, with exactly the events it missed — then `state` and `progress` events as they happen, and a comment
// line every eventKeepAliveMs so proxies keep it open. Event ids are `<process>.<sequence>`.
import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { requireVisibleJob } from '../../actions/run-actions.js';
import { activeApiKeyIds } from '../../auth/api-keys.js';
import type { JobRow } from '../../queue/types.js';
import { CLIENT_CLOSED_REQUEST, whenClientGone } from '../client-gone.js';
import { ApiError } from '../errors.js';
import type { JobEvent } from '../event-hub.js';
import { ERROR_RESPONSES, JOB_ID_PARAMS } from '../schemas.js';
import { actorOf, keyOf, type ApiDependencies } from '../server.js';
import { jobSummaryView } from '../views.js';

const LAST_EVENT_ID = /^([0-9a-f]{8})\.(\d{1,15})$/;

function frame(id: string, type: string, data: unknown): string {
  return `id: ${id}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** Where a server hears of revoked keys (auth/verified-keys.ts). */
export interface RevocationSource {
  onRevocation(listener: (keyId: number | null) => void): () => void;
}

export function registerEventRoutes(app: FastifyInstance, deps: ApiDependencies, revocations: RevocationSource): void {
  // Streams never end by themselves: a closing server ends them (clients reconnect to another process).
  const open = new Set<ServerResponse>();
  app.addHook('preClose', async () => {
    for (const raw of open) raw.end();
  });
  // A stream outlives the check of its key: when the key is revoked, its streams end, and the client's reconnect is
  // refused like any request of a revoked key. When revocations may have been missed (the revocation listener
  // reconnected), the keys of the open streams are checked again.
  const byKey = new Map<number, Set<ServerResponse>>();
  const endStreamsOf = (keyId: number) => {
    for (const raw of byKey.get(keyId) ?? []) raw.end();
  };
  /** Checks these keys in the table and ends the streams of those revoked. */
  const endRevoked = (keyIds: number[], log: FastifyBaseLogger) => {
    if (keyIds.length === 0) return;
    activeApiKeyIds(deps.pool, keyIds)
      .then((active) => {
        for (const keyId of keyIds) if (!active.has(keyId)) endStreamsOf(keyId);
      })
      .catch((error: unknown) => log.warn({ err: error }, 'event streams: could not check their keys again'));
  };
  const stopHearing = revocations.onRevocation((keyId) => {
    if (keyId !== null) endStreamsOf(keyId);
    else endRevoked([...byKey.keys()], deps.log);
  });
  app.addHook('onClose', async () => stopHearing());
  app.get<{ Params: { id: number } }>(
    '/v1/jobs/:id/events',
    {
      config: { sessionCookie: true },
      schema: {
        tags: ['jobs'],
        summary: 'server-sent events (text/event-stream): snapshot, then state and progress changes; reconnect with Last-Event-ID',
        params: JOB_ID_PARAMS,
        headers: { type: 'object', properties: { 'last-event-id': { type: 'string', maxLength: 64 } } },
        response: { 200: { description: 'text/event-stream', type: 'string' }, ...ERROR_RESPONSES },
      },
    },
    async (request, reply) => {
      const hub = deps.events;
      if (!hub) throw new ApiError(503, 'EVENTS_UNAVAILABLE', 'event streams are off in this server');
      const jobId = request.params.id;
      await requireVisibleJob(deps.pool, actorOf(request), jobId);

      // Follow first, then read: nothing can happen between the snapshot and the first live event unseen.
      const pending: JobEvent[] = [];
      let live = false;
      let lastSent = 0;
      const raw = reply.raw;
      const send = (event: JobEvent) => {
        if (event.seq <= lastSent) return;
        lastSent = event.seq;
        raw.write(frame(`${hub.bootId}.${event.seq}`, event.type, event.data));
      };
      const subscription = hub.subscribe(jobId, (event) => (live ? send(event) : pending.push(event)));
      const keepAlive = setInterval(() => raw.write(': keep-alive\n\n'), deps.limits.eventKeepAliveMs);
      const keyId = keyOf(request).id;
      const stop = () => {
        clearInterval(keepAlive);
        subscription.unsubscribe();
        open.delete(raw);
        const streams = byKey.get(keyId);
        streams?.delete(raw);
        if (streams?.size === 0) byKey.delete(keyId);
      };
      if (!whenClientGone(request, reply, stop)) {
        stop();
        request.log.info({ jobId, statusCode: CLIENT_CLOSED_REQUEST }, 'event stream not opened: the client left');
        return reply.code(CLIENT_CLOSED_REQUEST).send();
      }

      let job: JobRow;
      try {
        job = await requireVisibleJob(deps.pool, actorOf(request), jobId);
      } catch (error) {
        stop();
        throw error;
      }
      // Left during that read: `stop` has run already.
      if (raw.destroyed) return reply.code(CLIENT_CLOSED_REQUEST).send();
      reply.hijack();
      open.add(raw);
      byKey.set(keyId, (byKey.get(keyId) ?? new Set()).add(raw));
      // A revocation heard after the key was checked and before this stream was registered found nothing to end: check
      // the key once more now that the stream is registered (later revocations find it). One query per stream opened.
      endRevoked([keyId], request.log);
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      raw.write('retry: 2000\n\n');
      const resume = LAST_EVENT_ID.exec(String(request.headers['last-event-id'] ?? ''));
      const missed = resume ? hub.eventsAfter(jobId, resume[1]!, Number(resume[2])) : null;
      if (missed) {
        lastSent = Number(resume![2]);
        for (const event of missed) send(event);
      } else {
        hub.noteSnapshot(jobId, job);
        lastSent = subscription.sinceSeq;
        raw.write(frame(`${hub.bootId}.${subscription.sinceSeq}`, 'snapshot', jobSummaryView(job)));
      }
      live = true;
      for (const event of pending) send(event);
      pending.length = 0;
    },
  );
}

