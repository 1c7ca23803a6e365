// The statements finalize writes a profile's target with, built once per run from the profile and the columns the
// file has. A batch of new rows goes in with COPY (the cheapest way into Postgres, cheaper than an
// INSERT … SELECT FROM unnest of the same rows); a batch in which some natural key exists already is upserted with one
// INSERT … ON CONFLICT statement over arrays. Values are the validator's normalised text (reference columns: the id);
// the database casts them.
//
// References (categories, suppliers …) are resolved to ids by the worker (reference-ids.ts): created with
// INSERT … ON CONFLICT DO NOTHING in name order, committed at once, then looked up. The target has no foreign keys
// to them (see the products migration), so a batch checks, inside its transaction, that every id it uses still exists.
import { createHash } from 'node:crypto';
import { copyText } from '../../db/copy-from.js';
import { sqlTypeOf, targetColumnOf, type ColumnSpec, type ImportProfile } from './profile.js';

export interface NamedStatement {
  /** A name for the prepared statement, derived from its text. */
  name: string;
  text: string;
}

export interface TargetStatements {
  /** COPY of whole rows: see {@link TargetStatements.copyLine}. */
  copySql: string;
  /** One line of COPY text: tenant, the row's values in layout order, the job id. */
  copyLine(values: ReadonlyArray<string | null>): string;
  /**
   * Upsert on the natural key. Parameters: $1 tenant, $2 job id, then one text[] per layout column. One result row
   * per row written: `inserted` true for a new row, false for a changed one; unchanged rows return nothing.
   */
  upsert: NamedStatement;
  /** Whether any of the keys exists. Parameters: $1 tenant, then one text[] per natural key column. */
  anyKeyExists: NamedStatement;
  /** Positions (in layout order) of the natural key's columns. */
  keyPositions: number[];
}

/** Reference columns of a layout: their position (0-based, layout order) and the table they name rows of. */
export function referenceColumns(columns: readonly ColumnSpec[]): Array<{ position: number; table: string }> {
  return columns.flatMap((column, index) => (column.reference ? [{ position: index, table: column.reference.table }] : []));
}

function named(text: string): NamedStatement {
  return { name: `csv-${createHash('sha1').update(text).digest('hex').slice(0, 16)}`, text };
}

/** The SQL type a column's text is cast to: a reference holds an id. */
function castOf(column: ColumnSpec, value: string): string {
  const type = column.reference ? 'bigint' : sqlTypeOf(column);
  return type === 'text' ? value : `${value}::${type}`;
}

export function buildTargetStatements(profile: ImportProfile, columns: readonly ColumnSpec[], tenant: string, jobId: number): TargetStatements {
  const { target } = profile;
  const dataColumns = columns.map(targetColumnOf);
  const targetColumns = [target.tenantColumn, ...dataColumns, ...(target.jobColumn ? [target.jobColumn] : [])];
  const keyPositions = target.naturalKey.map((key) => columns.findIndex((column) => column.name === key));
  const conflictColumns = [target.tenantColumn, ...keyPositions.map((position) => dataColumns[position]!)];

  const linePrefix = `${copyText(tenant)}\t`;
  const lineSuffix = target.jobColumn ? `\t${jobId}\n` : '\n';
  const copyLine = (values: ReadonlyArray<string | null>): string => {
    let line = linePrefix + copyText(values[0] ?? null);
    for (let index = 1; index < values.length; index++) line += `\t${copyText(values[index] ?? null)}`;
    return line + lineSuffix;
  };

  const alias = (position: number) => `u.c${position + 1}`;
  const arrays = columns.map((_, position) => `$${position + 3}::text[]`).join(', ');
  const aliases = columns.map((_, position) => `c${position + 1}`).join(', ');
  const selected = ['$1::text', ...columns.map((column, position) => castOf(column, alias(position))), ...(target.jobColumn ? ['$2::bigint'] : [])];
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
  // Rows go in natural-key order, so two imports upserting the same keys lock them in the same order.
  const upsert = named(`INSERT INTO ${target.table} AS t (${targetColumns.join(', ')})
SELECT ${selected.join(', ')}
FROM unnest(${arrays}) AS u(${aliases})
ORDER BY ${keyPositions.map((position) => castOf(columns[position]!, alias(position))).join(', ')}
ON CONFLICT (${conflictColumns.join(', ')}) ${onConflict}
RETURNING (t.xmax = 0) AS inserted`);

  const keyArrays = keyPositions.map((_, index) => `$${index + 2}::text[]`).join(', ');
  const keyAliases = keyPositions.map((position) => `c${position + 1}`).join(', ');
  const keyMatch = keyPositions.map((position) => `t.${dataColumns[position]} = ${castOf(columns[position]!, alias(position))}`).join(' AND ');
  const anyKeyExists = named(`SELECT EXISTS (
  SELECT 1 FROM unnest(${keyArrays}) AS u(${keyAliases})
  JOIN ${target.table} t ON t.${target.tenantColumn} = $1 AND ${keyMatch}
) AS found`);

  return {
    copySql: `COPY ${target.table} (${targetColumns.join(', ')}) FROM STDIN`,
    copyLine,
    upsert,
    anyKeyExists,
    keyPositions,
  };
}

