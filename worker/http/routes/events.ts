// GET /v1/jobs/{id}/events: server-sent events of a run's state and progress changes. The stream opens with a
// `snapshot` (the run as it is) — or, when the client reconnects with Last-Event-ID and this process still holds what
// came after it, with exactly the events it missed — then `state` and `progress` events as they happen, and a comment
// line every eventKeepAliveMs so proxies keep it open. Event ids are `<token>.<number>`: the run's own sequence here.
// A stream ends when the key or admin session that opened it no longer would: the key revoked, the session signed out
// or expired.
import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { requireVisibleJob } from '../../actions/run-actions.js';
import { liveAdminSessionIds } from '../../auth/admin-sessions.js';
import { activeApiKeyIds } from '../../auth/api-keys.js';
import { isDatabaseAway } from '../../db/database-status.js';
import type { AccessEnded } from '../../auth/verified-keys.js';
import type { JobRow } from '../../queue/types.js';
import { CLIENT_CLOSED_REQUEST, whenClientGone } from '../client-gone.js';
import { ApiError, shuttingDown } from '../errors.js';
import type { JobEvent } from '../event-hub.js';
import { ERROR_RESPONSES, JOB_ID_PARAMS } from '../schemas.js';
import { actorOf, isOperatorKey, keyOf, type ApiDependencies } from '../server.js';
import { jobSummaryView } from '../views.js';

/** The longest delay setTimeout keeps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

const LAST_EVENT_ID = /^([0-9a-f]{8})\.(\d{1,15})$/;

function frame(id: string, type: string, data: unknown): string {
  return `id: ${id}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** Where a server hears of revoked keys and signed-out sessions (auth/verified-keys.ts). */
export interface RevocationSource {
  onRevocation(listener: (ended: AccessEnded) => void): () => void;
}

/** Open streams grouped by what opened them (a key id, a session id), to end them together. */
class StreamGroups<K> {
  private readonly groups = new Map<K, Set<ServerResponse>>();
  constructor(private readonly endStream: (raw: ServerResponse) => void) {}
  add(id: K, raw: ServerResponse): void {
    this.groups.set(id, (this.groups.get(id) ?? new Set()).add(raw));
  }
  delete(id: K, raw: ServerResponse): void {
    const streams = this.groups.get(id);
    streams?.delete(raw);
    if (streams?.size === 0) this.groups.delete(id);
  }
  end(id: K): void {
    for (const raw of this.groups.get(id) ?? []) this.endStream(raw);
  }
  ids(): K[] {
    return [...this.groups.keys()];
  }
  count(id: K): number {
    return this.groups.get(id)?.size ?? 0;
  }
}

/** The longest wait between checks of open streams' keys while the database is away. */
const RECHECK_MS = 5_000;
/** How long open streams wait for a check of their keys the database cannot make (retryLater), from its first failure. */
const RECHECK_DEADLINE_MS = 60_000;
/** How long a client refused for too many open streams is told to wait: streams free up as their clients leave. */
const STREAMS_RETRY_AFTER_SECONDS = 30;

/**
 * 503 SHUTTING_DOWN for a stream request that reached a closing server, its connection closed after the answer:
 * Fastify says `Connection: close` only to requests routed once the close began, and server.close() would otherwise
 * wait for this kept-alive connection until its client leaves or it times out.
 */
function refusedWhileClosing(): ApiError {
  const refusal = shuttingDown();
  return new ApiError(refusal.statusCode, refusal.code, refusal.message, undefined, { ...refusal.headers, connection: 'close' });
}

