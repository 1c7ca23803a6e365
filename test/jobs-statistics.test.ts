// Statistics of the partitioned `jobs` table (queue/maintenance.ts, analyzeJobsIfStale): autovacuum analyzes its
// partitions but never the table itself, so retention's rounds refresh them when stale; one worker of a fleet at a time.
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { createPool } from '../worker/db/pool.js';
import { createLogger } from '../worker/logger.js';
import { createRetention } from '../worker/maintenance/retention.js';
import { analyzeJobsIfStale, JOBS_STATISTICS_MAX_AGE_HOURS, jobsStatisticsStaleness } from '../worker/queue/maintenance.js';
import { useTestEnvironment } from './harness.js';
import { createTablesOnlyRole } from './support/tables-only-role.js';
import { silentLog } from './support/in-process-worker.js';

const env = useTestEnvironment();

/** `jobs`' own row estimate and whether Postgres holds statistics of its columns. */
async function parentStatistics(): Promise<{ rows: number; columns: number }> {
  const { rows } = await env.pool.query<{ rows: number; columns: number }>(
    `SELECT reltuples::float8 AS rows, (SELECT count(*)::int FROM pg_statistic WHERE starelid = 'jobs'::regclass) AS columns
     FROM pg_class WHERE oid = 'jobs'::regclass`,
  );
  return rows[0]!;
}

/** `count` runs that finished `daysAgo` days ago; the partitions are analyzed as autovacuum would. */
async function seedFinished(count: number, daysAgo: number): Promise<void> {
  await env.pool.query(
    `INSERT INTO jobs (kind, payload, state, attempts, finished_at, created_at)
     SELECT 'noop', '{}', 'succeeded', 1, now() - $2 * interval '1 day', now() - $2 * interval '1 day' FROM generate_series(1, $1)`,
    [count, daysAgo],
  );
  await env.pool.query('ANALYZE jobs_live, jobs_archive');
}

