// Writes one batch of a finalize: the rows of a range of lines, in one transaction that checks the lease, checks that
// no reference table whose cached ids it uses has seen a deletion, marks the batch written, writes the rows and
// records the rows that could not be written. A crash leaves a batch either written and marked, or not written at all;
// the rerun writes exactly the unmarked batches.
// Round trips are what a batch costs beyond its rows (each one is a socket write and a wait on both sides, about as
// much as the COPY of the rows on this machine class): the usual batch (new keys, nothing refused) is one round trip,
// BEGIN, the checks, the mark, the COPY with its data and COMMIT sent together (copy-from.ts runScriptWithCopyData);
// a failed check fails its statement and with it the rest. The other paths open the transaction with the checks and
// the mark in one round trip, write, and commit together with a correction of the mark's counts.
//
// How the rows go in: with COPY when none of their keys exists (the usual case of a big import: after a few batches
// that found no key, the check is skipped and a unique violation sends the batch down the upsert path instead), with
// one upsert statement otherwise. A batch the database refuses as a whole (a constraint the validation does not know)
// is written row by row under savepoints: the refused rows become row errors of phase 'finalize'.
import { runScriptWithCopyData } from '../../db/copy-from.js';
import type { PoolClient } from '../../db/pool.js';
import { sqlState, tenantVisibleDetail } from '../../db/sql-state.js';
import type { Logger } from '../../logger.js';
import { PermanentJobError, TransientJobError } from '../../queue/errors.js';
import { LeaseLostError } from '../../queue/lease.js';
import type { HeaderLayout } from './header.js';
import { isDataError, type ReferenceIds, type ResolvedRows } from './reference-ids.js';
import { insertRowErrors, type RowError } from './row-errors.js';
import { correctBatchCountsSql, markBatchPreparedSql, type ChunkCounts } from './run-record.js';
import { buildOpenBatchStatement, type TargetStatements } from './target-sql.js';

/**
 * A valid row of the file: its line, its values (validator's normalised text, layout order) and its fields as read,
 * or null when they are the values as they stand (most rows: not kept twice).
 */
export interface BatchRow {
  row: number;
  values: Array<string | null>;
  fields: string[] | null;
}

/** A row's fields as the file had them (header order). */
function fieldsOf(row: BatchRow, layout: HeaderLayout): string[] {
  if (row.fields) return row.fields;
  const fields = new Array<string>(layout.header.length).fill('');
  layout.fieldIndex.forEach((fieldIndex, column) => {
    fields[fieldIndex] = row.values[column] ?? '';
  });
  return fields;
}

export interface Batch {
  batchNumber: number;
  rows: BatchRow[];
  /** Rows of the batch that no longer pass the profile's checks (the profile changed since validation). */
  invalid: RowError[];
  /** What the batch holds in memory, in characters (fieldsWeight of its rows, twice for a row kept with its fields). */
  chars: number;
}

export interface BatchWriterDeps {
  jobId: number;
  tenant: string;
  statements: TargetStatements;
  layout: HeaderLayout;
  references: ReferenceIds;
  log: Logger;
  /** SQL: true while this worker holds the job's lease (and then locks the job row). */
  leaseHeldCondition: string;
}

/** Retries of one batch when it deadlocked with another import, or a reference it names was deleted meanwhile. */
const BATCH_TRIES = 8;
const RETRYABLE = new Set(['40001', '40P01']);
const UNIQUE_VIOLATION = '23505';
/** Batches in a row that found none of their keys before the check is skipped (COPY straight away). */
const NEW_KEY_STREAK = 4;

/** The rows, not the system, are at fault: data exceptions, integrity violations, a key twice in one upsert (21000). */
function isRowDataError(error: unknown): boolean {
  return isDataError(error) || sqlState(error) === '21000';
}

class ReferenceMissingError extends Error {
  constructor(readonly tables: string[]) {
    super(`rows deleted meanwhile from ${tables.join(', ')}`);
  }
}

type Mode = 'bulk' | 'upsert' | 'row-by-row';