export function registerEventRoutes(app: FastifyInstance, deps: ApiDependencies, revocations: RevocationSource): void {
  /**
   * What stops each open stream's writers: its keep-alive timer and its run's events. A stream ends through
   * `endStream`, which stops them first: the response's 'close' (where they stop too) comes only once what was written
   * has reached the client, and a client that reads nothing holds it off for as long as it likes. A write after the
   * end meanwhile raises an 'error' on the response that nothing hears — and brings the process down. An ended stream
   * whose client still reads nothing after eventEndGraceMs is cut off: it keeps its key's place until then.
   */
  const stoppers = new Map<ServerResponse, () => void>();
  const endStream = (raw: ServerResponse) => {
    stoppers.get(raw)?.();
    if (raw.destroyed) return;
    raw.end();
    const cutOff = setTimeout(() => raw.destroy(), deps.limits.eventEndGraceMs);
    raw.once('close', () => clearTimeout(cutOff));
  };
  // Streams never end by themselves: a closing server ends them (clients reconnect to another process).
  const open = new Set<ServerResponse>();
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
    clearTimeout(recheck.timer);
    for (const raw of open) endStream(raw);
  });
  // A stream outlives the check of its key or session: when the key is revoked or the admin session that opened it
  // signs out, its streams end, and the client's reconnect is refused like any request of theirs. When some may have
  // been missed (the listener reconnected), the keys and sessions of the open streams are checked again.
  const byKey = new StreamGroups<number>(endStream);
  const bySession = new StreamGroups<string>(endStream);
  // Streams per key counted from the moment one is let in, before its reads, so that opens racing each other cannot
  // pass the limit together (byKey holds only streams already answering, the ones a revocation ends).
  const admitted = new StreamGroups<number>(endStream);
  const endStreams = (keyIds: Iterable<number>, sessionIds: Iterable<string>) => {
    for (const keyId of keyIds) byKey.end(keyId);
    for (const sessionId of sessionIds) bySession.end(sessionId);
  };
  /**
   * Checks these keys and sessions in the tables and ends the streams of those no longer valid (after the listener
   * reconnected, and right after a stream opened). A check that fails because the database is away (isDatabaseAway:
   * revoking a key writes to it, so nothing can be revoked meanwhile) is made again, the streams open meanwhile, for up
   * to RECHECK_DEADLINE_MS (retryLater): a restart or failover then does not end every stream of the process at once.
   * Any other failure ends their streams: a stream is not kept on a key nobody could confirm, and the client's
   * reconnect (with Last-Event-ID, so nothing is lost) is checked like any request.
   */
  const endRevoked = (keyIds: number[], sessionIds: string[], log: FastifyBaseLogger) => {
    const check = async () => {
      if (keyIds.length > 0) {
        const active = await activeApiKeyIds(deps.pool, keyIds);
        for (const keyId of keyIds) if (!active.has(keyId)) byKey.end(keyId);
      }
      if (sessionIds.length > 0) {
        const live = await liveAdminSessionIds(deps.pool, sessionIds);
        for (const sessionId of sessionIds) if (!live.has(sessionId)) bySession.end(sessionId);
      }
    };
    check().then(
      () => {
        if (recheck.keys.size + recheck.sessions.size === 0 && recheck.timer === undefined) recheck.since = 0;
      },
      (error: unknown) => {
        if (closing) return;
        if (isDatabaseAway(error)) return retryLater(keyIds, sessionIds, log, error);
        log.warn({ err: error, streams_ended: keyIds.length + sessionIds.length }, 'event streams: could not check their keys and sessions again; ended them');
        endStreams(keyIds, sessionIds);
      },
    );
  };
  /**
   * The re-checks waiting for the database, merged: one timer, whatever the number of reconnects and streams. Until
   * RECHECK_DEADLINE_MS after the first failure the streams stay open (a revocation made while the listener was down
   * may be among them, so not longer); then they end as any unconfirmed stream does.
   */
  const recheck = { keys: new Set<number>(), sessions: new Set<string>(), since: 0, attempt: 0, timer: undefined as NodeJS.Timeout | undefined };
  const retryLater = (keyIds: number[], sessionIds: string[], log: FastifyBaseLogger, error: unknown) => {
    for (const keyId of keyIds) recheck.keys.add(keyId);
    for (const sessionId of sessionIds) recheck.sessions.add(sessionId);
    const now = Date.now();
    if (recheck.since === 0) {
      recheck.since = now;
      recheck.attempt = 0;
      log.info({ err: error }, 'event streams: the database is away; their keys and sessions are checked again once it answers');
    }
    if (now - recheck.since >= RECHECK_DEADLINE_MS) {
      log.warn({ err: error, streams_ended: recheck.keys.size + recheck.sessions.size }, 'event streams: could not check their keys and sessions again; ended them');
      endStreams(recheck.keys, recheck.sessions);
      recheck.keys.clear();
      recheck.sessions.clear();
      recheck.since = 0;
      return;
    }
    if (recheck.timer !== undefined) return;
    recheck.timer = setTimeout(
      () => {
        recheck.timer = undefined;
        // Only those still streaming: the others' streams ended meanwhile.
        const keys = [...recheck.keys].filter((keyId) => byKey.count(keyId) > 0);
        const sessions = [...recheck.sessions].filter((sessionId) => bySession.count(sessionId) > 0);
        recheck.keys.clear();
        recheck.sessions.clear();
        recheck.attempt += 1;
        if (keys.length + sessions.length > 0) endRevoked(keys, sessions, log);
        else recheck.since = 0;
      },
      Math.min(RECHECK_MS, 250 * 2 ** recheck.attempt),
    );
  };
  const stopHearing = revocations.onRevocation((ended) => {
    if (ended === null) endRevoked(byKey.ids(), bySession.ids(), deps.log);
    else if ('keyId' in ended) byKey.end(ended.keyId);
    else bySession.end(ended.sessionId);
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
      // The server began to close during that read (the request had passed the onRequest check): preClose has ended
      // the streams open then and would not see this one, whose client (EventSource never leaves) would keep the
      // server from closing. Refused like any request that reaches a closing server; the client retries elsewhere.
      if (closing) throw refusedWhileClosing();
      const keyId = keyOf(request).id;
      const most = deps.limits.eventStreamsPerKey;
      if (admitted.count(keyId) >= most) {
        throw new ApiError(
          429,
          'TOO_MANY_STREAMS',
          `this key has ${most} event streams open on this server, the most one key may; close one, then retry`,
          undefined,
          { 'retry-after': String(STREAMS_RETRY_AFTER_SECONDS) },
        );
      }
      const raw = reply.raw;
      admitted.add(keyId, raw);

      // Follow first, then read: nothing can happen between the snapshot and the first live event unseen.
      const pending: JobEvent[] = [];
      let live = false;
      let lastSent = 0;
      // Nothing is written once the stream has ended (endStream stops the writers first: this is the second guard).
      const write = (text: string) => {
        if (!raw.writableEnded && !raw.destroyed) raw.write(text);
      };
      const send = (event: JobEvent) => {
        if (event.seq <= lastSent) return;
        lastSent = event.seq;
        write(frame(`${subscription.token}.${event.seq}`, event.type, event.data));
      };
      const subscription = hub.subscribe(jobId, (event) => (live ? send(event) : pending.push(event)));
      // Both started once the stream's headers are out (a write before them would send headers of its own).
      const timers: { keepAlive?: NodeJS.Timeout; expiry?: NodeJS.Timeout } = {};
      const session = request.cookieSession;
      // Writers stop at the stream's end (endStream) or its close, whichever comes first; the key's place is given back
      // at the close, once the connection is gone.
      let writing = true;
      const stopWriting = () => {
        if (!writing) return;
        writing = false;
        clearInterval(timers.keepAlive);
        clearTimeout(timers.expiry);
        subscription.unsubscribe();
        stoppers.delete(raw);
        open.delete(raw);
        byKey.delete(keyId, raw);
        if (session) bySession.delete(session.id, raw);
      };
      const stop = () => {
        stopWriting();
        admitted.delete(keyId, raw);
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
      // Closing since (as after the first read): refused before it is a stream. Nothing awaits from here on until the
      // stream is in `open`, so a later preClose ends it.
      if (closing) {
        stop();
        throw refusedWhileClosing();
      }
      reply.hijack();
      stoppers.set(raw, stopWriting);
      // Fastify's own error listener goes with the hijack: a socket error (a reset) is the client gone ('close' follows).
      raw.on('error', (error) => request.log.debug({ err: error, jobId }, 'event stream: the connection failed'));
      open.add(raw);
      byKey.add(keyId, raw);
      if (session) bySession.add(session.id, raw);
      // A revocation or sign-out heard after the check and before this stream was registered found nothing to end:
      // check once more now that the stream is registered (later ones find it). One or two queries per stream opened.
      endRevoked([keyId], session ? [session.id] : [], request.log);
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      write('retry: 2000\n\n');
      timers.keepAlive = setInterval(() => write(': keep-alive\n\n'), deps.limits.eventKeepAliveMs);
      // A session's stream ends when the session expires, as its next page would be refused. A timer waits at most
      // 2^31 - 1 ms (about 24.8 days; a longer delay fires at once), and `serve --session-hours` allows 30 days.
      const endAtExpiry = (expiresAt: number) => {
        const left = expiresAt - Date.now();
        if (left <= 0) endStream(raw);
        else timers.expiry = setTimeout(() => endAtExpiry(expiresAt), Math.min(left, MAX_TIMER_MS));
      };
      if (session) endAtExpiry(session.expiresAt.getTime());
      const resume = LAST_EVENT_ID.exec(String(request.headers['last-event-id'] ?? ''));
      const missed = resume ? hub.eventsAfter(jobId, resume[1]!, Number(resume[2])) : null;
      if (missed) {
        lastSent = Number(resume![2]);
        for (const event of missed) send(event);
      } else {
        hub.noteSnapshot(jobId, job);
        lastSent = subscription.sinceSeq;
        write(frame(`${subscription.token}.${subscription.sinceSeq}`, 'snapshot', jobSummaryView(job, isOperatorKey(request))));
      }
      live = true;
      for (const event of pending) send(event);
      pending.length = 0;
    },
  );
}

