// Every SQL statement of a backfill, one named function each: fill a batch (SQL or TypeScript compute), preview a
// batch (dry-run), count the rows that lack the field. Batches are keyset-ordered (never OFFSET) or, for rows that
// conflicted with a concurrent writer, a list of keys.
import type { Queryable } from '../db/pool.js';
import type { CompiledBackfill } from './compile.js';
import type { TypeScriptCompute } from './types.js';

export interface BackfillScope {
  /** Only rows of this tenant; null means every row. */
  tenantId: string | null;
}

/**
 * Which rows a batch looks at: the next `limit` missing rows after a key (null: from the start), up to an inclusive
 * upper key (null: to the end) — or given keys (retries of conflicting rows).
 */
export type BatchSelection = { after: unknown; upTo?: unknown; limit: number } | { keys: unknown[] };

/**
 * Keep a before-image of every row the batch writes (migration 20261205000400): key, the target column's value
 * before and after, the run, and the row version written (`written_xid`, 20261207150000: undo restores only that
 * version). In the batch's own statement or transaction, so it commits with the rows.
 */
export interface BeforeImageOptions {
  jobId: number;
}

export interface FillResult {
  /** Missing rows the batch read. */
  selected: number;
  /** Highest key read (the next cursor); null when nothing was read. */
  lastKey: unknown;
  written: number;
  /** Written rows that still count as missing: the compute gave nothing usable (e.g. NULL). */
  unfillable: number;
  /** Rows read but not written because a concurrent writer changed them in between: retried later. */
  conflictKeys: unknown[];
}

export interface PreviewRow {
  key: unknown;
  before: Record<string, unknown>;
  after: unknown;
}

export interface PreviewResult {
  selected: number;
  lastKey: unknown;
  /** Rows whose computed value is NULL. */
  computedNull: number;
  sample: PreviewRow[];
}

export class ComputeFailedError extends Error {
  constructor(
    readonly key: unknown,
    cause: unknown,
  ) {
    super(`the backfill's compute failed for the row with key ${JSON.stringify(key)}: ${(cause as Error)?.message ?? String(cause)}`, {
      cause,
    });
    this.name = 'ComputeFailedError';
  }
}

class Params {
  readonly values: unknown[] = [];
  add(value: unknown): string {
    this.values.push(value);
    return `$${this.values.length}`;
  }
}

/** WHERE … ORDER BY … [LIMIT] of a batch over alias `b`. */
function selectRows(backfill: CompiledBackfill, scope: BackfillScope, selection: BatchSelection, params: Params): string {
  const conditions = [`(${backfill.missing('b')})`];
  if (scope.tenantId !== null) {
    if (!backfill.tenant) throw new Error(`backfill ${backfill.definition.name} has no tenant column`);
    conditions.push(`b.${backfill.tenant} = ${params.add(scope.tenantId)}`);
  }
  if ('keys' in selection) {
    conditions.push(`b.${backfill.key} = ANY(${params.add(selection.keys)}::${backfill.keyType}[])`);
    return `WHERE ${conditions.join(' AND ')} ORDER BY b.${backfill.key}`;
  }
  if (selection.after !== null && selection.after !== undefined) {
    conditions.push(`b.${backfill.key} > ${params.add(selection.after)}::${backfill.keyType}`);
  }
  if (selection.upTo !== null && selection.upTo !== undefined) {
    conditions.push(`b.${backfill.key} <= ${params.add(selection.upTo)}::${backfill.keyType}`);
  }
  return `WHERE ${conditions.join(' AND ')} ORDER BY b.${backfill.key} LIMIT ${params.add(selection.limit)}`;
}

/** bigint[] comes back as strings from node-postgres; keys are stored in progress JSON, so make them numbers. */
function normalizeKeys(backfill: CompiledBackfill, keys: unknown[] | null): unknown[] {
  if (!keys) return [];
  return hasNumericKey(backfill) ? keys.map((key) => Number(key)) : keys;
}

/** Fills one batch in the caller's transaction. */
export function fillBatch(
  db: Queryable,
  backfill: CompiledBackfill,
  scope: BackfillScope,
  selection: BatchSelection,
  beforeImage?: BeforeImageOptions,
): Promise<FillResult> {
  return backfill.definition.compute.language === 'sql'
    ? fillBatchInSql(db, backfill, scope, selection, backfill.definition.compute.expression, beforeImage)
    : fillBatchInTypeScript(db, backfill, scope, selection, backfill.definition.compute, beforeImage);
}