/** How many rows have been deleted from a reference table so far (reference_deletions, see its migration). */
function deletionsOf(table: string): string {
  return `coalesce((SELECT deletions FROM reference_deletions WHERE table_name = '${table}'), 0)`;
}

/**
 * Creates the names a reference table lacks, in name order (two imports creating the same names lock them in the same
 * order: no deadlock), adds how many it created to the run's tally, and says how many deletions the table has seen
 * (read before the names are looked up: ids cached from then on are valid as long as that count stays).
 * Parameters: $1 tenant, $2 names, $3 job id.
 */
export function buildCreateReferencesStatement(table: string): NamedStatement {
  return named(`WITH created AS (
  INSERT INTO ${table} AS r (tenant_id, name)
  SELECT $1::text, name FROM unnest($2::text[]) AS name ORDER BY name
  ON CONFLICT (tenant_id, name) DO NOTHING
  RETURNING 1
), tally AS (
  UPDATE csv_import_runs
  SET references_created = references_created || jsonb_build_object('${table}', coalesce((references_created ->> '${table}')::int, 0) + (SELECT count(*) FROM created))
  WHERE job_id = $3 AND EXISTS (SELECT 1 FROM created)
)
SELECT (SELECT count(*) FROM created)::int AS created, ${deletionsOf(table)}::text AS deletions`);
}

/** The ids of names. Parameters: $1 tenant, $2 names. */
export function buildLookupReferencesStatement(table: string): NamedStatement {
  return named(`SELECT name, id::text AS id FROM ${table} WHERE tenant_id = $1 AND name = ANY($2::text[])`);
}

/**
 * The checks that open every batch transaction, as one prepared statement (PREPARE … AS, planned once per connection
 * and run with EXECUTE inside the batch's script). Parameters: $1 batch number, $2…$5 the counts to mark it with
 * (markBatchPreparedSql), then per reference table the deletion count its cached ids are valid for, or null when the
 * batch uses none of its ids. Fails with bulk_import_check when the lease is lost, when a reference table has seen a
 * deletion since its ids were cached (a cached id may be gone), or when the batch was marked already. Nothing else is
 * locked: a reference deleted after the check, while the batch commits, is the deleting backend's to handle, as
 * without the importer (docs/ARCHITECTURE.md "csv-import").
 */
export function buildOpenBatchStatement(name: string, leaseHeldCondition: string, markSql: string, referenceTables: readonly string[]): string {
  const types = ['int', 'int', 'int', 'int', 'int', ...referenceTables.map(() => 'bigint')];
  const references = referenceTables.map(
    (table, index) => `bulk_import_check($${index + 6}::bigint IS NULL OR ${deletionsOf(table)} = $${index + 6}, 'reference:${table}')`,
  );
  return `PREPARE ${name}(${types.join(', ')}) AS
WITH marked AS (${markSql} RETURNING 1)
SELECT ${[`bulk_import_check(${leaseHeldCondition}, 'lease')`, ...references, `bulk_import_check((SELECT count(*) FROM marked) = 1, 'batch-unmarked')`].join(',\n  ')}`;
}
