// A server-sent events client for tests: reads the stream of GET /v1/jobs/{id}/events as it arrives, parses each
// event, and lets a test wait for the first event (past or future) that matches.
import type { TestApi } from './api-server.js';

export interface ServerSentEvent {
  id: string | undefined;
  event: string;
  data: Record<string, unknown>;
}

export interface EventStream {
  status: number;
  /** A refused stream's answer (`{error: {code, message}}`), read to its end; undefined for a stream. */
  refusal: { error: { code: string; message: string } } | undefined;
  events: ServerSentEvent[];
  waitFor(match: (event: ServerSentEvent) => boolean, timeoutMs?: number): Promise<ServerSentEvent>;
  close(): void;
  closed: Promise<void>;
}

function parseRefusal(text: string): EventStream['refusal'] {
  try {
    return JSON.parse(text) as EventStream['refusal'];
  } catch {
    return { error: { code: '(not JSON)', message: text } };
  }
}

export async function openEvents(api: Pick<TestApi, 'url'>, jobId: number, key: string, lastEventId?: string): Promise<EventStream> {
  const abort = new AbortController();
  const headers: Record<string, string> = { authorization: `Bearer ${key}`, accept: 'text/event-stream' };
  if (lastEventId) headers['last-event-id'] = lastEventId;
  const response = await fetch(`${api.url}/v1/jobs/${jobId}/events`, { headers, signal: abort.signal });
  // A refusal's body is read to its end, so that its connection goes back to the pool, not left half-read.
  const refusal = response.status === 200 ? undefined : parseRefusal(await response.text());
  const events: ServerSentEvent[] = [];
  const waiters = new Set<() => void>();
  let ended = false;
  const closed = (async () => {
    if (!response.body || refusal !== undefined) return;
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of response.body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = new Map<string, string>();
          for (const line of block.split('\n')) {
            if (line.startsWith(':') || line === '') continue;
            const colon = line.indexOf(':');
            fields.set(line.slice(0, colon), line.slice(colon + 1).trimStart());
          }
          if (!fields.has('data')) continue;
          events.push({ id: fields.get('id'), event: fields.get('event') ?? 'message', data: JSON.parse(fields.get('data')!) as Record<string, unknown> });
          for (const waiter of [...waiters]) waiter();
        }
      }
    } catch {
      // aborted by close()
    } finally {
      ended = true;
      for (const waiter of [...waiters]) waiter();
    }
  })();
  return {
    status: response.status,
    refusal,
    events,
    closed,
    close: () => abort.abort(),
    waitFor(match, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = events.find(match);
          if (found || ended) {
            waiters.delete(check);
            clearTimeout(timer);
            if (found) resolve(found);
            else reject(new Error(`stream ended without a matching event; got ${JSON.stringify(events.map((e) => [e.event, e.data.state]))}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no matching event within ${timeoutMs} ms; got ${JSON.stringify(events.map((e) => [e.event, e.data.state]))}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
  };
}