/**
 * The INSERT of before-images from rows `(key, old_value jsonb, new_value jsonb, tenant, written_xmin xid)` given as
 * SQL, `written_xmin` being the xmin of the row version the UPDATE made. That is this transaction's id, stored with
 * its 64 bits (pg_current_xact_id()) so an undo can tell how old it is; were the write in a subtransaction (it is
 * not: a batch has no savepoints) the two would differ and the image would store no version (the value rule).
 */
function insertBeforeImages(backfill: CompiledBackfill, rows: string, jobId: string, name: string): string {
  const { definition } = backfill;
  return `INSERT INTO backfill_before_images (backfill, row_key, table_name, column_name, tenant_id, old_value, new_value, job_id, written_xid)
       SELECT ${name}, r.key::text, ${quoteLiteral(definition.table)}, ${quoteLiteral(definition.targetColumn)}, r.tenant,
              r.old_value, r.new_value, ${jobId},
              CASE WHEN r.written_xmin = pg_current_xact_id()::xid THEN pg_current_xact_id() END
       FROM (${rows}) r
       ON CONFLICT (backfill, row_key) DO NOTHING`;
}

function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}

/**
 * One statement: read the batch, update it, report. The update joins the rows read by ctid (no second index lookup)
 * and writes only rows that still lack the field and whose source columns still hold the values read. A concurrent
 * writer that changed a row in between makes Postgres re-check these conditions on the new row version (READ
 * COMMITTED re-evaluation), so the row is skipped, never overwritten, and reported as a conflict.
 */
async function fillBatchInSql(
  db: Queryable,
  backfill: CompiledBackfill,
  scope: BackfillScope,
  selection: BatchSelection,
  expression: (row: string) => string,
  beforeImage?: BeforeImageOptions,
): Promise<FillResult> {
  const params = new Params();
  const where = selectRows(backfill, scope, selection, params);
  const sourcesRead = backfill.sources.map((column, index) => `b.${column} AS s${index}`).join(', ');
  const tenant = backfill.tenant ? `b.${backfill.tenant}::text` : 'NULL::text';
  // The old value is the one the batch read: the write requires the row to still lack the field and its sources to
  // be unchanged, so with the default "missing" (IS NULL) it is exactly the value overwritten.
  const saved = beforeImage
    ? `, saved AS (
       ${insertBeforeImages(
         backfill,
         `SELECT written.key, to_jsonb(batch.old_value) AS old_value, written.new_value, batch.tenant, written.written_xmin
          FROM written JOIN batch ON batch.key = written.key`,
         params.add(beforeImage.jobId),
         params.add(backfill.definition.name),
       )}
     )`
    : '';
  const sourcesUnchanged = backfill.sources
    .map((column, index) => `t.${column} IS NOT DISTINCT FROM batch.s${index}`)
    .join(' AND ');
  const { rows } = await db.query(
    `WITH batch AS (
       SELECT b.${backfill.key} AS key, b.ctid AS row_id, ${sourcesRead}${beforeImage ? `, b.${backfill.target} AS old_value, ${tenant} AS tenant` : ''}
       FROM ${backfill.table} b ${where}
     ), written AS (
       UPDATE ${backfill.table} t SET ${backfill.write(`(${expression('t')})`)}
       FROM batch
       WHERE t.ctid = batch.row_id AND t.${backfill.key} = batch.key AND (${backfill.missing('t')}) AND ${sourcesUnchanged}
       RETURNING t.${backfill.key} AS key, (${backfill.missing('t')}) AS still_missing${beforeImage ? `, to_jsonb(t.${backfill.target}) AS new_value, t.xmin AS written_xmin` : ''}
     )${saved}
     SELECT (SELECT count(*) FROM batch)::int AS selected,
            (SELECT key FROM batch ORDER BY key DESC LIMIT 1) AS last_key,
            (SELECT count(*) FROM written)::int AS written,
            (SELECT count(*) FROM written WHERE still_missing)::int AS unfillable,
            (SELECT array_agg(key ORDER BY key) FROM batch
              WHERE NOT EXISTS (SELECT FROM written WHERE written.key = batch.key)) AS conflict_keys`,
    params.values,
  );
  const row = rows[0];
  return {
    selected: row.selected,
    lastKey: row.last_key,
    written: row.written,
    unfillable: row.unfillable,
    conflictKeys: normalizeKeys(backfill, row.conflict_keys),
  };
}

interface ReadRow {
  __key: unknown;
  __row_id: string;
  __row_xmin: string;
  [column: string]: unknown;
}

