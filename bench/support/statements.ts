// pg_stat_statements for a benchmark (BENCH_STATEMENTS=1, the server started with the library preloaded): where a
// job's database time goes, statement by statement.
import type { Queryable } from '../../worker/db/pool.js';

/** The settings that load it, for startEmbeddedPostgres. */
export const STATEMENTS_SETTINGS = { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'all' };

/** With pg_stat_statements loaded (BENCH_STATEMENTS=1): clears its counters and returns true. */
export async function resetStatements(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ loaded: boolean }>(`SELECT current_setting('shared_preload_libraries') LIKE '%pg_stat_statements%' AS loaded`);
  if (!rows[0]!.loaded) return false;
  await db.query('CREATE EXTENSION IF NOT EXISTS pg_stat_statements');
  await db.query('SELECT pg_stat_statements_reset()');
  return true;
}

/** The statements of the run by database time: where a job's database cost goes. */
export async function printStatements(db: Queryable, jobs: number): Promise<void> {
  const { rows } = await db.query<{ calls: number; total_ms: number; max_ms: number; rows: number; query: string }>(
    `SELECT calls::int, total_exec_time AS total_ms, max_exec_time AS max_ms, rows::int,
       regexp_replace(left(query, 110), '\\s+', ' ', 'g') AS query
     FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%' ORDER BY total_exec_time DESC LIMIT 14`,
  );
  // The slowest call beside the total: a few calls that waited (a lock, a page) read differently from a steady cost.
  console.log('\n  | statement | calls | rows | total ms | slowest call ms | µs per job |\n  |---|---|---|---|---|---|');
  for (const row of rows) {
    console.log(`  | ${row.query} | ${row.calls} | ${row.rows} | ${row.total_ms.toFixed(0)} | ${row.max_ms.toFixed(1)} | ${((row.total_ms * 1000) / jobs).toFixed(1)} |`);
  }
}