let writersCreated = 0;

export class BatchWriter {
  private newKeyStreak = 0;
  /** The opening checks as a prepared statement (see openingStatements), and the connections it is prepared on. */
  private readonly openBatch: { name: string; prepare: string; tables: string[] };
  private readonly preparedOn = new WeakSet<PoolClient>();

  constructor(private readonly deps: BatchWriterDeps) {
    const tables = deps.references.tableNames();
    // Prepared statements live as long as their connection: a name of its own per writer, dropped by release().
    const name = `csv_open_batch_${(writersCreated += 1)}`;
    this.openBatch = { name, prepare: buildOpenBatchStatement(name, deps.leaseHeldCondition, markBatchPreparedSql(deps.jobId), tables), tables };
  }

  /**
   * Drops the prepared statement from a connection: before it goes back to the pool, and after a failed batch (whether
   * a PREPARE sent with it took effect is then unknown; the next batch prepares again).
   */
  async release(client: PoolClient): Promise<void> {
    if (!this.preparedOn.has(client)) return;
    this.preparedOn.delete(client);
    await client.query(`DEALLOCATE ${this.openBatch.name}`).catch(() => {});
  }

  async write(client: PoolClient, batch: Batch): Promise<ChunkCounts> {
    const { jobId, log } = this.deps;
    const { batchNumber } = batch;
    let mode: Mode = 'bulk';
    const retries = { contention: 0, referenceMissing: 0 };
    for (let attempt = 1; attempt <= BATCH_TRIES; attempt++) {
      const resolved = await this.deps.references.resolve(
        client,
        batch.rows.map((row) => row.values),
      );
      const rows: Array<{ row: BatchRow; values: Array<string | null> }> = [];
      const failures: RowError[] = [...batch.invalid];
      batch.rows.forEach((row, index) => {
        const values = resolved.values[index];
        if (values) rows.push({ row, values });
        else failures.push({ row: row.row, fields: fieldsOf(row, this.deps.layout), issues: [resolved.refused.get(index)!] });
      });
      try {
        const expected: ChunkCounts = { inserted: rows.length, updated: 0, unchanged: 0, failed: failures.length };
        const copy = mode === 'bulk' && !(await this.someKeyExists(client, rows));
        if (copy && failures.length === 0) return await this.copyInOneRoundTrip(client, batchNumber, resolved.used, rows, expected);
        return await this.inBatchTransaction(client, batchNumber, resolved.used, expected, async () => {
          let counts: ChunkCounts;
          if (mode === 'row-by-row') counts = await this.writeRowByRow(client, rows, failures);
          else if (copy) counts = await this.copyRows(client, rows);
          else counts = await this.upsertRows(client, rows);
          counts.failed = failures.length;
          if (failures.length > 0) {
            failures.sort((a, b) => a.row - b.row);
            await insertRowErrors(client, jobId, 'finalize', failures);
            log.warn({ batch: batchNumber, failed_rows: failures.map((failure) => failure.row) }, 'rows not written');
          }
          return counts;
        });
      } catch (error) {
        if (error instanceof ReferenceMissingError) {
          retries.referenceMissing += 1;
          log.warn({ batch: batchNumber, attempt, tables: error.tables }, 'a reference table the batch uses had rows deleted meanwhile; looking its names up again');
          this.deps.references.forget(error.tables);
          continue;
        }
        if (RETRYABLE.has(sqlState(error) ?? '')) {
          retries.contention += 1;
          log.debug({ batch: batchNumber, attempt, code: sqlState(error) }, 'batch deadlocked with another import; retrying');
          continue;
        }
        if (mode === 'bulk' && sqlState(error) === UNIQUE_VIOLATION) {
          // A key that exists (committed by another import, or skipped check): upsert the batch instead.
          log.debug({ batch: batchNumber }, 'a key of the batch exists; upserting the batch');
          this.newKeyStreak = 0;
          mode = 'upsert';
          attempt -= 1;
          continue;
        }
        if (mode !== 'row-by-row' && isRowDataError(error)) {
          log.warn({ batch: batchNumber, err: error }, 'the database refused the batch; writing it row by row');
          mode = 'row-by-row';
          attempt -= 1;
          continue;
        }
        throw error;
      }
    }
    const cause =
      retries.referenceMissing >= retries.contention
        ? `a reference it names kept disappearing (deleted by someone else ${retries.referenceMissing} times)`
        : `it kept deadlocking or conflicting with other transactions (${retries.contention} times)`;
    throw new TransientJobError(`finalize of job ${jobId}: batch ${batchNumber} was not written: ${cause}; will retry`, 'CSV_FINALIZE_CONTENTION', {
      batch: batchNumber,
      ...retries,
    });
  }