async function readBatch(
  db: Queryable,
  backfill: CompiledBackfill,
  scope: BackfillScope,
  selection: BatchSelection,
  extraColumns = '',
): Promise<ReadRow[]> {
  const params = new Params();
  const where = selectRows(backfill, scope, selection, params);
  const sources = backfill.sources.map((column) => `b.${column}`).join(', ');
  const { rows } = await db.query<ReadRow>(
    `SELECT b.${backfill.key} AS __key, b.ctid::text AS __row_id, b.xmin::text AS __row_xmin, ${sources}${extraColumns}
     FROM ${backfill.table} b ${where}`,
    params.values,
  );
  return rows;
}

/** The row as the compute function sees it: key column and source columns under their own names. */
function computeInput(backfill: CompiledBackfill, row: ReadRow): Record<string, unknown> {
  const input: Record<string, unknown> = { [backfill.definition.key.column]: row.__key };
  for (const column of backfill.definition.sourceColumns) input[column] = row[column];
  return input;
}

function computeRow(backfill: CompiledBackfill, compute: TypeScriptCompute, row: ReadRow): unknown {
  try {
    return compute.compute(computeInput(backfill, row));
  } catch (error) {
    throw new ComputeFailedError(row.__key, error);
  }
}

/**
 * Read the batch, compute each value in the worker, write back in one UPDATE … FROM unnest(…). The optimistic check
 * is the row version: a row is written only if its ctid and xmin are still the ones read (no one changed it since)
 * and it still lacks the field.
 */
async function fillBatchInTypeScript(
  db: Queryable,
  backfill: CompiledBackfill,
  scope: BackfillScope,
  selection: BatchSelection,
  compute: TypeScriptCompute,
  beforeImage?: BeforeImageOptions,
): Promise<FillResult> {
  const tenant = backfill.tenant ? `b.${backfill.tenant}::text` : 'NULL::text';
  const read = await readBatch(
    db,
    backfill,
    scope,
    selection,
    beforeImage ? `, to_jsonb(b.${backfill.target})::text AS __old_value, ${tenant} AS __tenant` : '',
  );
  if (read.length === 0) return { selected: 0, lastKey: null, written: 0, unfillable: 0, conflictKeys: [] };
  const values = read.map((row) => computeRow(backfill, compute, row));
  // The write requires the row version read (ctid, xmin): the old value read is exactly the value overwritten.
  const saved = beforeImage
    ? `, saved AS (
       ${insertBeforeImages(
         backfill,
         `SELECT written.key, before.old_value::jsonb AS old_value, written.new_value, before.tenant, written.written_xmin
          FROM written JOIN unnest($1::${backfill.keyType}[], $5::text[], $6::text[]) AS before(key, old_value, tenant)
            ON before.key = written.key`,
         '$7',
         '$8',
       )}
     )`
    : '';
  const parameters: unknown[] = [read.map((row) => row.__key), read.map((row) => row.__row_id), read.map((row) => row.__row_xmin), values];
  if (beforeImage) {
    parameters.push(read.map((row) => row.__old_value), read.map((row) => row.__tenant), beforeImage.jobId, backfill.definition.name);
  }
  const { rows } = await db.query(
    `WITH input AS (
       SELECT * FROM unnest($1::${backfill.keyType}[], $2::tid[], $3::xid[], $4::${compute.valueType}[])
         AS input(key, row_id, row_xmin, value)
     ), written AS (
       UPDATE ${backfill.table} t SET ${backfill.write('input.value')}
       FROM input
       WHERE t.ctid = input.row_id AND t.${backfill.key} = input.key AND t.xmin = input.row_xmin
         AND (${backfill.missing('t')})
       RETURNING t.${backfill.key} AS key, (${backfill.missing('t')}) AS still_missing${beforeImage ? `, to_jsonb(t.${backfill.target}) AS new_value, t.xmin AS written_xmin` : ''}
     )${saved}
     SELECT (SELECT count(*) FROM written)::int AS written,
            (SELECT count(*) FROM written WHERE still_missing)::int AS unfillable,
            (SELECT array_agg(key ORDER BY key) FROM input
              WHERE NOT EXISTS (SELECT FROM written WHERE written.key = input.key)) AS conflict_keys`,
    parameters,
  );
  const row = rows[0];
  return {
    selected: read.length,
    lastKey: read[read.length - 1]!.__key,
    written: row.written,
    unfillable: row.unfillable,
    conflictKeys: normalizeKeys(backfill, row.conflict_keys),
  };
}

