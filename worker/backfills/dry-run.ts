// The rehearsal: walks the same keyset batches as the real run, computes every value (so a compute that fails on
// some row fails here), counts the rows that would change and keeps a sample of before/after values. Each batch runs
// in a READ ONLY transaction: a dry run cannot write, whatever the definition's SQL does.
import { READ_ONLY_TRANSACTION } from '../db/database-status.js';
import { withTransaction } from '../db/pool.js';
import { sqlState } from '../db/sql-state.js';
import type { JobContext } from '../handlers/types.js';
import { PermanentJobError } from '../queue/errors.js';
import type { BackfillRunOptions } from './fill-run.js';
import { describeBackfillError } from './errors.js';
import { freshProgress, WHOLE_TABLE, withRate, type BackfillProgress } from './progress.js';
import { countRows, previewBatch, type PreviewRow } from './statements.js';

export interface DryRunOutcome {
  /** Rows the real run would write now (rows in scope lacking the field, capped by maxRows). */
  wouldChange: number;
  /** Of those, rows whose computed value is NULL. */
  computedNull: number;
  sample: PreviewRow[];
  /** Rows in scope lacking the field, and all rows in scope, counted before the walk. */
  missing: number;
  rowsInScope: number;
  durationMs: number;
}

export async function runDryRun(
  context: JobContext<unknown>,
  options: BackfillRunOptions & { sampleSize: number },
): Promise<DryRunOutcome> {
  const { signal } = context;
  const { backfill, scope } = options;
  const pool = context.services.pool;
  const startedAt = Date.now();
  const maxRows = options.maxRows ?? Infinity;
  let progress: BackfillProgress = freshProgress('dry-run', backfill.definition.name, scope.tenantId);
  context.progress.update({ ...progress });

  let counts;
  try {
    counts = await countRows(pool, backfill, scope);
  } catch (error) {
    throw describeBackfillError(error, backfill, { statement: 'count' });
  }
  progress = { ...progress, phase: 'dry-run', total: Math.min(counts.missing, maxRows), partitions: [{ ...WHOLE_TABLE }] };
  let cursor: unknown = null;
  const sample: PreviewRow[] = [];
  let computedNull = 0;
  for (;;) {
    if (signal.aborted) throw signal.reason;
    const limit = Math.min(options.batchSize, maxRows - progress.done);
    if (limit <= 0) break;
    const selection = { after: cursor, limit };
    const preview = await withTransaction(pool, async (tx) => {
      await tx.query('SET TRANSACTION READ ONLY');
      return previewBatch(tx, backfill, scope, selection, options.sampleSize - sample.length);
    }).catch((error: unknown) => {
      // The batch's transaction is read-only on purpose: a write refused in it is the backfill's own (a compute that
      // calls nextval() or a function that inserts), not a session left on a demoted instance (an outage elsewhere).
      if (sqlState(error) === READ_ONLY_TRANSACTION) {
        throw new PermanentJobError(
          `backfill ${backfill.definition.name}: computing the value writes to the database, which a dry run must not do (${(error as Error).message})`,
          'BACKFILL_DRY_RUN_WRITES',
          { backfill: backfill.definition.name, table: backfill.definition.table, ...selection },
          { cause: error, internal: true },
        );
      }
      throw describeBackfillError(error, backfill, selection);
    });
    sample.push(...preview.sample);
    computedNull += preview.computedNull;
    progress = withRate(
      {
        ...progress,
        done: progress.done + preview.selected,
        partitions: [{ ...WHOLE_TABLE, cursor: preview.lastKey ?? cursor, finished: preview.selected < limit }],
        batches: progress.batches + 1,
      },
      progress.done + preview.selected,
      startedAt,
    );
    cursor = preview.lastKey ?? cursor;
    context.progress.update({ ...progress });
    if (preview.selected < limit) break;
  }
  context.progress.update({ ...progress, phase: 'done' });
  return {
    wouldChange: progress.done,
    computedNull,
    sample,
    missing: counts.missing,
    rowsInScope: counts.rows,
    durationMs: Date.now() - startedAt,
  };
}
