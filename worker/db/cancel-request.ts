// Cancels the statement a connection is running, the way psql's Ctrl-C does: a CancelRequest (the backend's process id
// and secret key, given at connect) on a new connection to the same host. Postgres reads it before any TLS or
// authentication, so it needs no credentials. Not `pg_cancel_backend(pid)`: behind a proxy the pid the client was
// given is the proxy's, and could name another session's backend. Best effort: a direct connection to Postgres
// honours it; a proxy (RDS Proxy, PgBouncer) may not pass it on, or the host name may lead to another proxy node, and
// then the statement runs on to its own timeouts. A backend with no statement running ignores the request; the server
// never answers one either way.
import { connect, type Socket } from 'node:net';

/** Protocol 3.0's CancelRequest code: 1234 in the high 16 bits, 5678 in the low. */
const CANCEL_REQUEST_CODE = 80_877_102;

/**
 * The parts of a connected pg client a cancel needs: where it connected, and the key the server gave it
 * (BackendKeyData), which pg keeps as `processID` and `secretKey` without declaring them in its types.
 */
export interface CancelTarget {
  host: string;
  port: number;
}

/**
 * Sends the cancel for whatever `client` is running now. Resolves once the request is written and the server has
 * closed that connection, or after `timeoutMs`; never rejects (a cancel is best effort: the statement may end anyway).
 * Returns whether the request was sent.
 */
export function sendCancelRequest(client: CancelTarget, timeoutMs = 5_000): Promise<boolean> {
  const { processID, secretKey } = client as CancelTarget & { processID?: unknown; secretKey?: unknown };
  if (typeof processID !== 'number' || typeof secretKey !== 'number') return Promise.resolve(false);
  const packet = Buffer.alloc(16);
  packet.writeInt32BE(16, 0);
  packet.writeInt32BE(CANCEL_REQUEST_CODE, 4);
  packet.writeInt32BE(processID, 8);
  packet.writeInt32BE(secretKey, 12);
  return new Promise((resolve) => {
    let socket: Socket;
    try {
      socket = client.host.startsWith('/') ? connect(`${client.host}/.s.PGSQL.${client.port}`) : connect(client.port, client.host);
    } catch {
      resolve(false); // no address to reach (pg always sets one)
      return;
    }
    let sent = false;
    const finish = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(sent);
    };
    const timer = setTimeout(finish, timeoutMs);
    timer.unref();
    socket.once('connect', () => socket.write(packet, (error) => (sent = !error)));
    socket.once('close', finish);
    socket.once('error', finish);
    socket.resume();
  });
}
