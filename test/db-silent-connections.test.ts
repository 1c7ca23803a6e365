// Pooled connections with a client-side statement timeout (the claim and lease sessions) whose connection goes silent
// (a failover that takes the old primary's address away): a statement that got no answer must cost its connection,
// never the pool. pg keeps a timed-out statement as the connection's active one and queues the next statements
// behind it, so a connection handed back as it is takes each next holder into the same silence.
import { afterEach, describe, expect, it } from 'vitest';
import { createPool, withTransaction, type Pool } from '../worker/db/pool.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { rescueExpiredLeases } from '../worker/queue/maintenance.js';
import { isConnectionError } from '../worker/db/database-status.js';
import { SilentConnectionError, SilentConnectionWatch } from '../worker/db/silent-connections.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { recordingLogger } from './support/recording-logger.js';
import { startSilencingProxy, type SilencingProxy } from './support/silencing-proxy.js';

const env = useTestEnvironment();
const open: Array<{ pool: Pool; proxy: SilencingProxy }> = [];
const watches: SilentConnectionWatch[] = [];
const pools: Pool[] = [];
afterEach(async () => {
  for (const watch of watches.splice(0)) await watch.stop();
  for (const pool of pools.splice(0)) await pool.end().catch(() => {});
  for (const { pool, proxy } of open.splice(0)) {
    await proxy.close();
    await pool.end().catch(() => {});
  }
  await env.pool.query('DELETE FROM jobs');
});

/**
 * A one-connection pool through a silencing proxy, its connection open and then silenced; `null`: no pool timeout.
 * The timeout also bounds the statements on the new connection after it: long enough for a busy machine.
 */
async function silencedPool(queryTimeoutMs: number | null = 1_500): Promise<Pool> {
  const proxy = await startSilencingProxy(env.databaseUrl);
  const pool = createPool(proxy.url, { max: 1, ...(queryTimeoutMs === null ? {} : { queryTimeoutMs }) });
  pool.on('error', () => {});
  open.push({ pool, proxy });
  await pool.query('SELECT 1');
  expect(proxy.silenceExisting()).toBe(1);
  return pool;
}

describe('a pooled connection that goes silent', () => {
  it('a transaction on it fails at its timeout and the next one runs on a new connection', async () => {
    const pool = await silencedPool();
    await expect(withTransaction(pool, (client) => client.query('SELECT 2'))).rejects.toThrow(/Query read timeout/);
    const { rows } = await withTransaction(pool, (client) => client.query<{ n: number }>('SELECT 3 AS n'));
    expect(rows).toEqual([{ n: 3 }]);
  });

  it('a rescue gives up at its own timeout (the main pool has none), and the next one rescues on a new connection', async () => {
    const pool = await silencedPool(null);
    const { rows } = await env.pool.query<{ id: number }>(
      `INSERT INTO jobs (kind, state, attempts, lease_owner, lease_expires_at, started_at)
       VALUES ('noop', 'running', 1, 'gone', now() - interval '1 minute', now()) RETURNING id`,
    );
    await expect(rescueExpiredLeases(pool, 1000, 500)).rejects.toThrow(/Query read timeout/);
    expect((await rescueExpiredLeases(pool, 1000, 10_000)).requeued).toEqual([rows[0]!.id]);
  });

  it('a claim with tenant ceilings (a transaction of its own) likewise', async () => {
    const pool = await silencedPool();
    const { job } = await enqueueJob(env.pool, { kind: 'noop', tenantId: 'acme' });
    const request = { workerId: 'w', limit: 5, leaseMs: 60_000, kinds: ['noop'], tenantKindConcurrency: { noop: 1 } };
    await expect(claimJobs(pool, request)).rejects.toThrow(/Query read timeout/);
    expect((await claimJobs(pool, request)).map((claimed) => claimed.id)).toEqual([job.id]);
  });
});

/**
 * The main pool (no client-side timeout: handler statements may rightly run for minutes) through a silencing proxy,
 * watched with short periods so the test runs in moments; the watch's lookups go through the proxy too, on
 * connections of their own (which pass, as a new primary's would).
 */
async function watchedPool(
  sessionOptions?: string,
): Promise<{ pool: Pool; proxy: SilencingProxy; watch: SilentConnectionWatch; lines: () => Array<Record<string, unknown>> }> {
  const proxy = await startSilencingProxy(env.databaseUrl);
  const { log, lines } = recordingLogger();
  const watch = new SilentConnectionWatch(proxy.url, log, { suspectAfterMs: 200, checkEveryMs: 100, strikes: 2, connectCheckTimeoutMs: 5_000 });
  watches.push(watch);
  const pool = createPool(proxy.url, { max: 1, onConnect: watch.onConnect, ...(sessionOptions ? { sessionOptions } : {}) });
  pool.on('error', () => {});
  open.push({ pool, proxy });
  watch.start();
  await pool.query('SELECT 1');
  expect(watch.size).toBe(1);
  return { pool, proxy, watch, lines };
}

