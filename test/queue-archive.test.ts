// The live and archive partitions of jobs (migration 20261206063000): the archiver files finished runs away, reads and
// child rows do not notice, a requeue brings a run back, deletes still take the run's records with it, and an
// operator action that meets a run moving between partitions is tried again.
import { afterEach, describe, expect, it } from 'vitest';
import { purgeDead, replayDead, requeueRun, type Actor } from '../worker/actions/run-actions.js';
import { noopHandler } from '../worker/handlers/noop.js';
import { createArchiver } from '../worker/maintenance/archiver.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { archiveFinishedRuns } from '../worker/queue/maintenance.js';
import { DedupeConflictError, getJob, listJobsPage } from '../worker/queue/operator.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { settledJob, silentLog, testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const operator: Actor = { name: 'test-operator', tenantId: null };
const workers: Worker[] = [];
afterEach(async () => {
  await Promise.all(workers.splice(0).map((worker) => worker.stop()));
  await env.pool.query('DELETE FROM jobs');
});

async function partitionOf(id: number): Promise<string | undefined> {
  const { rows } = await env.pool.query<{ partition: string }>('SELECT tableoid::regclass::text AS partition FROM jobs WHERE id = $1', [id]);
  return rows[0]?.partition;
}

/** A run of `kind` in `state`, finished `ago` (a Postgres interval) ago. */
async function finishedRun(state: string, ago: string, options: { kind?: string; dedupeKey?: string } = {}): Promise<number> {
  const { job } = await enqueueJob(env.pool, { kind: options.kind ?? 'archived', ...(options.dedupeKey ? { dedupeKey: options.dedupeKey } : {}) });
  await env.pool.query(`UPDATE jobs SET state = $2, attempts = 1, finished_at = now() - $3::interval WHERE id = $1`, [job.id, state, ago]);
  return job.id;
}

