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
