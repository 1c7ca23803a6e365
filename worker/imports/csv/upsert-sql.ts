// Builds, from a profile and the columns a file has, the statements finalize runs: one that creates the reference rows
// a run names (categories, suppliers …) once, before any batch, and one that writes a staged batch: read the batch's
// rows, look every reference up by name, and upsert the rows on the natural key. One statement per batch (not per
// row) keeps the database doing set work; it runs as a prepared statement.
//
// References and concurrent imports: each reference table has a unique (tenant_id, name). Every name of the run is
// inserted first with ON CONFLICT DO NOTHING, in name order (two imports lock names in the same order and cannot
// deadlock on them), and committed; then the batches only join. Imports never delete reference rows, so every name a
// batch looks up exists; should one have been deleted by someone else meanwhile, the statement counts it as
// `unresolved` and the caller creates the run's references again and retries the batch (never writing a row whose
// reference is missing).
import { createHash } from 'node:crypto';
import { sqlTypeOf, targetColumnOf, type ColumnSpec, type ImportProfile } from './profile.js';
import { valueColumn } from './staged-rows.js';

export interface ChunkStatement {
  /** A name for the prepared statement, derived from its text. */
  name: string;
  text: string;
  /** Takes the reference maps as parameters $5, $6 … */
  mappedReferences: boolean;
}

export interface ChunkResult {
  rows: number;
  unresolved: number;
  inserted: number;
  updated: number;
  /** Whole-batch statement only: the batch's recorded row count when this statement marked it, else null. */
  markedRowCount: number | null;
  /** Whole-batch statement only: staged rows deleted. */
  removed: number;
  /** Insert-only statement: some row's natural key exists already, so nothing was written (use the upsert). */
  present: boolean;
}

export interface ChunkStatementOptions {
  /** Also mark the batch written with its counts and delete its staged rows (whole batch only, $4 null). */
  marksBatch?: boolean;
  /**
   * A plain INSERT instead of the upsert, taken only when none of the rows' natural keys exists yet (else the
   * statement writes nothing and says `present`). A new row costs about half of what ON CONFLICT's speculative
   * insertion costs; a key another transaction commits meanwhile fails the statement with a unique violation, and
   * the caller runs the batch again with the upsert.
   */
  insertOnly?: boolean;
  /**
   * Reference ids come as parameters $5, $6 … (one JSON object { name: id } per reference column, in
   * referenceColumns() order) instead of a join per row: three index lookups per row were a third of the statement.
   * Each distinct id a batch uses is checked to still exist; a name or id that does not is `unresolved`.
   */
  mappedReferences?: boolean;
}

/** Reference columns of a layout: the staged position (1-based) and the table it names rows of. */
export function referenceColumns(columns: readonly ColumnSpec[]): Array<{ position: number; table: string }> {
  return columns.flatMap((column, index) => (column.reference ? [{ position: index + 1, table: column.reference.table }] : []));
}

/**
 * Creates, for one reference column, the names of a list (the one validation collected) that its table lacks.
 * Parameters: $1 tenant, $2 names. Returns one row per name created.
 */
export function buildReferenceListStatement(table: string): string {
  return `INSERT INTO ${table} AS r (tenant_id, name)
SELECT $1::text, name FROM unnest($2::text[]) AS name
ORDER BY name
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING r.id`;
}

/**
 * Creates, for one reference column, every name of the run's staged rows that its table lacks (when validation had
 * too many names to list). Parameters: $1 job id, $2 tenant. Returns one row per name created.
 */
export function buildReferenceStatement(position: number, table: string): string {
  const value = valueColumn(position);
  return `INSERT INTO ${table} AS r (tenant_id, name)
SELECT $2::text, name FROM (
  SELECT DISTINCT ${value} AS name FROM csv_import_staged_rows WHERE job_id = $1 AND ${value} IS NOT NULL
) AS names
ORDER BY name
ON CONFLICT (tenant_id, name) DO NOTHING
RETURNING r.id`;
}

/**
 * Parameters: $1 job id, $2 batch number, $3 tenant, $4 a single row number or null for the whole batch.
 * Result columns: rows, unresolved, inserted, updated, present (insertOnly), and with `marksBatch` marked_row_count
 * and removed: the statement also marks the batch written with its counts and deletes its staged rows, so a batch
 * costs one statement; the caller checks both and rolls back when either is off.
 */
