// The database away in the middle of a run, with a real worker process and a Postgres of the file's own: a run that
// fails because of it is recorded, once the database answers again, as an outage of the database — requeued without
// counting its attempt — so a run with a single attempt still finishes. (S3 outages: dependency-outage.test.ts.)
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { documentsOf, listObjects, type TreeFile } from './support/mass-import-tree.js';
import { useTreeBehindProxy } from './support/tree-behind-proxy.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment({ ownPostgres: true });
const files: TreeFile[] = Array.from({ length: 300 }, (_, i) => ({ path: `d-${i % 6}/f-${i}.bin`, size: 2_000 + ((i * 7_919) % 30_000) }));
const tree = useTreeBehindProxy(env, files);
const spawned: WorkerProcess[] = [];
afterEach(async () => killAll(spawned.splice(0)));
afterAll(async () => killAll(spawned));

async function until(jobId: number, states: string[], timeoutMs = 120_000): Promise<JobRow> {
  return waitFor(async () => {
    const job = await requireJob(env.pool, jobId).catch(() => undefined);
    return job && states.includes(job.state) ? job : undefined;
  }, timeoutMs, 100);
}

describe('the database away in the middle of a mass import', () => {
  it('the run waits for the database without spending its one attempt, and rows = objects = files', async () => {
    const worker = spawnWorker(env, {
      env: {
        ...tree.workerEnv(),
        WORKER_LEASE_MS: '8000',
        WORKER_HEARTBEAT_MS: '500',
        WORKER_RESCUE_INTERVAL_MS: '500',
        WORKER_POLL_INTERVAL_MS: '200',
        MASS_IMPORT_CONCURRENCY: '4',
        RETRY_BACKOFF_BASE_MS: '100',
        DEPENDENCY_OUTAGE_BACKOFF_MAX_MS: '400',
        LOG_LEVEL: 'warn',
      },
    });
    spawned.push(worker);
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: 'dbdown', payload: { prefix: 'dbdown' }, maxAttempts: 1 });
    await waitFor(async () => {
      const { rows } = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM import_items WHERE job_id = $1 AND state = 'done'", [job.id]);
      return rows[0]!.n >= 40 || undefined;
    }, 60_000, 10);

    // Down for long enough that the run's own statements fail, shorter than the lease.
    const downAt = Date.now();
    await env.postgres!.restart({ downMs: 2_000 });

    const done = await until(job.id, ['succeeded', 'partial', 'failed', 'dead']);
    expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
    expect(done.attempts).toBe(1);
    expect(done).toMatchObject({ outageStartedAt: null, outageDependency: null });
    // The run failed with the database away and was recorded as waiting for it (attempt not counted).
    const waited = worker.logs.filter((line) => line.msg.startsWith('waiting for the database'));
    expect(waited.length, JSON.stringify(worker.logs.filter((line) => line.level >= 40).slice(0, 5))).toBeGreaterThan(0);
    expect(waited[0]).toMatchObject({ dependency: 'database', attempt_counted: false });
    // Unavailable since the worker saw it go (its own warning says when), not since the failure could be recorded —
    // once the database answered again, the 2 s of the restart later.
    const wentAway = worker.logs.find((line) => line.msg.startsWith('database unavailable'))!;
    const since = Date.parse(String(waited[0]!.outage_since));
    expect(since).toBeGreaterThanOrEqual(downAt - 1_000);
    // (The store's new connection to a Postgres just out of recovery may take a while: the gap only grows.)
    expect(since - Number(wentAway.time)).toBeLessThan(1_500);
    expect(Number(waited[0]!.time) - since).toBeGreaterThan(500);
    expect(done.lastError).toMatchObject({ class: 'transient', context: { dependency: 'database', attemptCounted: false } });
    const documents = await documentsOf(env, 'dbdown/dbdown/');
    const objects = await listObjects(env.s3, env.bucket, 'dbdown/dbdown/');
    expect(documents).toHaveLength(files.length);
    expect(objects).toHaveLength(files.length);
  }, 180_000);
});
