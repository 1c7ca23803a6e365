// Undo of a backfill run with `"saveBeforeImage": true` (`bulk-import backfill undo <name>`): writes the saved old
// values back, in keyset batches over the before-images (one short transaction each, so writers wait at most one
// batch), but only to rows not written since the backfill wrote them: the row is still the version the backfill's
// write made (its xmin is the batch transaction's id, saved with the image since migration 20261207150000) and holds
// the value written. Any later write to the row makes a new version — an application or trigger that wrote the same
// value, a change of another column, a later run — and the row is left as it is and reported. Restored rows'
// before-images are deleted in the same transaction, so an interrupted undo resumes by running it again. `discard`
// deletes before-images once a run is accepted. The migration behind it: 20261205000400_backfill_before_images.sql.
import { setTimeout as sleep } from 'node:timers/promises';
import type { Pool } from '../db/pool.js';
import { withTransaction } from '../db/pool.js';
import { sqlState } from '../db/sql-state.js';
import { BACKFILL_KIND } from '../handlers/kinds.js';
import { ACTIVE_STATES } from '../queue/types.js';
import { BatchSizer, batchTimeoutSettings } from './batch-sizer.js';
import { BatchTries } from './batch-tries.js';
import { DEFAULT_BATCH_TIMEOUT_MS, type CompiledBackfill } from './compile.js';
import { isStatementTimeout } from './errors.js';

export interface BeforeImageScope {
  /** Only before-images of this tenant's rows; null = all. */
  tenantId: string | null;
  /** Only before-images written by this run; null = every run of the backfill. */
  jobId: number | null;
}

export interface UndoOptions extends BeforeImageScope {
  batchSize: number;
  /**
   * The statement timeout of a batch (ms), as a fill run's (batch-sizer.ts): a batch that outlasts it is rolled back
   * and tried again with half the rows. Undefined: DEFAULT_BATCH_TIMEOUT_MS.
   */
  batchTimeoutMs?: number;
  /** Hears each batch tried again after a lock wait, a deadlock or a one-row timeout (the CLI says so on stderr). */
  onRetry?: (retry: UndoRetry) => void;
}

/** A batch of an undo tried again as it is: `reason` the SQLSTATE's meaning, `try` the try that failed (1-based). */
export interface UndoRetry {
  reason: 'lock' | 'timeout';
  sqlstate: string;
  try: number;
  afterKey: string | null;
}

export interface UndoOutcome {
  backfill: string;
  table: string;
  column: string;
  /** Rows whose old value was written back (their before-images are gone). */
  restored: number;
  /** Rows left alone: written since the backfill wrote them, or deleted. Their before-images stay. */
  skipped: number;
  /** The first skipped keys. */
  skippedKeys: string[];
  batches: number;
  /** Batches rolled back for outlasting the batch timeout (each tried again with half the rows). */
  batchTimeouts: number;
  /** Rows per batch at the end: the batch size asked for, unless batches timed out. */
  finalBatchSize: number;
}

export interface BeforeImageCounts {
  backfill: string;
  /** Before-images in scope. */
  saved: number;
  /** Of those, rows not written since the backfill wrote them: what an undo would restore now. */
  restorable: number;
  /** Rows written since the backfill wrote them (whatever the value now). */
  changed: number;
  /** Rows deleted since. */
  deleted: number;
}

const SKIPPED_KEYS_SHOWN = 20;