describe('the main pool watched for silent connections', () => {
  /**
   * After `cut` (the proxy told to fail the path), `statement` fails as a connection error, the watch says it closed
   * the connection (warn, with its backend's pid), and the next statement runs on a new backend.
   */
  async function expectClosedAsSilent(cut: (proxy: SilencingProxy) => number, statement: string): Promise<void> {
    const { pool, proxy, lines } = await watchedPool();
    const { rows: before } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    expect(cut(proxy)).toBe(1);
    const error = await pool.query(statement).then(
      () => undefined,
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(SilentConnectionError);
    expect(isConnectionError(error)).toBe(true);
    const { rows: after } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    expect(after[0]!.pid).not.toBe(before[0]!.pid);
    const closed = lines().filter((line) => line.msg === 'a database connection went silent with a statement waiting; closing it');
    expect(closed).toEqual([expect.objectContaining({ pid: before[0]!.pid, level: 40 })]);
  }

  it('a statement sent into a silent connection fails as a connection error, and the next runs on a new connection', async () => {
    await expectClosedAsSilent((proxy) => proxy.silenceExisting(), 'SELECT 2');
  });

  it('an answer that stops halfway (the server blocked sending the rest) fails as a connection error; the next runs on a new connection', async () => {
    // 64 KiB of the answer arrive (bytes back: no longer "nothing heard"), then the path takes nothing more. The
    // answer, 100 MB, is far more than the buffers between hold, so the server stays blocked sending it.
    await expectClosedAsSilent((proxy) => proxy.stallReplies(64 * 1024), "SELECT repeat('x', 1000) AS filler FROM generate_series(1, 100000)");
  });

  it('a transaction whose connection goes silent between statements fails, and its connection is not reused', async () => {
    const { pool, proxy } = await watchedPool();
    await expect(
      withTransaction(pool, async (client) => {
        await client.query('SELECT 1');
        proxy.silenceExisting();
        await client.query('SELECT 2');
      }),
    ).rejects.toBeInstanceOf(SilentConnectionError);
    const { rows } = await withTransaction(pool, (client) => client.query<{ n: number }>('SELECT 3 AS n'));
    expect(rows).toEqual([{ n: 3 }]);
  });

  it('a statement the server is still running is left alone however long it takes', async () => {
    const { pool, watch, lines } = await watchedPool();
    // Several checks see it waiting past suspectAfterMs; the server says it is active each time.
    const slow = pool.query<{ done: boolean }>('SELECT pg_sleep(1.5) IS NOT NULL AS done');
    const { rows } = await slow;
    expect(rows).toEqual([{ done: true }]);
    expect(watch.size).toBe(1);
    expect(lines().filter((line) => line.level === 40)).toEqual([]);
  });

  it('a connection whose client was told another pid than its backend\'s (a connection proxy) is not watched', async () => {
    const { log, lines } = recordingLogger();
    const watch = new SilentConnectionWatch(env.databaseUrl, log);
    watches.push(watch);
    // What a proxy does: the key data the client gets names the proxy's own connection, not a backend.
    const pool = createPool(env.databaseUrl, {
      max: 1,
      onConnect: async (client) => {
        (client as unknown as { processID: number }).processID += 1_000_000;
        await watch.onConnect(client);
      },
    });
    pool.on('error', () => {});
    pools.push(pool);
    await pool.query('SELECT 1');
    expect(watch.size).toBe(0);
    expect(lines().map((line) => line.msg)).toContain('a connection proxy is in the way: silent connections are not looked for');
  });

  it('a statement written as the answer before it arrives (the pool handing the connection over) is watched too', async () => {
    const { pool, proxy } = await watchedPool();
    // The test's own session holds the lock the first statement waits for.
    const holder = await env.pool.connect();
    try {
      await holder.query('SELECT pg_advisory_lock(7701)');
      // Two statements for one connection: the second is written the moment the first's answer is handled.
      const first = pool.query<{ n: number }>('SELECT 1 AS n FROM pg_advisory_xact_lock(7701)');
      const second = pool.query('SELECT 2').then(
        () => undefined,
        (caught: unknown) => caught,
      );
      await waitFor(async () => {
        const { rows } = await env.pool.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_xact_lock(7701)'",
        );
        return rows[0]!.n === 1 || undefined;
      }, 30_000, 20);
      // The path to the server fails: the first's answer still comes back, the second never reaches the server.
      expect(proxy.silenceExisting('to-server')).toBe(1);
      await holder.query('SELECT pg_advisory_unlock(7701)');
      expect((await first).rows).toEqual([{ n: 1 }]);
      expect(await second).toBeInstanceOf(SilentConnectionError);
    } finally {
      await holder.query('SELECT pg_advisory_unlock_all()');
      holder.release();
    }
  });

  it('a new connection whose first statement gets no answer fails to connect, instead of holding its caller', async () => {
    const proxy = await startSilencingProxy(env.databaseUrl);
    // Long enough for a healthy connect on a busy machine (the second connect below); the silenced one waits it out.
    const watch = new SilentConnectionWatch(proxy.url, recordingLogger().log, { connectCheckTimeoutMs: 2_000 });
    watches.push(watch);
    const pool = createPool(proxy.url, { max: 1, onConnect: watch.onConnect });
    pool.on('error', () => {});
    open.push({ pool, proxy });
    proxy.silenceNewAtFirstStatement(true);
    await expect(pool.connect()).rejects.toBeInstanceOf(SilentConnectionError);
    expect(pool.totalCount).toBe(0);
    proxy.silenceNewAtFirstStatement(false);
    expect((await pool.query<{ n: number }>('SELECT 3 AS n')).rows).toEqual([{ n: 3 }]);
    expect(watch.size).toBe(1);
  });

  it('a backend whose activity is not tracked (track_activities off) is never taken for silent', async () => {
    const { pool, lines } = await watchedPool('-c track_activities=off');
    const { rows } = await pool.query<{ done: boolean }>('SELECT pg_sleep(1) IS NOT NULL AS done');
    expect(rows).toEqual([{ done: true }]);
    expect(lines().filter((line) => line.level === 40)).toEqual([]);
  });
});