  /**
   * BEGIN, then the checks every batch transaction starts with, in one prepared statement (prepared on the first batch
   * of each connection): the lease (and the lock on the job row), no deletion from the reference tables whose cached
   * ids the rows use, and the batch's mark with the counts `expected` (a batch marked already fails it). A check that
   * does not hold fails the statement (bulk_import_check). Planning those statements for every batch cost a tenth of
   * finalize's database time.
   */
  private openingStatements(client: PoolClient, batchNumber: number, used: ResolvedRows['used'], expected: ChunkCounts): string[] {
    const int = (value: number) => String(Math.trunc(Number(value)));
    const deletions = this.openBatch.tables.map((table) => {
      const count = used.find((entry) => entry.table === table)?.deletions;
      if (count === undefined) return 'NULL';
      if (!/^\d{1,19}$/.test(count)) throw new Error(`not a count: ${JSON.stringify(count)}`);
      return count;
    });
    const args = [batchNumber, expected.inserted, expected.updated, expected.unchanged, expected.failed].map(int);
    const statements = ['BEGIN', 'SET LOCAL synchronous_commit TO off', `EXECUTE ${this.openBatch.name}(${[...args, ...deletions].join(', ')})`];
    if (!this.preparedOn.has(client)) {
      this.preparedOn.add(client);
      statements.unshift(this.openBatch.prepare);
    }
    return statements;
  }

  /** The usual batch in one round trip: opening statements, COPY of the rows, COMMIT. */
  private async copyInOneRoundTrip(
    client: PoolClient,
    batchNumber: number,
    used: ResolvedRows['used'],
    rows: ReadonlyArray<{ values: Array<string | null> }>,
    expected: ChunkCounts,
  ): Promise<ChunkCounts> {
    const { copySql, copyLine } = this.deps.statements;
    const script = [...this.openingStatements(client, batchNumber, used, expected), copySql, 'COMMIT'].join(';\n');
    try {
      await runScriptWithCopyData(client, script, rows.map((row) => copyLine(row.values)));
      return expected;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      await this.release(client);
      throw this.checkFailure(error, batchNumber);
    }
  }

  /**
   * Runs `write` in the batch's transaction, opened by the opening statements in one round trip; commits, correcting
   * the counts of the mark when `write` returns others.
   */
  private async inBatchTransaction(
    client: PoolClient,
    batchNumber: number,
    used: ResolvedRows['used'],
    expected: ChunkCounts,
    write: () => Promise<ChunkCounts>,
  ): Promise<ChunkCounts> {
    const { jobId } = this.deps;
    try {
      await client.query(this.openingStatements(client, batchNumber, used, expected).join(';\n'));
      const counts = await write();
      const same = (Object.keys(expected) as Array<keyof ChunkCounts>).every((key) => counts[key] === expected[key]);
      await client.query(same ? 'COMMIT' : `${correctBatchCountsSql(jobId, batchNumber, counts)}; COMMIT`);
      return counts;
    } catch (error) {
      await client.query('ROLLBACK').catch(() => {});
      await this.release(client);
      throw this.checkFailure(error, batchNumber);
    }
  }

