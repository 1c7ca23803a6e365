// Validation: stream the object from S3, decode it, split it into records, check every row against the profile, and
// stage valid rows (COPY into csv_import_staged_rows) / record invalid rows, each window of rows in its own fenced
// transaction. Memory stays flat in the file's size: one piece of the stream, one window being built and one being
// written at a time.
// Validation writes nothing but staging, so an interrupted attempt is simply started again from the top.
import type { S3Client } from '@aws-sdk/client-s3';
import { setImmediate as yieldToEventLoop } from 'node:timers/promises';
import { copyLinesFrom } from '../../db/copy-from.js';
import { inTransaction, type Pool, type PoolClient, type Queryable } from '../../db/pool.js';
import type { ProgressReporter } from '../../handlers/types.js';
import type { Logger } from '../../logger.js';
import { PermanentJobError } from '../../queue/errors.js';
import { reportDuplicateKeys } from './duplicates.js';
import { readHeader, type HeaderLayout } from './header.js';
import type { CsvImportPayload } from './payload.js';
import { unescapeFormula } from './formula-escape.js';
import { ANNOTATION_COLUMNS, type ImportProfile } from './profile.js';
import { CsvRecordParser, type CsvRecord } from './record-parser.js';
import { describeIssues, firstRowErrors, insertRowErrors, type RowError } from './row-errors.js';
import { ReferenceNames } from './reference-names.js';
import { RowValidator } from './row-validator.js';
import { discardValidation, insertCsvImportRun, markValidated, runCounts, type CsvImportRun } from './run-record.js';
import { openObject } from './s3-object.js';
import { SeenKeys } from './seen-keys.js';
import { copyStagedRowsSql, stagedRowLine } from './staged-rows.js';

/** A row longer than this (in characters) is reported as an error instead of being read. */
export const MAX_ROW_CHARS = 1_048_576;
/** Valid rows per staging transaction (one COPY): about 2 MB of COPY text for the products profile. */
const COPY_WINDOW_ROWS = 10_000;
/** Lines are joined into one flat string every so many rows (a line built with += is a rope of many small strings). */
const JOIN_LINES = 500;
/** Invalid rows are written at least this often, so a file of mostly bad rows stays flat in memory too. */
const ERROR_FLUSH_ROWS = 1_000;
const FIRST_ERRORS = 10;

export interface ValidateDeps {
  pool: Pool;
  s3: S3Client;
  jobId: number;
  profile: ImportProfile;
  payload: CsvImportPayload;
  tenant: string;
  /** Rows per staged batch (= rows per finalize transaction). */
  batchSize: number;
  signal: AbortSignal;
  progress: ProgressReporter;
  log: Logger;
  assertLeaseHeld(db: Queryable): Promise<void>;
}

export interface ValidationSummary {
  profile: string;
  tenant: string;
  bucket: string;
  key: string;
  rows: number;
  valid: number;
  invalid: number;
  duplicates?: number;
  batches: number;
  columns: string[];
  firstErrors: Array<{ row: number; errors: string }>;
  bytes?: number;
  seconds?: number;
  rowsPerSecond?: number;
}

/**
 * Buffers valid rows as COPY lines and invalid rows as row errors, and writes them in windows: each window is one
 * fenced transaction (lease check, COPY of its rows, insert of its errors) that runs while parsing goes on, with at
 * most one window in flight. Batches (the unit finalize writes per transaction) are numbered here: every `batchSize`
 * valid rows start the next batch.
 */
class StagingWriter {
  private inFlight: Promise<void> = Promise.resolve();
  private lines: string[] = [];
  /** Joined lines of the window being built. */
  private pieces: string[] = [];
  private windowRows = 0;
  private errors: RowError[] = [];
  private staged = 0;
  private linePrefix = '';
  private readonly copySql: string;
  /** Rows per batch: index i is batch i + 1. */
  readonly batchRowCounts: number[] = [];

  constructor(
    private readonly client: PoolClient,
    private readonly deps: ValidateDeps,
    columnCount: number,
  ) {
    this.copySql = copyStagedRowsSql(columnCount);
  }

  get batches(): number {
    return this.batchRowCounts.length;
  }

