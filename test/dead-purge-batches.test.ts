// The dead-letter purge deletes in batches, each committed with its history (worker/actions/run-actions.ts): a purge
// of many runs holds no one long transaction, and one stopped halfway keeps what it did and loses nothing else.
import { afterEach, describe, expect, it } from 'vitest';
import { purgeDead, type Actor } from '../worker/actions/run-actions.js';
import { PURGE_BATCH_RUNS } from '../worker/queue/dead-letters.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const operator: Actor = { name: 'test-operator', tenantId: null };

afterEach(async () => {
  await env.pool.query('DROP TRIGGER IF EXISTS purge_stops_here ON jobs_live; DROP FUNCTION IF EXISTS purge_stops_here()');
  await env.pool.query('DELETE FROM jobs');
  await env.pool.query('DELETE FROM job_actions');
});

/** `count` dead runs of `kind`, dead for `ago`, each with one import item; their ids in order. */
async function deadRuns(count: number, ago: string, kind = 'purged-kind'): Promise<number[]> {
  const { rows } = await env.pool.query<{ id: string }>(
    `INSERT INTO jobs (kind, state, attempts, finished_at)
     SELECT $2, 'dead', 1, now() - $3::interval FROM generate_series(1, $1) RETURNING id`,
    [count, kind, ago],
  );
  const ids = rows.map((row) => Number(row.id)).sort((a, b) => a - b);
  await env.pool.query(
    `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes) SELECT id, 1, 'a.pdf', 10 FROM unnest($1::bigint[]) id`,
    [ids],
  );
  return ids;
}

async function left(ids: number[]): Promise<{ runs: number; items: number; purgedEntries: number }> {
  const { rows } = await env.pool.query<{ runs: number; items: number; purged_entries: number }>(
    `SELECT (SELECT count(*)::int FROM jobs WHERE id = ANY($1)) AS runs,
            (SELECT count(*)::int FROM import_items WHERE job_id = ANY($1)) AS items,
            (SELECT count(*)::int FROM job_actions WHERE action = 'purged' AND job_id = ANY($1)) AS purged_entries`,
    [ids],
  );
  return { runs: rows[0]!.runs, items: rows[0]!.items, purgedEntries: rows[0]!.purged_entries };
}

describe('dead-letter purge in batches', () => {
  it('deletes every run of the scope in batches of PURGE_BATCH_RUNS, each with its history entry', async () => {
    const runs = PURGE_BATCH_RUNS * 2 + 50;
    const old = await deadRuns(runs, '2 days');
    const recent = await deadRuns(3, '1 hour');
    const otherKind = await deadRuns(2, '2 days', 'kept-kind');
    const totals: number[] = [];

    const purged = await purgeDead(env.pool, operator, { olderThanMs: 86_400_000, kinds: ['purged-kind'], note: 'done with' }, (soFar) =>
      totals.push(soFar),
    );

    expect(purged.map((run) => run.id)).toEqual(old);
    // One running total per full batch: the third batch was the last.
    expect(totals).toEqual([PURGE_BATCH_RUNS, PURGE_BATCH_RUNS * 2]);
    expect(await left(old)).toEqual({ runs: 0, items: 0, purgedEntries: runs });
    expect(await left([...recent, ...otherKind])).toEqual({ runs: 5, items: 5, purgedEntries: 0 });
    // Each batch committed on its own: its entries carry their own transaction's time.
    const { rows } = await env.pool.query<{ commits: number }>(
      `SELECT count(DISTINCT at)::int AS commits FROM job_actions WHERE action = 'purged' AND note = 'done with'`,
    );
    expect(rows[0]!.commits).toBe(3);
  });

  it('a purge that fails in its second batch keeps the first batch purged and recorded; run again, it takes the rest', async () => {
    const ids = await deadRuns(PURGE_BATCH_RUNS * 2, '2 days');
    const stopAt = ids[PURGE_BATCH_RUNS + 10]!;
    // A delete that fails at one run of the second batch, as a lost connection or a statement timeout would.
    await env.pool.query(`
      CREATE FUNCTION purge_stops_here() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF OLD.id = ${stopAt} THEN RAISE EXCEPTION 'purge stopped at run %', OLD.id; END IF;
        RETURN OLD;
      END $$;
      CREATE TRIGGER purge_stops_here BEFORE DELETE ON jobs_live FOR EACH ROW EXECUTE FUNCTION purge_stops_here();`);

    await expect(purgeDead(env.pool, operator, { olderThanMs: 60_000 })).rejects.toThrow(`purge stopped at run ${stopAt}`);
    const first = ids.slice(0, PURGE_BATCH_RUNS);
    const second = ids.slice(PURGE_BATCH_RUNS);
    expect(await left(first)).toEqual({ runs: 0, items: 0, purgedEntries: PURGE_BATCH_RUNS });
    expect(await left(second)).toEqual({ runs: PURGE_BATCH_RUNS, items: PURGE_BATCH_RUNS, purgedEntries: 0 });

    await env.pool.query('DROP TRIGGER purge_stops_here ON jobs_live');
    const rest = await purgeDead(env.pool, operator, { olderThanMs: 60_000 });
    expect(rest.map((run) => run.id)).toEqual(second);
    expect(await left(ids)).toEqual({ runs: 0, items: 0, purgedEntries: ids.length });
  });

  it('a run replayed between its pick and its delete is not purged; the dry run lists without deleting', async () => {
    const ids = await deadRuns(5, '2 days');
    const dry = await purgeDead(env.pool, operator, { olderThanMs: 60_000, dryRun: true });
    expect(dry.map((run) => run.id)).toEqual(ids);
    expect(await left(ids)).toEqual({ runs: 5, items: 5, purgedEntries: 0 });

    // Another session requeues run 3 and holds its row: the purge's delete waits for it, reads the row again and
    // leaves it (it is no longer dead).
    const holder = await env.pool.connect();
    try {
      await holder.query('BEGIN');
      await holder.query(`UPDATE jobs SET state = 'queued', finished_at = NULL WHERE id = $1`, [ids[2]]);
      const purging = purgeDead(env.pool, operator, { olderThanMs: 60_000 });
      await waitForLockWait();
      await holder.query('COMMIT');
      expect((await purging).map((run) => run.id)).toEqual([ids[0], ids[1], ids[3], ids[4]]);
    } finally {
      holder.release();
    }
    expect(await left([ids[2]!])).toEqual({ runs: 1, items: 1, purgedEntries: 0 });
  });
});

/** Until a session of this file's database waits for a row lock (the purge's delete behind the holder). */
function waitForLockWait(): Promise<unknown> {
  return waitFor(async () => {
    const { rows } = await env.pool.query(
      `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%candidates%'`,
    );
    return rows.length > 0;
  });
}