  /** A failed check of the opening statements as the error it stands for; any other error as it is. */
  private checkFailure(error: unknown, batchNumber: number): unknown {
    const { hint, message } = error as { hint?: string; message?: string };
    if (hint !== 'bulk-import-check' || !message) return error;
    const { jobId } = this.deps;
    if (message === 'lease') return new LeaseLostError(jobId);
    if (message.startsWith('reference:')) return new ReferenceMissingError([message.slice('reference:'.length)]);
    return new PermanentJobError(`finalize of job ${jobId}: batch ${batchNumber} was already written by someone else; stopping`, 'CSV_FINALIZE_CURSOR', {
      batch: batchNumber,
    });
  }

  /** Whether a key of the rows exists; skipped (false) while batches keep finding none. */
  private async someKeyExists(client: PoolClient, rows: ReadonlyArray<{ values: Array<string | null> }>): Promise<boolean> {
    if (rows.length === 0 || this.newKeyStreak >= NEW_KEY_STREAK) return false;
    const { anyKeyExists, keyPositions } = this.deps.statements;
    const { rows: found } = await client.query<{ found: boolean }>({
      name: anyKeyExists.name,
      text: anyKeyExists.text,
      values: [this.deps.tenant, ...keyPositions.map((position) => rows.map((row) => row.values[position]))],
    });
    const exists = found[0]!.found;
    this.newKeyStreak = exists ? 0 : this.newKeyStreak + 1;
    return exists;
  }

  private async copyRows(client: PoolClient, rows: ReadonlyArray<{ values: Array<string | null> }>): Promise<ChunkCounts> {
    if (rows.length > 0) {
      const { copySql, copyLine } = this.deps.statements;
      await runScriptWithCopyData(client, copySql, rows.map((row) => copyLine(row.values)));
    }
    return { inserted: rows.length, updated: 0, unchanged: 0, failed: 0 };
  }

  private async upsertRows(client: PoolClient, rows: ReadonlyArray<{ values: Array<string | null> }>): Promise<ChunkCounts> {
    const counts: ChunkCounts = { inserted: 0, updated: 0, unchanged: 0, failed: 0 };
    if (rows.length === 0) return counts;
    const { upsert } = this.deps.statements;
    const columns = rows[0]!.values.length;
    const arrays = Array.from({ length: columns }, (_, position) => rows.map((row) => row.values[position]));
    const { rows: written } = await client.query<{ inserted: boolean }>({
      name: upsert.name,
      text: upsert.text,
      values: [this.deps.tenant, this.deps.jobId, ...arrays],
    });
    for (const row of written) {
      if (row.inserted) counts.inserted += 1;
      else counts.updated += 1;
    }
    counts.unchanged = rows.length - written.length;
    return counts;
  }

  /** Inside the batch's transaction: each row under a savepoint; refused rows are added to `failures`. */
  private async writeRowByRow(client: PoolClient, rows: ReadonlyArray<{ row: BatchRow; values: Array<string | null> }>, failures: RowError[]): Promise<ChunkCounts> {
    const counts: ChunkCounts = { inserted: 0, updated: 0, unchanged: 0, failed: 0 };
    for (const entry of rows) {
      await client.query('SAVEPOINT csv_row');
      try {
        const result = await this.upsertRows(client, [entry]);
        await client.query('RELEASE SAVEPOINT csv_row');
        counts.inserted += result.inserted;
        counts.updated += result.updated;
        counts.unchanged += result.unchanged;
      } catch (error) {
        if (!isRowDataError(error)) throw error;
        await client.query('ROLLBACK TO SAVEPOINT csv_row');
        const { message, constraint } = error as { message: string; constraint?: string };
        const detail = tenantVisibleDetail(error);
        failures.push({
          row: entry.row.row,
          fields: fieldsOf(entry.row, this.deps.layout),
          issues: [
            {
              column: null,
              rule: 'database',
              message: `the database refused the row: ${message}${detail ? ` (${detail})` : ''}${constraint ? ` [${constraint}]` : ''}`,
            },
          ],
        });
      }
    }
    return counts;
  }
}