  addValid(row: number, values: ReadonlyArray<string | null>, fields: readonly string[] | null): Promise<void> | undefined {
    if (this.staged % this.deps.batchSize === 0) {
      this.batchRowCounts.push(0);
      this.linePrefix = `${this.deps.jobId}\t${this.batchRowCounts.length}\t`;
    }
    this.staged += 1;
    this.batchRowCounts[this.batchRowCounts.length - 1]! += 1;
    this.lines.push(stagedRowLine(this.linePrefix, row, values, fields));
    if (this.lines.length >= JOIN_LINES) this.joinLines();
    this.windowRows += 1;
    return this.windowRows >= COPY_WINDOW_ROWS ? this.flush() : undefined;
  }

  addInvalid(error: RowError): Promise<void> | undefined {
    this.errors.push(error);
    return this.errors.length >= ERROR_FLUSH_ROWS ? this.flush() : undefined;
  }

  private joinLines(): void {
    this.pieces.push(this.lines.join(''));
    this.lines = [];
  }

  /** Starts writing what is buffered once the previous write is done; parsing goes on meanwhile. */
  async flush(): Promise<void> {
    await this.inFlight;
    if (this.lines.length > 0) this.joinLines();
    const lines = this.pieces;
    const errors = this.errors;
    if (lines.length === 0 && errors.length === 0) return;
    this.pieces = [];
    this.windowRows = 0;
    this.errors = [];
    const { client, deps, copySql } = this;
    this.inFlight = inTransaction(client, async () => {
      await deps.assertLeaseHeld(client);
      if (lines.length > 0) await copyLinesFrom(client, copySql, lines);
      await insertRowErrors(client, deps.jobId, 'validate', errors);
    }, { synchronousCommit: false });
    // Surfaced by the next flush or by drain(); never an unhandled rejection in between.
    this.inFlight.catch(() => {});
  }

  async drain(): Promise<void> {
    await this.flush();
    await this.inFlight;
  }

  /** Waits for the write in flight, whatever its outcome (before the connection is given back). */
  async settle(): Promise<void> {
    await this.inFlight.catch(() => {});
  }

  /** Duplicates removed from staging after the fact: their batches hold fewer rows. */
  forget(batchNumbers: readonly number[]): void {
    for (const batch of batchNumbers) this.batchRowCounts[batch - 1]! -= 1;
  }
}

