// How a failed backfill statement reaches the operator: bad definitions and data are permanent errors that name the
// backfill, the table and where the walk was; connection trouble stays transient (the attempt resumes from the
// saved cursor).
import { sqlState } from '../db/sql-state.js';
import { classifyError, PermanentJobError } from '../queue/errors.js';
import type { CompiledBackfill } from './compile.js';
import { ComputeFailedError } from './statements.js';

// Undefined table, column or function: the migration that the backfill needs is not applied.
const SCHEMA_MISSING = new Set(['42P01', '42703', '42883']);

/** Lock waits that outlast the batch's lock_timeout, deadlocks, serialization failures: retry the same batch. */
export const RETRYABLE_BATCH_SQLSTATES = new Set(['40001', '40P01', '55P03']);

export function describeBackfillError(error: unknown, backfill: CompiledBackfill, where: Record<string, unknown>): unknown {
  const name = backfill.definition.name;
  const table = backfill.definition.table;
  if (error instanceof ComputeFailedError) {
    return new PermanentJobError(`backfill ${name}: ${error.message}`, 'BACKFILL_COMPUTE_FAILED', { backfill: name, table, key: error.key }, { cause: error, internal: true });
  }
  const code = sqlState(error);
  if (code === undefined || classifyError(error).errorClass !== 'permanent') return error;
  const hint = SCHEMA_MISSING.has(code) ? ' (is the migration it needs applied? `bulk-import migrate`)' : '';
  return new PermanentJobError(
    `backfill ${name} on ${table} failed: ${(error as Error).message}${hint}`,
    'BACKFILL_STATEMENT_FAILED',
    { backfill: name, table, sqlstate: code, ...where },
    // Postgres's own message (a table, a constraint, a value): for operators.
    { cause: error, internal: true },
  );
}

/** A statement ended by statement_timeout (or by a cancel request: the caller tells its own cancel apart). */
export function isStatementTimeout(error: unknown): boolean {
  return sqlState(error) === '57014';
}

/**
 * A batch of one row outlasted the statement timeout on every try: the row cannot be written within it (a trigger, a
 * lock held elsewhere that lock_timeout did not catch, a timeout set too short). Permanent: the run fails naming the
 * row's place; the rows before it stay written, and a new run starts from the rows still missing.
 */
export function batchTimeoutError(backfill: CompiledBackfill, timeoutMs: number, tries: number, where: Record<string, unknown>, cause: unknown): PermanentJobError {
  const name = backfill.definition.name;
  const table = backfill.definition.table;
  return new PermanentJobError(
    `backfill ${name} on ${table}: a batch of one row outlasted the batch timeout of ${timeoutMs} ms ${tries} times; ` +
      'look for a trigger or a lock on that row, or raise the payload\'s batchTimeoutMs',
    'BACKFILL_BATCH_TIMEOUT',
    { backfill: name, table, batchTimeoutMs: timeoutMs, tries, ...where },
    { cause },
  );
}