/** An import item of the run, and with `document` a document it produced (linked by import_job_id). */
async function addRecords(id: number, document = false): Promise<void> {
  await env.pool.query(`INSERT INTO import_items (job_id, item_no, relative_path, size_bytes) VALUES ($1, 1, 'a.pdf', 10)`, [id]);
  if (!document) return;
  await env.pool.query(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key, import_job_id)
     VALUES ('t', 'a.pdf', repeat('a', 64), 10, 'application/pdf', 'b', 'k-' || $1::text, $1::bigint)`,
    [id],
  );
}

/** A dead run finished two hours ago in the archive, and one in the live partition. */
async function deadRunsInBothPartitions(): Promise<{ archived: number; live: number }> {
  const archived = await finishedRun('dead', '2 hours');
  await archiveFinishedRuns(env.pool, 60);
  return { archived, live: await finishedRun('dead', '2 hours') };
}

describe('live and archive partitions', () => {
  it('archives finished runs after the delay only; reads, listings and child rows do not change', async () => {
    const old = await finishedRun('succeeded', '2 minutes');
    const oldDead = await finishedRun('dead', '10 minutes');
    const recent = await finishedRun('failed', '5 seconds');
    const { job: queued } = await enqueueJob(env.pool, { kind: 'archived' });
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes) VALUES ($1, 1, 'a.pdf', 10), ($1, 2, 'b.pdf', 20)`,
      [old],
    );
    const before = await getJob(env.pool, old);
    const listedBefore = await listJobsPage(env.pool, { limit: 10 });

    expect(await archiveFinishedRuns(env.pool, 60)).toBe(2);
    expect(await archiveFinishedRuns(env.pool, 60)).toBe(0);
    expect({ old: await partitionOf(old), oldDead: await partitionOf(oldDead), recent: await partitionOf(recent), queued: await partitionOf(queued.id) })
      .toEqual({ old: 'jobs_archive', oldDead: 'jobs_archive', recent: 'jobs_live', queued: 'jobs_live' });
    // The same row under the same id, and in the same place in a listing.
    expect(await getJob(env.pool, old)).toEqual(before);
    expect(await listJobsPage(env.pool, { limit: 10 })).toEqual(listedBefore);
    const { rows } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM import_items WHERE job_id = $1', [old]);
    expect(rows[0]!.n).toBe(2);
    // Nothing about the run changed, so nothing is published: a move is not a transition.
    const { rows: outbox } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM job_notifications WHERE job_id = ANY($1)', [[old, oldDead]]);
    expect(outbox[0]!.n).toBe(0);
  });

  it('the archiver of a worker process moves a run it finished, and new runs keep their numbering', async () => {
    const worker = testWorker(env, [noopHandler]);
    workers.push(worker);
    void worker.start();
    const { job } = await enqueueJob(env.pool, { kind: 'noop' });
    await settledJob(env.pool, job.id);
    const archiver = createArchiver(env.pool, 0, 60_000, 30, silentLog);
    await waitFor(async () => (await archiver.runOnce(), (await partitionOf(job.id)) === 'jobs_archive'));
    const { job: next } = await enqueueJob(env.pool, { kind: 'noop' });
    expect(next.id).toBeGreaterThan(job.id);
    expect(await partitionOf(next.id)).toBe('jobs_live');
  });

  it('a requeue brings an archived run back to the live queue, where a worker runs it; a held key still refuses it', async () => {
    const id = await finishedRun('dead', '2 minutes', { kind: 'noop', dedupeKey: 'archived-key' });
    await archiveFinishedRuns(env.pool, 60);
    expect(await partitionOf(id)).toBe('jobs_archive');

    // An active run holds the key: refused, and the run stays where it was.
    const { job: holder } = await enqueueJob(env.pool, { kind: 'held', dedupeKey: 'archived-key' });
    await expect(requeueRun(env.pool, operator, id)).rejects.toBeInstanceOf(DedupeConflictError);
    expect(await partitionOf(id)).toBe('jobs_archive');
    await env.pool.query("UPDATE jobs SET state = 'canceled', finished_at = now() WHERE id = $1", [holder.id]);

    const requeued = await requeueRun(env.pool, operator, id, { note: 'from the archive' });
    expect(requeued.state).toBe('queued');
    expect(await partitionOf(id)).toBe('jobs_live');
    const worker = testWorker(env, [noopHandler]);
    workers.push(worker);
    void worker.start();
    expect((await settledJob(env.pool, id)).state).toBe('succeeded');
  });

  it('a replay of chosen dead runs commits with its history or not at all, in either partition', async () => {
    const { archived, live } = await deadRunsInBothPartitions();
    // The history cannot be written (a trigger refuses it): the replay must not commit without it.
    await env.pool.query(`CREATE FUNCTION refuse_actions() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN RAISE EXCEPTION 'job_actions refused by the test'; END $$`);
    await env.pool.query('CREATE TRIGGER refuse_actions BEFORE INSERT ON job_actions FOR EACH ROW EXECUTE FUNCTION refuse_actions()');
    try {
      await expect(replayDead(env.pool, operator, { ids: [archived, live], note: 'retry after the fix' })).rejects.toThrow('job_actions refused');
      expect([(await getJob(env.pool, archived))?.state, (await getJob(env.pool, live))?.state]).toEqual(['dead', 'dead']);
    } finally {
      await env.pool.query('DROP TRIGGER refuse_actions ON job_actions; DROP FUNCTION refuse_actions()');
    }
    const { replayed } = await replayDead(env.pool, operator, { ids: [archived, live], note: 'retry after the fix' });
    expect(replayed.map((job) => [job.id, job.state])).toEqual([
      [archived, 'queued'],
      [live, 'queued'],
    ]);
    const { rows } = await env.pool.query<{ job_id: number }>(
      "SELECT job_id::int FROM job_actions WHERE action = 'replayed' AND note = 'retry after the fix' ORDER BY job_id",
    );
    expect(rows.map((row) => row.job_id)).toEqual([archived, live]);
  });

  it('an archived run cannot become active where it is: the archive holds finished runs only', async () => {
    const id = await finishedRun('failed', '2 minutes');
    await archiveFinishedRuns(env.pool, 60);
    await expect(env.pool.query("UPDATE jobs SET state = 'queued', finished_at = NULL WHERE id = $1", [id])).rejects.toMatchObject({
      code: '23514',
      constraint: 'jobs_archive_finished_runs_only',
    });
  });

  it('deleting runs deletes their records and unlinks their documents, in either partition', async () => {
    const { archived, live } = await deadRunsInBothPartitions();
    for (const id of [archived, live]) await addRecords(id, true);
    const { job: other } = await enqueueJob(env.pool, { kind: 'archived' });
    await addRecords(other.id);

    const purged = await purgeDead(env.pool, operator, { olderThanMs: 60_000 });
    expect(purged.map((run) => run.id).sort()).toEqual([archived, live].sort());
    const { rows } = await env.pool.query(
      `SELECT (SELECT count(*)::int FROM import_items WHERE job_id = ANY($1)) AS items,
              (SELECT count(*)::int FROM import_items WHERE job_id = $2) AS other_items,
              (SELECT count(*)::int FROM documents WHERE import_job_id IS NULL) AS unlinked,
              (SELECT count(*)::int FROM documents) AS documents`,
      [[archived, live], other.id],
    );
    expect(rows[0]).toEqual({ items: 0, other_items: 1, unlinked: 2, documents: 2 });
    await env.pool.query('DELETE FROM documents');
  });

  it('a delete from a partition itself, and a TRUNCATE of jobs, take the runs\' records too', async () => {
    const { archived, live } = await deadRunsInBothPartitions();
    await addRecords(archived);
    await addRecords(live, true);
    const items = async () => (await env.pool.query<{ job_id: string }>('SELECT job_id FROM import_items ORDER BY job_id')).rows.map((row) => Number(row.job_id));
    await env.pool.query('DELETE FROM jobs_archive WHERE id = $1', [archived]);
    expect(await items()).toEqual([live]);
    await env.pool.query('TRUNCATE jobs');
    expect(await items()).toEqual([]);
    const { rows } = await env.pool.query('SELECT import_job_id FROM documents');
    expect(rows).toEqual([{ import_job_id: null }]);
    await env.pool.query('DELETE FROM documents');
  });

  it('a requeue that waited on a run the archiver was moving is tried again, and succeeds', async () => {
    const id = await finishedRun('dead', '2 minutes');
    const archiver = await env.pool.connect();
    try {
      // The archiver's move, held open: the requeue waits on the row's lock, then finds it moved (40001).
      await archiver.query('BEGIN');
      await archiver.query('UPDATE jobs SET archived = true WHERE id = $1', [id]);
      const requeue = requeueRun(env.pool, operator, id, { note: 'racing the archiver' }).then(
        (job) => job.state,
        (error: { code?: string; message: string }) => `${error.code}: ${error.message}`,
      );
      await waitFor(async () => {
        const { rows } = await env.pool.query(
          "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%UPDATE jobs SET state = ''queued''%'",
        );
        return rows.length > 0 || undefined;
      });
      await archiver.query('COMMIT');
      expect(await requeue).toBe('queued');
      expect(await partitionOf(id)).toBe('jobs_live');
      const { rows } = await env.pool.query<{ action: string; note: string }>('SELECT action, note FROM job_actions WHERE job_id = $1', [id]);
      expect(rows).toEqual([{ action: 'requeued', note: 'racing the archiver' }]);
    } finally {
      await archiver.query('ROLLBACK').catch(() => {});
      archiver.release();
    }
  });
});
