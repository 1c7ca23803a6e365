// The one LISTEN session (worker/db/listen-session.ts) every listener in the process is built on, against the real
// database: it hears its own channels only, tells its owner when it goes down and when it is back (so the owner can
// catch up on what was missed), reconnects by itself, and start() never throws when the database is unreachable.
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { ListenSession, type ListenSessionOptions } from '../worker/db/listen-session.js';
import { createLogger } from '../worker/logger.js';
import { useTestEnvironment } from './harness.js';
import { silentLog, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const sessions: ListenSession[] = [];

afterEach(async () => {
  await Promise.all(sessions.splice(0).map((session) => session.stop()));
});

function recorder(overrides: Partial<ListenSessionOptions> = {}) {
  const heard: Array<[string, string]> = [];
  const connects: number[] = [];
  const downs: Array<{ error: unknown; startedAt: number | undefined }> = [];
  const session = new ListenSession({
    database: env.databaseUrl,
    channels: ['test_listen_a', 'test_listen_b'],
    applicationName: 'bulk-import-listen-test',
    log: silentLog,
    downMessage: 'test session down',
    onNotification: (channel, payload) => heard.push([channel, payload]),
    onConnected: (startedAt) => connects.push(startedAt),
    onDown: (error, startedAt) => {
      downs.push({ error, startedAt });
    },
    ...overrides,
  });
  sessions.push(session);
  return { session, heard, connects, downs };
}

describe('ListenSession', () => {
  it('delivers notifications of its channels only, with their payloads', async () => {
    const { session, heard, connects } = recorder();
    await session.start();
    expect(session.connected).toBe(true);
    expect(connects).toHaveLength(1);
    await env.pool.query(`SELECT pg_notify('test_listen_a', 'one'), pg_notify('test_listen_other', 'x'), pg_notify('test_listen_b', '')`);
    await waitFor(async () => heard.length >= 2, 5_000);
    expect(heard).toEqual([
      ['test_listen_a', 'one'],
      ['test_listen_b', ''],
    ]);
  });

  it('reports a lost session, reconnects by itself and says so, and hears notifications again', async () => {
    const { session, heard, connects, downs } = recorder();
    await session.start();
    await env.pool.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bulk-import-listen-test' AND datname = current_database()`,
    );
    await waitFor(async () => downs.length >= 1, 5_000);
    // A session that was up and then went away: no connection attempt was under way.
    expect(downs[0]!.startedAt).toBeUndefined();
    await waitFor(async () => connects.length >= 2, 10_000);
    expect(session.connected).toBe(true);
    await env.pool.query(`SELECT pg_notify('test_listen_a', 'after')`);
    await waitFor(async () => heard.some(([, payload]) => payload === 'after'), 5_000);
  });

  it('start() does not throw when the database is unreachable; the failure goes to onDown, or to the log', async () => {
    const unreachable = 'postgres://nobody@127.0.0.1:1/none';
    const lines: string[] = [];
    const log = createLogger({
      level: 'warn',
      format: 'json',
      destination: new Writable({ write: (chunk, _encoding, done) => (lines.push(String(chunk)), done()) }),
    });
    // An owner that reports the failure itself (the worker's DatabaseStatus) silences the session's own warning.
    const handled = recorder({ database: unreachable, log, onDown: () => true });
    await handled.session.start();
    expect(handled.session.connected).toBe(false);
    await handled.session.stop();
    expect(lines).toEqual([]);

    const { session, downs } = recorder({ database: unreachable, log });
    await session.start();
    expect(session.connected).toBe(false);
    expect(downs).toHaveLength(1);
    expect(typeof downs[0]!.startedAt).toBe('number');
    expect((downs[0]!.error as Error).message).toMatch(/ECONNREFUSED/);
    await waitFor(async () => lines.some((line) => line.includes('test session down')), 5_000);
    await session.stop();
    expect(session.connected).toBe(false);
  });
});