export async function validateImport(deps: ValidateDeps): Promise<ValidationSummary> {
  const { pool, s3, jobId, profile, payload, tenant, signal, progress, log } = deps;
  const started = Date.now();
  const client = await pool.connect();
  let writer: StagingWriter | undefined;
  let referenceNames: ReferenceNames | undefined;
  let object: Awaited<ReturnType<typeof openObject>> | undefined;
  try {
    await inTransaction(client, async () => {
      await deps.assertLeaseHeld(client);
      await discardValidation(client, jobId);
    });
    object = await openObject(s3, payload.bucket, payload.key, signal);
    const size = object.size;
    const decoder = new TextDecoder(payload.encoding);
    const parser = new CsvRecordParser({ delimiter: payload.delimiter, maxRecordChars: MAX_ROW_CHARS });
    const counts = { read: 0, valid: 0, invalid: 0 };
    let layout: HeaderLayout | undefined;
    /** The file is a failed-rows export (it has `_row`/`_errors`): its cells carry the export's formula escape. */
    let exported = false;
    let validator: RowValidator | undefined;
    let keyPositions: number[] = [];
    const seenKeys = new SeenKeys();
    let bytes = 0;
    const records: CsvRecord[] = [];
    const report = () => {
      const seconds = (Date.now() - started) / 1000;
      progress.update({
        phase: 'validate',
        done: bytes,
        total: size ?? bytes,
        unit: 'bytes',
        rows: counts.read,
        valid: counts.valid,
        invalid: counts.invalid,
        rate: seconds > 0 ? Math.round(counts.read / seconds) : 0,
        etaSeconds: size && bytes > 0 ? Math.round((seconds * (size - bytes)) / bytes) : null,
      });
    };

    const handle = async (): Promise<void> => {
      for (const record of records) {
        if (!layout) {
          layout = readHeader(profile, record, { bucket: payload.bucket, key: payload.key, encoding: payload.encoding });
          validator = new RowValidator(layout);
          writer = new StagingWriter(client, deps, layout.columns.length);
          referenceNames = new ReferenceNames(layout);
          exported = layout.header.some((name) => (ANNOTATION_COLUMNS as readonly string[]).includes(name.toLowerCase()));
          const staged = layout.columns.map((column) => column.name);
          keyPositions = profile.target.naturalKey.map((key) => staged.indexOf(key));
          const header = layout.header;
          const columns = layout.columns.map((column) => column.name);
          await inTransaction(client, async () => {
            await deps.assertLeaseHeld(client);
            await insertCsvImportRun(client, {
              jobId, profile: profile.name, tenantId: tenant, bucket: payload.bucket, objectKey: payload.key,
              delimiter: payload.delimiter, header, columns,
            });
          });
          continue;
        }
        counts.read += 1;
        if (exported && record.fields) {
          const fields = record.fields;
          for (let index = 0; index < fields.length; index++) fields[index] = unescapeFormula(fields[index]!);
        }
        let pending: Promise<void> | undefined;
        if (record.fields === null || record.problem !== undefined) {
          counts.invalid += 1;
          pending = writer!.addInvalid({
            row: record.line,
            fields: record.fields,
            issues: [{ column: null, rule: 'malformed', message: record.problem ?? 'the row cannot be read' }],
          });
        } else {
          const check = validator!.check(record.fields);
          if (check.ok) {
            counts.valid += 1;
            seenKeys.add(keyPositions.length === 1 ? check.values[keyPositions[0]!]! : keyPositions.map((p) => check.values[p]).join('\u0000'));
            referenceNames!.add(check.values);
            pending = writer!.addValid(record.line, check.values, check.exact ? null : record.fields);
          } else {
            counts.invalid += 1;
            pending = writer!.addInvalid({ row: record.line, fields: record.fields, issues: check.issues });
          }
        }
        if (pending) await pending;
      }
      records.length = 0;
    };

    for await (const chunk of object.body as AsyncIterable<Buffer>) {
      if (signal.aborted) throw signal.reason;
      bytes += chunk.length;
      parser.push(decoder.decode(chunk, { stream: true }), records);
      await handle();
      report();
      // Buffered pieces of the S3 stream arrive as promise continuations, which never let the event loop reach the
      // database socket: the staging write in flight would wait for the whole file. Yield once per piece.
      await yieldToEventLoop();
    }
    parser.push(decoder.decode(), records);
    parser.end(records);
    await handle();
    if (!layout || !writer) {
      throw new PermanentJobError(`s3://${payload.bucket}/${payload.key} is empty: no header line`, 'CSV_EMPTY', {
        bucket: payload.bucket,
        key: payload.key,
      });
    }
    const staging = writer;
    await staging.drain();
    report();

    const finalLayout = layout;
    const duplicates = await inTransaction(client, async () => {
      await deps.assertLeaseHeld(client);
      // The exact search reads every staged row again: only when some key may repeat.
      const removed = seenKeys.maybeRepeated > 0 ? await reportDuplicateKeys(client, jobId, profile, finalLayout) : [];
      staging.forget(removed);
      await markValidated(
        client,
        jobId,
        { rowsRead: counts.read, rowsValid: counts.valid - removed.length, rowsInvalid: counts.invalid + removed.length, batches: staging.batches },
        staging.batchRowCounts,
        // A removed duplicate may have been the only row naming a reference: then finalize looks at what is staged.
        referenceNames!.lists(removed.length === 0),
      );
      return removed.length;
    });
    const seconds = (Date.now() - started) / 1000;
    const summary: ValidationSummary = {
      profile: profile.name,
      tenant,
      bucket: payload.bucket,
      key: payload.key,
      rows: counts.read,
      valid: counts.valid - duplicates,
      invalid: counts.invalid + duplicates,
      duplicates,
      batches: staging.batches,
      columns: finalLayout.columns.map((column) => column.name),
      firstErrors: await firstErrorsOf(client, jobId),
      bytes,
      seconds: Math.round(seconds * 10) / 10,
      rowsPerSecond: Math.round(counts.read / Math.max(seconds, 0.001)),
    };
    log.info({ rows: summary.rows, valid: summary.valid, invalid: summary.invalid, duplicates, seconds }, 'csv validated');
    return summary;
  } finally {
    object?.body.destroy();
    await writer?.settle();
    client.release();
  }
}

async function firstErrorsOf(db: Queryable, jobId: number): Promise<ValidationSummary['firstErrors']> {
  return (await firstRowErrors(db, jobId, FIRST_ERRORS)).map((error) => ({ row: error.row, errors: describeIssues(error.errors) }));
}

/** The summary of a run validated by an earlier attempt (the worker died before it could record the outcome). */
export async function summaryOfRun(db: Queryable, run: CsvImportRun): Promise<ValidationSummary> {
  return {
    ...runCounts(run),
    batches: run.batches,
    columns: run.columns,
    firstErrors: await firstErrorsOf(db, run.jobId),
  };
}