class Params {
  readonly values: unknown[] = [];
  add(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}

/** The before-images of a backfill without a tenant column carry no tenant: a tenant filter would match nothing. */
function assertTenantScope(backfill: CompiledBackfill, scope: BeforeImageScope): void {
  if (scope.tenantId !== null && !backfill.tenant) {
    throw new Error(`backfill ${backfill.definition.name} has no tenant column: --tenant cannot be used`);
  }
}

/**
 * SQL: row `row` (of the backfill's table) is still as the backfill left it, before-image `image` says. With a saved
 * version (`written_xid`): the row's xmin is still the one the backfill's write gave it — any later UPDATE makes a new
 * version with the writer's xid, even one that sets the same value or another column only; a lock (FOR UPDATE/SHARE)
 * makes none. Freezing keeps the xmin (Postgres 9.4 and later mark the tuple frozen in place), so a 32-bit xmin
 * names one transaction for 2^31 transactions after the write; an older image can prove nothing and its row counts as
 * changed. And the value is still the one written. An image saved before 20261207150000 has no version: the value
 * alone decides (a row set to the same value since is restored).
 */
function unchangedSince(backfill: CompiledBackfill, image: string, row: string): string {
  return `to_jsonb(${row}.${backfill.target}) IS NOT DISTINCT FROM ${image}.new_value
    AND (${image}.written_xid IS NULL
         OR (${row}.xmin = ${image}.written_xid::xid
             AND ${image}.written_xid::text::numeric > (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::numeric - 2147483648)))`;
}

function scopeConditions(backfill: CompiledBackfill, scope: BeforeImageScope, params: Params, alias: string): string[] {
  const conditions = [`${alias}.backfill = ${params.add(backfill.definition.name)}`];
  if (scope.tenantId !== null) conditions.push(`${alias}.tenant_id = ${params.add(scope.tenantId)}`);
  if (scope.jobId !== null) conditions.push(`${alias}.job_id = ${params.add(scope.jobId)}`);
  return conditions;
}

/**
 * Refuses while a real (not dry) run of this backfill is queued or running: it would fill rows behind an undo, and
 * save before-images a discard could delete as soon as they are written.
 */
async function assertNoActiveRun(pool: Pool, backfill: CompiledBackfill, action: 'an undo' | 'a discard'): Promise<void> {
  const { rows } = await pool.query<{ id: string }>(
    `SELECT id FROM jobs
     WHERE kind = $2 AND state = ANY($3) AND payload->>'name' = $1
       AND coalesce(payload->>'dryRun', 'false') <> 'true'
     ORDER BY id LIMIT 1`,
    [backfill.definition.name, BACKFILL_KIND, ACTIVE_STATES],
  );
  if (rows[0]) {
    throw new Error(
      `run ${rows[0].id} of backfill ${backfill.definition.name} is active: cancel it (bulk-import cancel ${rows[0].id}) before ${action}`,
    );
  }
}

/** What an undo would do now (the dry run of `backfill undo`), and the post-check of a run with before-images. */
export async function countBeforeImages(pool: Pool, backfill: CompiledBackfill, scope: BeforeImageScope): Promise<BeforeImageCounts> {
  assertTenantScope(backfill, scope);
  const params = new Params();
  const where = scopeConditions(backfill, scope, params, 'i').join(' AND ');
  const { rows } = await pool.query<{ saved: number; restorable: number; deleted: number }>(
    `SELECT count(*)::bigint AS saved,
            count(*) FILTER (WHERE t.${backfill.key} IS NOT NULL AND ${unchangedSince(backfill, 'i', 't')})::bigint AS restorable,
            count(*) FILTER (WHERE t.${backfill.key} IS NULL)::bigint AS deleted
     FROM backfill_before_images i
     LEFT JOIN ${backfill.table} t ON t.${backfill.key} = i.row_key::${backfill.keyType}
     WHERE ${where}`,
    params.values,
  );
  const row = rows[0]!;
  const saved = Number(row.saved);
  const restorable = Number(row.restorable);
  const deleted = Number(row.deleted);
  return { backfill: backfill.definition.name, saved, restorable, deleted, changed: saved - restorable - deleted };
}

export async function undoBackfill(pool: Pool, backfill: CompiledBackfill, options: UndoOptions): Promise<UndoOutcome> {
  assertTenantScope(backfill, options);
  await assertNoActiveRun(pool, backfill, 'an undo');
  const outcome: UndoOutcome = {
    backfill: backfill.definition.name,
    table: backfill.definition.table,
    column: backfill.definition.targetColumn,
    restored: 0,
    skipped: 0,
    skippedKeys: [],
    batches: 0,
    batchTimeouts: 0,
    finalBatchSize: options.batchSize,
  };
  const sizer = new BatchSizer(options.batchSize, options.batchTimeoutMs ?? DEFAULT_BATCH_TIMEOUT_MS);
  let cursor: string | null = null;
  // As a fill run's batches (batch-tries.ts): halved on a timeout, and five tries of a one-row timeout or a lock wait.
  const tries = new BatchTries(sizer);
  for (;;) {
    const rows = sizer.current;
    const startedAt = performance.now();
    let batch: UndoBatch;
    try {
      batch = await undoBatch(pool, backfill, options, cursor, rows, sizer.timeoutMs);
    } catch (error) {
      if (isStatementTimeout(error)) outcome.batchTimeouts += 1;
      const step = tries.failed(error, rows);
      // Rolled back whole: the same images again, half as many.
      if (step.kind === 'halve') continue;
      if (step.kind === 'retry') {
        options.onRetry?.({ reason: step.reason, sqlstate: step.sqlstate, try: step.try, afterKey: cursor });
        await sleep(step.pauseMs);
        continue;
      }
      if (step.reason === 'timeout') {
        const what = `could not be restored within the batch timeout of ${sizer.timeoutMs} ms in ${step.tries} tries (look for a trigger or a lock on that row, or raise --batch-timeout-ms)`;
        throw undoStopped(backfill, cursor, outcome, what, error);
      }
      if (step.reason === 'lock') {
        const what = `could not be restored in ${step.tries} tries: each waited for a row another transaction holds past the lock timeout, or met a deadlock (SQLSTATE ${sqlState(error)})`;
        throw undoStopped(backfill, cursor, outcome, what, error);
      }
      throw error;
    }
    tries.committed();
    sizer.committed(rows, performance.now() - startedAt);
    if (batch.selected === 0) break;
    outcome.batches += 1;
    outcome.restored += batch.restored;
    const skipped = batch.skipped ?? [];
    outcome.skipped += skipped.length;
    if (outcome.skippedKeys.length < SKIPPED_KEYS_SHOWN) {
      outcome.skippedKeys.push(...skipped.slice(0, SKIPPED_KEYS_SHOWN - outcome.skippedKeys.length));
    }
    cursor = batch.last_key;
    if (batch.selected < rows) break;
  }
  outcome.finalBatchSize = sizer.current;
  return outcome;
}

/** The error that stops an undo at the batch after `cursor`: what went wrong, how far it got, how to go on. */
function undoStopped(backfill: CompiledBackfill, cursor: string | null, outcome: UndoOutcome, what: string, cause: unknown): Error {
  return new Error(
    `backfill undo ${backfill.definition.name}: the before-images after key ${JSON.stringify(cursor)} ${what}; ` +
      `${outcome.restored} row(s) restored so far: run undo again to go on`,
    { cause },
  );
}

interface UndoBatch {
  selected: number;
  last_key: string | null;
  restored: number;
  skipped: string[] | null;
}

/** One undo batch: the next `rows` before-images after `cursor` restored where the row is unchanged, in one transaction. */
async function undoBatch(
  pool: Pool,
  backfill: CompiledBackfill,
  scope: BeforeImageScope,
  cursor: string | null,
  rows: number,
  timeoutMs: number,
): Promise<UndoBatch> {
  const column = backfill.definition.targetColumn.replace(/'/g, "''");
  const params = new Params();
  const conditions = scopeConditions(backfill, scope, params, 'i');
  if (cursor !== null) conditions.push(`i.row_key > ${params.add(cursor)}`);
  const limit = params.add(rows);
  return withTransaction(pool, async (client) => {
    // A wait for a row a writer holds is tried again; a batch too slow is halved (undoBackfill).
    await client.query(batchTimeoutSettings(timeoutMs));
    const { rows: answer } = await client.query<UndoBatch>(
      `WITH images AS (
         SELECT i.backfill, i.row_key, i.old_value, i.new_value, i.written_xid FROM backfill_before_images i
         WHERE ${conditions.join(' AND ')}
         ORDER BY i.row_key LIMIT ${limit}
         FOR UPDATE
       ), restored AS (
         UPDATE ${backfill.table} t
         SET ${backfill.target} = (jsonb_populate_record(NULL::${backfill.table}, jsonb_build_object('${column}', images.old_value))).${backfill.target}
         FROM images
         WHERE t.${backfill.key} = images.row_key::${backfill.keyType}
           AND ${unchangedSince(backfill, 'images', 't')}
         RETURNING images.row_key
       ), removed AS (
         DELETE FROM backfill_before_images d USING restored, images
         WHERE d.backfill = images.backfill AND d.row_key = restored.row_key AND images.row_key = restored.row_key
       )
       SELECT (SELECT count(*) FROM images)::int AS selected,
              (SELECT row_key FROM images ORDER BY row_key DESC LIMIT 1) AS last_key,
              (SELECT count(*) FROM restored)::int AS restored,
              (SELECT array_agg(row_key ORDER BY row_key) FROM images
                WHERE NOT EXISTS (SELECT FROM restored WHERE restored.row_key = images.row_key)) AS skipped`,
      params.values,
    );
    return answer[0]!;
  });
}

/**
 * Deletes before-images in scope (the run is accepted), in keyset batches over the primary key (backfill, row_key):
 * each statement reads the next `batchSize` images after the last key deleted and deletes them by ctid, so every
 * image is read once however many there are (a semi-join on the keys had the planner hash a full scan of the table
 * per batch). Refused while a run of the backfill is active. Returns how many were deleted.
 */
export async function discardBeforeImages(
  pool: Pool,
  backfill: CompiledBackfill,
  scope: BeforeImageScope,
  batchSize = 10_000,
): Promise<number> {
  assertTenantScope(backfill, scope);
  await assertNoActiveRun(pool, backfill, 'a discard');
  let deleted = 0;
  let cursor: string | null = null;
  for (;;) {
    const params = new Params();
    const conditions = scopeConditions(backfill, scope, params, 'i');
    if (cursor !== null) conditions.push(`i.row_key > ${params.add(cursor)}`);
    const { rows } = await pool.query<{ selected: number; last_key: string | null; deleted: number }>(
      `WITH doomed AS MATERIALIZED (
         SELECT i.ctid AS row_id, i.row_key FROM backfill_before_images i
         WHERE ${conditions.join(' AND ')}
         ORDER BY i.row_key LIMIT ${params.add(batchSize)}
       ), removed AS (
         DELETE FROM backfill_before_images d WHERE d.ctid = ANY (ARRAY(SELECT row_id FROM doomed))
         RETURNING 1
       )
       SELECT (SELECT count(*) FROM doomed)::int AS selected,
              (SELECT row_key FROM doomed ORDER BY row_key DESC LIMIT 1) AS last_key,
              (SELECT count(*) FROM removed)::int AS deleted`,
      params.values,
    );
    const batch = rows[0]!;
    deleted += batch.deleted;
    if (batch.selected < batchSize || batch.last_key === null) return deleted;
    cursor = batch.last_key;
  }
}
