// What a backfill is: a table, the rows that lack a derived field, how to compute the field from a row and how to
// write it. A definition is data plus small SQL builders; the engine (batches.ts) turns it into statements.

/** SQL that refers to one row of the table through the alias it is given, e.g. `${row}.original_path`. */
export type RowSql = (row: string) => string;

/** The compute as one SQL expression over the row: a batch is then one UPDATE statement (the fast path). */
export interface SqlCompute {
  language: 'sql';
  /** An expression over the current row version, e.g. row => `lower(${row}.name)`. Must never make a row "missing" again. */
  expression: RowSql;
}

/**
 * The compute as a TypeScript function: a batch reads the rows (key + source columns), computes in the worker and
 * writes the values back with one UPDATE … FROM unnest(…). Slower than SQL (every row travels twice), for logic
 * that SQL cannot express.
 */
export interface TypeScriptCompute {
  language: 'typescript';
  /** Postgres type of the computed value, used to cast the array of values: `text`, `integer`, `jsonb` … */
  valueType: string;
  /** Gets the row's key and source columns (as node-postgres returns them). Throw to refuse a row: the job fails, naming it. */
  compute(row: Record<string, unknown>): unknown;
}

export interface BackfillDefinition {
  /** How operators name it in payloads and on the CLI: lowercase words joined by hyphens. */
  name: string;
  description: string;
  table: string;
  /** A unique, non-null, orderable column the walk is keyed on (keyset order), and its Postgres type. */
  key: { column: string; type: 'bigint' | 'integer' | 'text' | 'uuid' };
  /** Column that carries the tenant, for payloads with a tenant filter; undefined means the table has none. */
  tenantColumn?: string;
  /** The column being filled (used by the default `missing`/`write`, and shown by `backfill list`). */
  targetColumn: string;
  /**
   * Columns the compute reads. The optimistic check compares them with the values read: a row whose source changed
   * between the read and the write is left alone and retried in a later batch.
   */
  sourceColumns: string[];
  /** The rows that lack the field. Default: `${row}.<targetColumn> IS NULL`. */
  missing?: RowSql;
  /** Assignments of the UPDATE, given the SQL of the computed value. Default: `<targetColumn> = value`. */
  write?: (value: string) => string;
  compute: SqlCompute | TypeScriptCompute;
  /** Rows per batch (one transaction each) when the payload gives none. */
  defaultBatchSize?: number;
  /** Key ranges walked at once when the payload gives none (numeric keys only). Default 2. */
  defaultParallelism?: number;
}
