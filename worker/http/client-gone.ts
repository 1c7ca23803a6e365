// A client can leave while a route awaits its first query (the run's visibility check), before the route could
// listen for it: the connection's 'close' has then been emitted already, and a listener added afterwards never runs.
// Routes that hold something open for a client (an event stream's subscription and keep-alive timer, an export's
// reads waiting for the socket to drain) watch for the client through here, which also answers "gone already".
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * The status logged for a request whose client left before its answer (nginx's code). The routes log it themselves:
 * the reply they still send goes to a closed socket, never finishes, and so never reaches Fastify's request log.
 */
export const CLIENT_CLOSED_REQUEST = 499;

/**
 * Calls `gone` once when the response's connection closes (the client left, or the response ended) and returns true;
 * returns false without calling it when the connection is closed already, so the route can give up at once.
 */
export function whenClientGone(request: FastifyRequest, reply: FastifyReply, gone: () => void): boolean {
  if (request.raw.socket.destroyed || reply.raw.destroyed) return false;
  // The response's 'close', not the socket's: a kept-alive socket outlives many responses, and a listener per
  // response on it would pile up.
  reply.raw.once('close', gone);
  return true;
}
