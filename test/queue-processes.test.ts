// Real worker processes against one database: exactly-once handling under contention, crash recovery after
// kill -9, graceful SIGTERM drain with immediate resumption elsewhere.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { enqueueJob, enqueueJobs } from '../worker/queue/enqueue.js';
import { requireJob } from '../worker/queue/operator.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
function worker(extraEnv: Record<string, string> = {}, args: string[] = []): WorkerProcess {
  const process = spawnWorker(env, { entry: 'test', env: extraEnv, args });
  spawned.push(process);
  return process;
}
const started = (line: { msg: string }) => line.msg === 'worker started';

beforeAll(async () => {
  await env.pool.query(
    'CREATE TABLE test_runs (job_id bigint NOT NULL, attempt int NOT NULL, worker text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())',
  );
});
afterEach(async () => {
  await killAll(spawned.splice(0));
  await env.pool.query('DELETE FROM jobs; DELETE FROM test_runs');
});
afterAll(async () => killAll(spawned));

describe('worker processes', () => {
  it('4 processes × 10,000 jobs: every handler runs exactly once, none is lost', async () => {
    const total = 10_000;
    for (let offset = 0; offset < total; offset += 2_000) {
      await enqueueJobs(env.pool, 'record-run', Array.from({ length: 2_000 }, (_, i) => ({ seq: offset + i })));
    }
    const workers = Array.from({ length: 4 }, (_, index) =>
      worker({ WORKER_ID: `proc-${index}`, WORKER_CONCURRENCY: '8', LOG_LEVEL: 'warn' }, ['--exit-when-idle']),
    );
    const exits = await Promise.all(workers.map((process) => process.exited));
    expect(exits.map((exit) => exit.code)).toEqual([0, 0, 0, 0]);

    const runs = await env.pool.query<{ runs: number; jobs: number; workers: number }>(
      'SELECT count(*)::int AS runs, count(DISTINCT job_id)::int AS jobs, count(DISTINCT worker)::int AS workers FROM test_runs',
    );
    expect(runs.rows[0]).toEqual({ runs: total, jobs: total, workers: 4 });
    const states = await env.pool.query('SELECT state, count(*)::int AS n, max(attempts) AS max_attempts FROM jobs GROUP BY state');
    expect(states.rows).toEqual([{ state: 'succeeded', n: total, max_attempts: 1 }]);
  });

  it('kill -9 of a worker holding a job: another worker completes it within three lease lengths', async () => {
    const leaseMs = 3_000;
    const timings = { WORKER_LEASE_MS: String(leaseMs), WORKER_HEARTBEAT_MS: '500', WORKER_RESCUE_INTERVAL_MS: '500', WORKER_POLL_INTERVAL_MS: '200' };
    const doomed = worker({ ...timings, WORKER_ID: 'doomed' });
    await doomed.waitForLog(started);
    const { job } = await enqueueJob(env.pool, { kind: 'record-run', payload: { firstAttemptSleepMs: 600_000 } });
    await waitFor(async () => (await requireJob(env.pool, job.id)).leaseOwner === 'doomed');

    const { rows: [spawned] } = await env.pool.query<{ at: Date }>('SELECT clock_timestamp() AS at');
    const survivor = worker({ ...timings, WORKER_ID: 'survivor' });
    await survivor.waitForLog(started);
    // The survivor is up but the job is leased: it must not run it while the doomed worker lives. Checked once the
    // survivor has claimed twice since it started (its claim session, the one opened after its spawn, is seen idle
    // after a claim begun later than an earlier look), so it had its chance.
    const survivorClaimAt = async () =>
      (
        await env.pool.query<{ at: Date | null }>(
          `SELECT max(query_start) AS at FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = 'bulk-import-claim' AND backend_start > $1 AND state = 'idle'`,
          [spawned!.at],
        )
      ).rows[0]!.at;
    const firstClaim = await waitFor(survivorClaimAt);
    await waitFor(async () => ((await survivorClaimAt())?.getTime() ?? 0) > firstClaim.getTime());
    expect((await env.pool.query('SELECT worker FROM test_runs')).rows).toEqual([{ worker: 'doomed' }]);

    doomed.kill('SIGKILL');
    expect((await doomed.exited).signal).toBe('SIGKILL');
    const completed = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.state === 'succeeded' ? current : undefined;
    }, 30_000);
    expect(completed).toMatchObject({ attempts: 2, result: { ranBy: 'survivor' } });
    expect(completed.lastError).toMatchObject({ code: 'LEASE_EXPIRED', worker: 'doomed' });
    // Timed from the dead worker's lease expiry (the rescue names it), on the database's clock: how long after its
    // last beat the worker died is no concern of the rescue. Not before it (the lease held while it could beat), and
    // the rescue (every 500 ms), the survivor's claim and the run take well under two lease lengths after it, where the
    // default rescue interval (15 s) would not.
    const { rows: [lease] } = await env.pool.query<{ expired: Date }>(
      "SELECT substring($1::text from 'expired at (.+) without')::timestamptz AS expired",
      [completed.lastError!.message],
    );
    expect(completed.finishedAt!.getTime()).toBeGreaterThan(lease!.expired.getTime());
    expect(completed.finishedAt!.getTime() - lease!.expired.getTime()).toBeLessThan(2 * leaseMs);
    const runs = await env.pool.query('SELECT worker, attempt FROM test_runs WHERE job_id = $1 ORDER BY attempt', [job.id]);
    expect(runs.rows).toEqual([{ worker: 'doomed', attempt: 1 }, { worker: 'survivor', attempt: 2 }]);
  });

  it('kill -9 while its claim waits behind a lock: the server ends that claim, and no run is leased to the dead worker', async () => {
    // A deploy's migration holds a lock on jobs; the old task's claim waits behind it; ECS kills the task. Without
    // the sessions' client_connection_check_interval the server would run that claim once the lock is granted and
    // lease the runs to a process that no longer exists: they would wait for their leases to expire.
    const doomed = worker({ WORKER_ID: 'doomed', WORKER_POLL_INTERVAL_MS: '100' });
    await doomed.waitForLog(started);
    const locker = await env.pool.connect();
    let ids: number[];
    let claimPid: number;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE');
      ids = await enqueueJobs(locker, 'record-run', [{}, {}]);
      claimPid = await waitFor(async () => {
        const { rows } = await env.pool.query<{ pid: number }>(
          `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'bulk-import-claim'
             AND wait_event_type = 'Lock'`,
        );
        return rows[0]?.pid;
      });
      doomed.kill('SIGKILL');
      await doomed.exited;
      // The server looks at a running statement's client once a second (the setting): wait on its clock until it has
      // looked at least once since the process died, then let the claim have its lock.
      const { rows } = await env.pool.query<{ at: Date }>('SELECT clock_timestamp() AS at');
      await waitFor(async () => (await env.pool.query("SELECT clock_timestamp() > $1::timestamptz + interval '2 seconds' AS past", [rows[0]!.at])).rows[0].past);
    } finally {
      await locker.query('COMMIT');
      locker.release();
    }
    await waitFor(async () => (await env.pool.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [claimPid])).rows[0].n === 0);
    const { rows } = await env.pool.query('SELECT id, state, attempts, lease_owner FROM jobs WHERE id = ANY($1) ORDER BY id', [ids]);
    expect(rows).toEqual(ids.map((id) => ({ id, state: 'queued', attempts: 0, lease_owner: null })));
  });

  it('SIGTERM drains: leases go back to the queue without an attempt and another worker resumes them at once', async () => {
    // Slow polling on the second worker: it can only be as quick as this through the release's NOTIFY.
    const leaving = worker({ WORKER_ID: 'leaving', WORKER_SHUTDOWN_GRACE_MS: '5000' });
    await leaving.waitForLog(started);
    const ids = await enqueueJobs(env.pool, 'record-run', [{ sleepMs: 600_000 }, { sleepMs: 600_000 }]);
    await waitFor(async () => {
      const { rows } = await env.pool.query("SELECT count(*)::int AS n FROM test_runs WHERE worker = 'leaving'");
      return rows[0].n === 2;
    });
    const staying = worker({ WORKER_ID: 'staying', WORKER_POLL_INTERVAL_MS: '60000', HEALTH_MAX_AGE_MS: '240000' });
    await staying.waitForLog(started);

    leaving.kill('SIGTERM');
    const exit = await leaving.exited;
    const exitedAt = Date.now();
    expect(exit.code).toBe(0);
    expect(leaving.logs.some((line) => line.msg === 'released jobs back to the queue')).toBe(true);

    const resumed = await waitFor(async () => {
      const { rows } = await env.pool.query("SELECT job_id, attempt, at FROM test_runs WHERE worker = 'staying' ORDER BY job_id");
      return rows.length === 2 ? rows : undefined;
    }, 30_000, 20);
    expect(resumed.map((row) => Number(row.job_id))).toEqual(ids);
    // The released run did not burn an attempt: the resumed run is attempt 1 again.
    expect(resumed.map((row) => row.attempt)).toEqual([1, 1]);
    // Well before the staying worker's next poll (60 s): it heard the release's NOTIFY.
    expect(Math.max(...resumed.map((row) => (row.at as Date).getTime())) - exitedAt).toBeLessThan(30_000);
  });

  it('SIGTERM ends the process after the grace even while a handler deaf to it holds a connection and a timer', async () => {
    const stuck = worker({ WORKER_ID: 'stuck', WORKER_SHUTDOWN_GRACE_MS: '300' });
    await stuck.waitForLog(started);
    const { job: { id } } = await enqueueJob(env.pool, { kind: 'hold-connection', payload: {} });
    // The handler's session writes its own backend pid.
    const backend = await waitFor(async () => {
      const { rows } = await env.pool.query('SELECT worker FROM test_runs WHERE job_id = $1', [id]);
      return rows[0] ? Number(String(rows[0].worker).split(':').at(-1)) : undefined;
    });

    stuck.kill('SIGTERM');
    // Without a bounded close the pool waits for the handler's connection forever, and without an exit its timer
    // keeps the process alive: this wait would be the test's timeout.
    const exit = await stuck.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    const messages = stuck.logs.map((line) => line.msg);
    expect(messages).toContain('released jobs back to the queue');
    const inUse = stuck.logs.find((line) => line.msg === 'database connections still in use after the drain; closing them with the process');
    expect(inUse).toMatchObject({ in_use: 1 });
    expect(messages.indexOf('worker stopped')).toBeGreaterThan(messages.indexOf(inUse!.msg));
    // The lease went back without counting the attempt; its connection closed with the process.
    const job = await requireJob(env.pool, id);
    expect({ state: job.state, attempts: job.attempts, leaseOwner: job.leaseOwner }).toEqual({ state: 'queued', attempts: 0, leaseOwner: null });
    await waitFor(async () => {
      const { rows } = await env.pool.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [backend]);
      return rows[0].n === 0;
    });
  });
});