/**
 * Dry-run of one batch: computes the value of every row read (so a compute that fails on some row fails here,
 * before anything is written), counts NULL results and returns the first `sampleSize` rows as before/after.
 * Writes nothing.
 */
export async function previewBatch(
  db: Queryable,
  backfill: CompiledBackfill,
  scope: BackfillScope,
  selection: BatchSelection,
  sampleSize: number,
): Promise<PreviewResult> {
  const compute = backfill.definition.compute;
  const sourceNames = backfill.definition.sourceColumns;
  const targetName = backfill.definition.targetColumn;
  if (compute.language === 'typescript') {
    const read = await readBatch(db, backfill, scope, selection, `, b.${backfill.target} AS __current`);
    const values = read.map((row) => computeRow(backfill, compute, row));
    return {
      selected: read.length,
      lastKey: read.length > 0 ? read[read.length - 1]!.__key : null,
      computedNull: values.filter((value) => value === null || value === undefined).length,
      sample: read.slice(0, sampleSize).map((row, index) => ({
        key: row.__key,
        before: Object.fromEntries([[targetName, row.__current], ...sourceNames.map((name) => [name, row[name]])]),
        after: values[index] ?? null,
      })),
    };
  }
  const params = new Params();
  const where = selectRows(backfill, scope, selection, params);
  const sources = backfill.sources.map((column, index) => `b.${column} AS s${index}`).join(', ');
  const sample = params.add(sampleSize);
  const { rows } = await db.query(
    `WITH batch AS MATERIALIZED (
       SELECT b.${backfill.key} AS key, b.${backfill.target} AS current, ${sources}, (${compute.expression('b')}) AS computed
       FROM ${backfill.table} b ${where}
     )
     SELECT (SELECT count(*) FROM batch)::int AS selected,
            (SELECT key FROM batch ORDER BY key DESC LIMIT 1) AS last_key,
            (SELECT count(*) FROM batch WHERE computed IS NULL)::int AS computed_null,
            (SELECT coalesce(json_agg(s ORDER BY s.key), '[]'::json)
               FROM (SELECT * FROM batch ORDER BY key LIMIT ${sample}) s) AS sample`,
    params.values,
  );
  const row = rows[0];
  const sampled = row.sample as Array<Record<string, unknown>>;
  return {
    selected: row.selected,
    lastKey: row.last_key,
    computedNull: row.computed_null,
    sample: sampled.map((entry) => ({
      key: entry.key,
      before: Object.fromEntries([
        [targetName, entry.current],
        ...sourceNames.map((name, index) => [name, entry[`s${index}`]]),
      ]),
      after: entry.computed,
    })),
  };
}

export interface RowCounts {
  /** Rows in scope (the table, or one tenant's rows). */
  rows: number;
  /** Rows in scope that lack the field. */
  missing: number;
  /** Lowest and highest key of the missing rows, for numeric keys (to split the walk); null otherwise or when none. */
  missingKeyRange: { min: number; max: number } | null;
}

export function hasNumericKey(backfill: CompiledBackfill): boolean {
  return backfill.keyType === 'bigint' || backfill.keyType === 'integer';
}

/** The pre-check and the proof of 100%: how many rows in scope lack the field. One scan. */
export async function countRows(db: Queryable, backfill: CompiledBackfill, scope: BackfillScope): Promise<RowCounts> {
  const params = new Params();
  let where = '';
  if (scope.tenantId !== null) {
    if (!backfill.tenant) throw new Error(`backfill ${backfill.definition.name} has no tenant column`);
    where = `WHERE b.${backfill.tenant} = ${params.add(scope.tenantId)}`;
  }
  const missing = backfill.missing('b');
  const range = hasNumericKey(backfill)
    ? `min(b.${backfill.key}) FILTER (WHERE ${missing})::bigint AS min_key, max(b.${backfill.key}) FILTER (WHERE ${missing})::bigint AS max_key`
    : 'NULL::bigint AS min_key, NULL::bigint AS max_key';
  const { rows } = await db.query<{ rows: number; missing: number; min_key: number | null; max_key: number | null }>(
    `SELECT count(*)::bigint AS rows, count(*) FILTER (WHERE ${missing})::bigint AS missing, ${range}
     FROM ${backfill.table} b ${where}`,
    params.values,
  );
  const row = rows[0]!;
  return {
    rows: row.rows,
    missing: row.missing,
    missingKeyRange: row.min_key === null || row.max_key === null ? null : { min: row.min_key, max: row.max_key },
  };
}