describe('statistics of the jobs table as a whole', () => {
  it('analyzes jobs once its row count moved past 50 + 10 %, then leaves fresh statistics alone', async () => {
    await env.pool.query('ANALYZE jobs');
    expect(await analyzeJobsIfStale(env.pool)).toEqual({ analyzed: null, partitionRows: 0, parentRows: 0 });
    await seedFinished(40, 1);
    // 40 rows more than at the last analyze: under the threshold.
    expect((await analyzeJobsIfStale(env.pool)).analyzed).toBeNull();
    expect((await parentStatistics()).rows).toBe(0);

    await seedFinished(1_960, 1);
    expect(await analyzeJobsIfStale(env.pool)).toEqual({ analyzed: 'rows', partitionRows: 2_000, parentRows: 0 });
    const after = await parentStatistics();
    expect(after.rows).toBe(2_000);
    expect(after.columns).toBeGreaterThan(10);
    expect((await analyzeJobsIfStale(env.pool)).analyzed).toBeNull();
  });

  it('a retention round that deletes most of the table refreshes them', async () => {
    await env.pool.query('TRUNCATE jobs CASCADE');
    await seedFinished(1_000, 40);
    await seedFinished(100, 1);
    await env.pool.query('ANALYZE jobs');
    expect((await parentStatistics()).rows).toBe(1_100);
    const retention = createRetention(env.pool, 30, 3_600_000, silentLog, { batchSize: 500, batchesPerRound: 10 });
    expect(await retention.runOnce()).toBe(false);
    // Autovacuum would have analyzed the partition after such a delete; the round that follows analyzes the parent.
    await env.pool.query('ANALYZE jobs_live, jobs_archive');
    expect(await retention.runOnce()).toBe(false);
    expect((await parentStatistics()).rows).toBe(100);
  });

  it('statistics never taken (or lost with a failover) are taken; a worker skips while another one analyzes', async () => {
    await env.pool.query(`SELECT pg_stat_reset_single_table_counters('jobs'::regclass)`);
    const other = new pg.Client({ connectionString: env.databaseUrl });
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query(`SELECT pg_advisory_xact_lock(hashtextextended('bulk-import-worker/analyze-jobs', 0))`);
      expect((await analyzeJobsIfStale(env.pool)).analyzed).toBeNull();
      await other.query('COMMIT');
    } finally {
      await other.end();
    }
    expect((await analyzeJobsIfStale(env.pool)).analyzed).toBe('never');
    expect((await analyzeJobsIfStale(env.pool)).analyzed).toBeNull();
  });

  it('a parent counted after its partitions is not analyzed again for their older estimates', async (context) => {
    // Only Postgres 18 analyzes a partitioned table without its partitions (ANALYZE ONLY); before, the partitions are
    // counted with it, and the parent is never ahead of them.
    const { rows } = await env.pool.query<{ version: number }>(`SELECT current_setting('server_version_num')::int AS version`);
    if (rows[0]!.version < 180000) context.skip('ANALYZE ONLY needs Postgres 18');
    await env.pool.query('TRUNCATE jobs CASCADE');
    await seedFinished(1_000, 1);
    // 1,000 more rows the partitions' estimates have not seen yet, then the parent analyzed: it counts 2,000.
    await env.pool.query(
      `INSERT INTO jobs (kind, payload, state, attempts, finished_at) SELECT 'noop', '{}', 'succeeded', 1, now() FROM generate_series(1, 1000)`,
    );
    // ONLY: the partitions keep their estimates of 1,000.
    await env.pool.query('ANALYZE ONLY jobs');
    expect(await analyzeJobsIfStale(env.pool)).toEqual({ analyzed: null, partitionRows: 1_000, parentRows: 2_000 });
    // Once autovacuum counts a partition again, the difference is a change since.
    await env.pool.query(`INSERT INTO jobs (kind, payload, state) SELECT 'noop', '{}', 'queued' FROM generate_series(1, 1000)`);
    await env.pool.query('ANALYZE jobs_live, jobs_archive');
    expect(await analyzeJobsIfStale(env.pool)).toEqual({ analyzed: 'rows', partitionRows: 3_000, parentRows: 2_000 });
  });

  it('a user that may not analyze jobs, or a table Postgres skips, is reported as skipped, never as analyzed', async () => {
    await env.pool.query(`SELECT pg_stat_reset_single_table_counters('jobs'::regclass)`);
    // A worker connecting as a role that does not own jobs (and has no MAINTAIN on it): it reads and writes every
    // table (retention deletes), owns none.
    const role = await createTablesOnlyRole(env, 'bi_stats');
    const limited = role.pool;
    const lines: Array<Record<string, unknown>> = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
        done();
      },
    });
    try {
      expect(await analyzeJobsIfStale(limited)).toMatchObject({
        analyzed: null,
        skipped: { reason: 'never', because: expect.stringContaining('may not analyze jobs') },
      });
      // Its retention round says so once as a warning, then at debug; it never says it analyzed.
      const retention = createRetention(limited, 30, 3_600_000, createLogger({ level: 'debug', format: 'json', destination }));
      await retention.runOnce();
      await retention.runOnce();
      const said = lines.filter((line) => String(line.msg).includes('jobs table as a whole'));
      expect(said.map((line) => [line.level, line.msg])).toEqual([
        [40, 'the jobs table as a whole needs analyzing and was not analyzed'],
        [20, 'the jobs table as a whole needs analyzing and was not analyzed'],
      ]);
    } finally {
      await role.drop();
    }

    // The database's owner may analyze every table in it, owner of jobs or not.
    const dbOwner = `bi_dbowner_${randomBytes(4).toString('hex')}`;
    const { rows: here } = await env.pool.query<{ database: string; superuser: string }>(`SELECT current_database() AS database, current_user AS superuser`);
    await env.pool.query(`CREATE ROLE ${dbOwner} LOGIN PASSWORD 'stats'`);
    await env.pool.query(`ALTER DATABASE "${here[0]!.database}" OWNER TO ${dbOwner}`);
    const url = new URL(env.databaseUrl);
    url.username = dbOwner;
    url.password = 'stats';
    const owning = createPool(url.toString(), { max: 1 });
    try {
      const statistics = await analyzeJobsIfStale(owning);
      expect(statistics).toMatchObject({ analyzed: 'never' });
      expect(statistics.skipped).toBeUndefined();
      await env.pool.query(`SELECT pg_stat_reset_single_table_counters('jobs'::regclass)`);
    } finally {
      await owning.end();
      await env.pool.query(`ALTER DATABASE "${here[0]!.database}" OWNER TO "${here[0]!.superuser}"`);
      await env.pool.query(`DROP ROLE ${dbOwner}`);
    }

    // A table held by another session (a long vacuum, a migration): SKIP_LOCKED skips it, and Postgres's warning says why.
    const other = new pg.Client({ connectionString: env.databaseUrl });
    await other.connect();
    try {
      await other.query('BEGIN');
      await other.query('LOCK TABLE jobs IN SHARE UPDATE EXCLUSIVE MODE');
      expect(await analyzeJobsIfStale(env.pool)).toMatchObject({
        analyzed: null,
        skipped: { reason: 'never', because: expect.stringContaining('lock not available') },
      });
      await other.query('COMMIT');
    } finally {
      await other.end();
    }
    // Still stale, so the owner's next round analyzes.
    expect(await analyzeJobsIfStale(env.pool)).toMatchObject({ analyzed: 'never' });
    expect((await analyzeJobsIfStale(env.pool)).skipped).toBeUndefined();
  });

  it('statistics a day old are refreshed even when the row count held still', () => {
    const counts = { partitionRows: 100_000, parentRows: 100_000, partitionsCountedSince: true };
    expect(jobsStatisticsStaleness({ ...counts, hoursSinceAnalyze: JOBS_STATISTICS_MAX_AGE_HOURS - 0.1 })).toBeNull();
    expect(jobsStatisticsStaleness({ ...counts, hoursSinceAnalyze: JOBS_STATISTICS_MAX_AGE_HOURS })).toBe('age');
    expect(jobsStatisticsStaleness({ ...counts, partitionRows: 110_051, hoursSinceAnalyze: 1 })).toBe('rows');
    expect(jobsStatisticsStaleness({ ...counts, partitionRows: 89_949, hoursSinceAnalyze: 1 })).toBe('rows');
    expect(jobsStatisticsStaleness({ ...counts, partitionRows: 110_050, hoursSinceAnalyze: 1 })).toBeNull();
    expect(jobsStatisticsStaleness({ ...counts, partitionRows: 200_000, hoursSinceAnalyze: 1, partitionsCountedSince: false })).toBeNull();
  });
});
