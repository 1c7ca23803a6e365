// Builds, from a profile and the columns a file has, the one statement that writes a staged batch: read the batch's
// rows, resolve every reference to its id (creating the missing ones), and upsert the rows on the natural key. One
// statement per batch (not per row) keeps the database doing set work; it runs as a prepared statement.
//
// References and concurrent imports: each reference table has a unique (tenant_id, name). The worker keeps a cache
// of names it knows to exist (reference-cache.ts) and passes it to the statement, one JSON object per reference
// table; only the batch's names missing from it are looked for. Those are inserted with ON CONFLICT DO NOTHING (in
// name order, so two imports lock names in the same order and cannot deadlock on them), and their ids are taken
// from what the insert returned plus what the statement's snapshot already sees. A name committed by another import
// after that snapshot was taken is in neither: the statement reports it as `unresolved`, and the caller rolls back
// and runs the batch again with a fresh snapshot, which sees it. The ids learned come back in `learned_<n>`, and the
// caller adds them to its cache only once the batch has committed, so a rolled-back insert never enters the cache.
import { createHash } from 'node:crypto';
import { sqlTypeOf, targetColumnOf, type ColumnSpec, type ImportProfile } from './profile.js';

export interface ChunkStatement {
  /** A name for the prepared statement, derived from its text. */
  name: string;
  text: string;
  /** Reference tables, in the order of their `created_<n>` result columns. */
  referenceTables: string[];
}

export interface ChunkResult {
  rows: number;
  unresolved: number;
  inserted: number;
  updated: number;
  created: Record<string, number>;
  /** Per reference table: ids of names the batch needed and the cache did not know. */
  learned: Record<string, Record<string, number>>;
}

/**
 * Parameters: $1 job id, $2 batch number, $3 tenant, $4 a single row number or null for the whole batch, then one
 * JSON object { name: id } of known names per reference table (in `referenceTables` order).
 * Result columns: rows, unresolved, inserted, updated, then created_<n> (count) and learned_<n> ({ name: id }) per
 * reference table.
 */
export function buildChunkStatement(profile: ImportProfile, columns: readonly ColumnSpec[]): ChunkStatement {
  const { target } = profile;
  const alias = (position: number) => `c${position}`;
  const staged = columns.map((column, index) => `e ->> ${index + 1} AS ${alias(index + 1)}`).join(', ');
  const ctes: string[] = [
    `staged AS (
  SELECT (e ->> 0)::int AS row_number, ${staged}
  FROM csv_import_staged_batches b CROSS JOIN LATERAL jsonb_array_elements(b.rows) AS e
  WHERE b.job_id = $1 AND b.batch_number = $2 AND ($4::int IS NULL OR (e ->> 0)::int = $4)
)`,
  ];
  const references: Array<{ position: number; table: string; known: string }> = [];
  columns.forEach((column, index) => {
    if (!column.reference) return;
    const position = index + 1;
    const value = alias(position);
    const table = column.reference.table;
    const known = `$${5 + references.length}::jsonb`;
    references.push({ position, table, known });
    ctes.push(
      `missing_${position} AS (
  SELECT DISTINCT ${value} AS name FROM staged WHERE ${value} IS NOT NULL AND NOT (${known} ? ${value})
)`,
      `new_ref_${position} AS (
  INSERT INTO ${table} AS r (tenant_id, name)
  SELECT $3::text, name FROM missing_${position} ORDER BY name
  ON CONFLICT (tenant_id, name) DO NOTHING
  RETURNING r.id, r.name
)`,
      // name → id as one JSON object, looked up per row: no join whose plan depends on estimates of CTE rows.
      `learned_${position} AS MATERIALIZED (
  SELECT coalesce(jsonb_object_agg(found.name, found.id), '{}'::jsonb) AS ids FROM (
    SELECT id, name FROM new_ref_${position}
    UNION ALL
    SELECT r.id, r.name FROM ${table} r WHERE r.tenant_id = $3 AND r.name IN (SELECT name FROM missing_${position})
  ) AS found
)`,
    );
  });
  const resolvedIds = references
    .map(
      ({ position, known }) =>
        `,\n    coalesce(${known} ->> s.${alias(position)}, (SELECT ids FROM learned_${position}) ->> s.${alias(position)})::bigint AS id_${position}`,
    )
    .join('');
  ctes.push(`resolved AS (
  SELECT s.*${resolvedIds}
  FROM staged s
)`);

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
  const naturalOrder = target.naturalKey.map((key) => alias(columns.findIndex((column) => column.name === key) + 1)).join(', ');
  ctes.push(`written AS (
  INSERT INTO ${target.table} AS t (${targetColumns.join(', ')})
  SELECT ${selected.join(', ')} FROM resolved
  ORDER BY ${naturalOrder}
  ON CONFLICT (${conflictColumns.join(', ')}) ${onConflict}
  RETURNING (t.xmax = 0) AS inserted
)`);
  const unresolved =
    references.length === 0
      ? '0'
      : `(SELECT count(*) FROM resolved WHERE ${references
          .map(({ position }) => `(${alias(position)} IS NOT NULL AND id_${position} IS NULL)`)
          .join(' OR ')})::int`;
  const created = references
    .map(
      ({ position }, index) =>
        `,\n  (SELECT count(*) FROM new_ref_${position})::int AS created_${index + 1},\n  (SELECT ids FROM learned_${position}) AS learned_${index + 1}`,
    )
    .join('');
  const text = `WITH ${ctes.join(',\n')}
SELECT (SELECT count(*) FROM staged)::int AS rows,
  ${unresolved} AS unresolved,
  (SELECT count(*) FROM written WHERE inserted)::int AS inserted,
  (SELECT count(*) FROM written WHERE NOT inserted)::int AS updated${created}`;
  return {
    name: `csv-chunk-${createHash('sha1').update(text).digest('hex').slice(0, 16)}`,
    text,
    referenceTables: references.map(({ table }) => table),
  };
}

function castOf(column: ColumnSpec, value: string): string {
  const type = sqlTypeOf(column);
  return type === 'text' ? value : `${value}::${type}`;
}

export function toChunkResult(statement: ChunkStatement, row: Record<string, unknown>): ChunkResult {
  const created: Record<string, number> = {};
  const learned: Record<string, Record<string, number>> = {};
  statement.referenceTables.forEach((table, index) => {
    const count = Number(row[`created_${index + 1}`] ?? 0);
    if (count > 0) created[table] = (created[table] ?? 0) + count;
    learned[table] = (row[`learned_${index + 1}`] as Record<string, number> | null) ?? {};
  });
  const count = (name: string) => Number(row[name] ?? 0);
  return { rows: count('rows'), unresolved: count('unresolved'), inserted: count('inserted'), updated: count('updated'), created, learned };
}
