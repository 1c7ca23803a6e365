// Checks a backfill definition once and turns its names into quoted SQL fragments, so the statement builders never
// paste an unchecked identifier into SQL. Definitions are code, not user input; the checks catch typos early.
import type { BackfillDefinition, RowSql } from './types.js';

export const BACKFILL_NAME = /^[a-z0-9][a-z0-9-]{0,62}$/;
const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;
const SQL_TYPE = /^[a-z][a-z0-9_ ]*(\(\d+(,\s*\d+)?\))?(\[\])?$/;

export class InvalidBackfillDefinitionError extends Error {
  constructor(name: string, problem: string) {
    super(`backfill definition "${name}": ${problem}`);
    this.name = 'InvalidBackfillDefinitionError';
  }
}

/** A definition with every name checked and quoted. Row aliases in the statements are plain words (t, b). */
export interface CompiledBackfill {
  definition: BackfillDefinition;
  /** Quoted, possibly schema-qualified table name. */
  table: string;
  key: string;
  keyType: BackfillDefinition['key']['type'];
  tenant: string | undefined;
  target: string;
  /** Quoted source columns, in definition order. */
  sources: string[];
  missing: RowSql;
  write: (value: string) => string;
  batchSize: number;
  parallelism: number;
}

// Rows per batch transaction by default: large enough to amortise the round trips, short enough that writers wait
// little on the rows a batch locks (bench/backfill.ts compares sizes).
export const DEFAULT_BATCH_SIZE = 5_000;
export const MAX_BATCH_SIZE = 100_000;
// The statement timeout of a batch's statements by default (payload `batchTimeoutMs`): well past a batch's usual
// fraction of a second, so only a batch that has gone wrong meets it, and past the batch's 10 s lock_timeout, so a
// lock wait is told apart (tried again as it is) from a batch too big for the table (tried again with half the rows).
export const DEFAULT_BATCH_TIMEOUT_MS = 30_000;
export const MIN_BATCH_TIMEOUT_MS = 100;
export const MAX_BATCH_TIMEOUT_MS = 3_600_000;
// Two streams use both cores of a small database server for a run that is mostly the database's work; operators
// lower it to 1 on a busy primary (payload `parallelism`).
export const DEFAULT_PARALLELISM = 2;
export const MAX_PARALLELISM = 16;

export function quoteIdentifier(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function compileBackfill(definition: BackfillDefinition): CompiledBackfill {
  const fail = (problem: string): never => {
    throw new InvalidBackfillDefinitionError(definition.name, problem);
  };
  if (!BACKFILL_NAME.test(definition.name)) fail('the name must be lowercase letters, digits and hyphens');
  const identifier = (value: string, what: string): string => {
    if (!IDENTIFIER.test(value)) fail(`${what} ${JSON.stringify(value)} is not a plain SQL identifier`);
    return quoteIdentifier(value);
  };
  const tableParts = definition.table.split('.');
  if (tableParts.length > 2) fail(`table ${JSON.stringify(definition.table)} must be "table" or "schema.table"`);
  const table = tableParts.map((part) => identifier(part, 'table')).join('.');
  const key = identifier(definition.key.column, 'key column');
  const target = identifier(definition.targetColumn, 'target column');
  if (definition.sourceColumns.length === 0) fail('sourceColumns must name the columns the compute reads');
  const sources = definition.sourceColumns.map((column) => identifier(column, 'source column'));
  if (definition.sourceColumns.includes(definition.targetColumn)) fail('the target column cannot also be a source column');
  const tenant = definition.tenantColumn === undefined ? undefined : identifier(definition.tenantColumn, 'tenant column');
  if (definition.compute.language === 'typescript' && !SQL_TYPE.test(definition.compute.valueType)) {
    fail(`valueType ${JSON.stringify(definition.compute.valueType)} is not a Postgres type name`);
  }
  const batchSize = definition.defaultBatchSize ?? DEFAULT_BATCH_SIZE;
  if (!Number.isSafeInteger(batchSize) || batchSize < 1 || batchSize > MAX_BATCH_SIZE) {
    fail(`defaultBatchSize must be a whole number from 1 to ${MAX_BATCH_SIZE}`);
  }
  const parallelism = definition.defaultParallelism ?? DEFAULT_PARALLELISM;
  if (!Number.isSafeInteger(parallelism) || parallelism < 1 || parallelism > MAX_PARALLELISM) {
    fail(`defaultParallelism must be a whole number from 1 to ${MAX_PARALLELISM}`);
  }
  return {
    definition,
    table,
    key,
    keyType: definition.key.type,
    tenant,
    target,
    sources,
    missing: definition.missing ?? ((row) => `${row}.${target} IS NULL`),
    write: definition.write ?? ((value) => `${target} = ${value}`),
    batchSize,
    parallelism,
  };
}