export function buildChunkStatement(profile: ImportProfile, columns: readonly ColumnSpec[], options: ChunkStatementOptions = {}): ChunkStatement {
  const { marksBatch = false, insertOnly = false, mappedReferences = false } = options;
  const { target } = profile;
  const alias = (position: number) => `c${position}`;
  const staged = columns.map((_, index) => `s.${valueColumn(index + 1)} AS ${alias(index + 1)}`).join(', ');
  const references = referenceColumns(columns);
  const joins = mappedReferences
    ? ''
    : references
        .map(({ position, table }) => `\n  LEFT JOIN ${table} r${position} ON r${position}.tenant_id = $3 AND r${position}.name = s.${valueColumn(position)}`)
        .join('');
  const ids = references
    .map(({ position }, index) =>
      mappedReferences ? `, ($${5 + index}::jsonb ->> s.${valueColumn(position)})::bigint AS id_${position}` : `, r${position}.id AS id_${position}`,
    )
    .join('');
  const ctes: string[] = [
    `resolved AS (
  SELECT s.row_number, ${staged}${ids}
  FROM csv_import_staged_rows s${joins}
  WHERE s.job_id = $1 AND s.batch_number = $2 AND ($4::int IS NULL OR s.row_number = $4)
)`,
  ];

  const targetColumns: string[] = [target.tenantColumn];
  const selected: string[] = ['$3::text'];
  const dataColumns: string[] = [];
  columns.forEach((column, index) => {
    const position = index + 1;
    const name = targetColumnOf(column);
    targetColumns.push(name);
    dataColumns.push(name);
    selected.push(column.reference ? `id_${position}` : castOf(column, alias(position)));
  });
  if (target.jobColumn) {
    targetColumns.push(target.jobColumn);
    selected.push('$1::bigint');
  }
  const conflictColumns = [target.tenantColumn, ...target.naturalKey.map((key) => targetColumnOf(columns.find((column) => column.name === key)!))];
  const updatable = dataColumns.filter((name) => !conflictColumns.includes(name));
  const assignments = [
    ...updatable.map((name) => `${name} = excluded.${name}`),
    ...(target.jobColumn ? [`${target.jobColumn} = excluded.${target.jobColumn}`] : []),
    ...(target.updatedAtColumn ? [`${target.updatedAtColumn} = now()`] : []),
  ];
  // Rows whose values are all unchanged are left alone (no new row version, no updated_at bump): importing the same
  // file again writes nothing.
  const onConflict =
    updatable.length === 0
      ? 'DO NOTHING'
      : `DO UPDATE SET ${assignments.join(', ')}
  WHERE (${updatable.map((name) => `t.${name}`).join(', ')}) IS DISTINCT FROM (${updatable.map((name) => `excluded.${name}`).join(', ')})`;
  const keyColumns = target.naturalKey.map((key) => columns.findIndex((column) => column.name === key));
  const naturalOrder = keyColumns.map((index) => alias(index + 1)).join(', ');
  // In insert-only mode every write of the statement waits on this: nothing happens when a key exists.
  const whenNew = insertOnly ? ' AND NOT (SELECT found FROM present)' : '';
  if (insertOnly) {
    const keyMatch = keyColumns
      .map((index) => `t.${targetColumnOf(columns[index]!)} = ${castOf(columns[index]!, `s.${alias(index + 1)}`)}`)
      .join(' AND ');
    ctes.push(`present AS (
  SELECT EXISTS (SELECT 1 FROM resolved s JOIN ${target.table} t ON t.${target.tenantColumn} = $3 AND ${keyMatch}) AS found
)`);
    ctes.push(`written AS (
  INSERT INTO ${target.table} AS t (${targetColumns.join(', ')})
  SELECT ${selected.join(', ')} FROM resolved WHERE true${whenNew}
  ORDER BY ${naturalOrder}
  RETURNING true AS inserted
)`);
  } else {
    ctes.push(`written AS (
  INSERT INTO ${target.table} AS t (${targetColumns.join(', ')})
  SELECT ${selected.join(', ')} FROM resolved
  ORDER BY ${naturalOrder}
  ON CONFLICT (${conflictColumns.join(', ')}) ${onConflict}
  RETURNING (t.xmax = 0) AS inserted
)`);
  }
  const vanished = mappedReferences
    ? references
        .map(
          ({ position, table }) =>
            ` + (SELECT count(*) FROM (SELECT DISTINCT id_${position} AS id FROM resolved WHERE id_${position} IS NOT NULL) used
     WHERE NOT EXISTS (SELECT 1 FROM ${table} r WHERE r.id = used.id))::int`,
        )
        .join('')
    : '';
  const unresolved =
    references.length === 0
      ? '0'
      : `(SELECT count(*) FROM resolved WHERE ${references
          .map(({ position }) => `(${alias(position)} IS NOT NULL AND id_${position} IS NULL)`)
          .join(' OR ')})::int${vanished}`;
  if (marksBatch) {
    // Every CTE sees the same snapshot: `resolved` still reads the rows `removed` deletes.
    ctes.push(
      `marked AS (
  UPDATE csv_import_batches b SET finalized_at = now(),
    rows_inserted = (SELECT count(*) FROM written WHERE inserted),
    rows_updated = (SELECT count(*) FROM written WHERE NOT inserted),
    rows_unchanged = (SELECT count(*) FROM resolved) - (SELECT count(*) FROM written)
  WHERE b.job_id = $1 AND b.batch_number = $2 AND b.finalized_at IS NULL AND $4::int IS NULL${whenNew}
  RETURNING b.row_count
)`,
      `removed AS (
  DELETE FROM csv_import_staged_rows WHERE job_id = $1 AND batch_number = $2 AND $4::int IS NULL${whenNew}
  RETURNING 1
)`,
    );
  }
  const batchColumns = marksBatch
    ? `,\n  (SELECT row_count FROM marked) AS marked_row_count,\n  (SELECT count(*) FROM removed)::int AS removed`
    : '';
  const text = `WITH ${ctes.join(',\n')}
SELECT (SELECT count(*) FROM resolved)::int AS rows,
  ${unresolved} AS unresolved,
  (SELECT count(*) FROM written WHERE inserted)::int AS inserted,
  (SELECT count(*) FROM written WHERE NOT inserted)::int AS updated${insertOnly ? ',\n  (SELECT found FROM present) AS present' : ''}${batchColumns}`;
  return {
    name: `csv-chunk-${createHash('sha1').update(text).digest('hex').slice(0, 16)}`,
    text,
    mappedReferences,
  };
}

function castOf(column: ColumnSpec, value: string): string {
  const type = sqlTypeOf(column);
  return type === 'text' ? value : `${value}::${type}`;
}

export function toChunkResult(row: Record<string, unknown>): ChunkResult {
  const count = (name: string) => Number(row[name] ?? 0);
  const marked = row.marked_row_count;
  return {
    rows: count('rows'),
    unresolved: count('unresolved'),
    inserted: count('inserted'),
    updated: count('updated'),
    markedRowCount: marked === null || marked === undefined ? null : Number(marked),
    removed: count('removed'),
    present: row.present === true,
  };
}
