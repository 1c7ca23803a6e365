// Validation: stream the object from S3, decode it, split it into records, check every row against the profile, and
// record the invalid rows (with their fields and every reason) plus the batch ledger finalize follows. Valid rows are
// not copied anywhere: the object itself, pinned by the ETag recorded here, is what finalize reads again
// (finalize-import.ts). Memory stays flat in the file's size: one piece of the stream, a window of row errors, a
// fixed-size filter of the keys seen and a bit per row.
// Validation writes nothing but its own records, so an interrupted attempt is simply started again from the top.
import type { S3Client } from '@aws-sdk/client-s3';
import { inTransaction, type Pool, type PoolClient, type Queryable } from '../../db/pool.js';
import { jobProgress } from '../../handlers/progress.js';
import type { ProgressReporter } from '../../handlers/types.js';
import type { Logger } from '../../logger.js';
import { PermanentJobError } from '../../queue/errors.js';
import { inSpan } from '../../tracing/spans.js';
import { reportDuplicateKeys } from './duplicates.js';
import { readHeader, type HeaderLayout } from './header.js';
import type { CsvImportPayload } from './payload.js';
import type { ImportProfile } from './profile.js';
import type { CsvRecord } from './record-parser.js';
import { csvRecords, isErrorExport, unescapeFields, type RecordStreamPosition } from './record-stream.js';
import { countDuplicateRows, describeIssues, fieldsWeight, firstRowErrors, insertRowErrors, ROW_ERRORS_WRITE_CHARS, type RowError } from './row-errors.js';
import { RowSet } from './row-set.js';
import { RowValidator } from './row-validator.js';
import { ReferencesToCreate } from './references-to-create.js';
import { discardValidation, insertCsvImportRun, markValidated, runCounts, type BatchRange, type CsvImportRun } from './run-record.js';
import { openObject } from './s3-object.js';
import { SeenKeys } from './seen-keys.js';

/**
 * Invalid rows are written at least this often, so a file of mostly bad rows stays flat in memory too, and once their
 * fields hold ROW_ERRORS_WRITE_CHARS. Rows beyond MAX_RECORD_CHARS are stored without their fields.
 */
const ERROR_FLUSH_ROWS = 1_000;
const FIRST_ERRORS = 10;

export interface ValidateDeps {
  pool: Pool;
  s3: S3Client;
  jobId: number;
  profile: ImportProfile;
  payload: CsvImportPayload;
  tenant: string;
  /** Valid rows per batch (= rows per finalize transaction). */
  batchSize: number;
  /** S3_STALL_TIMEOUT_MS: a read of the object with no byte for this long is aborted as an S3 outage. */
  stallTimeoutMs: number;
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
  /** When this validation was recorded: an approval may name it, and is refused if the run was validated again since. */
  validatedAt?: string;
  /**
   * Per reference table (categories, suppliers …), the distinct names of valid rows it lacked at validation: what
   * finalize will create (references-to-create.ts), stored with the run (an attempt after a crash reads it back).
   * Absent for a profile without references, or a run validated before migration 20261207163000.
   */
  referencesToCreate?: Record<string, number>;
  /** Tables whose referencesToCreate is a floor: more new names than validation counts (references-to-create.ts). */
  referencesToCreateAtLeast?: string[];
  batches: number;
  columns: string[];
  firstErrors: Array<{ row: number; errors: string }>;
  bytes?: number;
  seconds?: number;
  rowsPerSecond?: number;
}

/** Writes row errors in fenced transactions while parsing goes on, with at most one write in flight. */
export class RowErrorWriter {
  private inFlight: Promise<void> = Promise.resolve();
  private errors: RowError[] = [];
  private chars = 0;

  constructor(
    private readonly client: PoolClient,
    private readonly jobId: number,
    private readonly assertLeaseHeld: (db: Queryable) => Promise<void>,
  ) {}

  add(error: RowError): Promise<void> | undefined {
    this.errors.push(error);
    this.chars += fieldsWeight(error.fields);
    return this.errors.length >= ERROR_FLUSH_ROWS || this.chars >= ROW_ERRORS_WRITE_CHARS ? this.flush() : undefined;
  }

  /** Starts writing what is buffered once the previous write is done. */
  async flush(): Promise<void> {
    await this.inFlight;
    const errors = this.errors;
    if (errors.length === 0) return;
    this.errors = [];
    this.chars = 0;
    const { client, jobId } = this;
    this.inFlight = inTransaction(
      client,
      async () => {
        await this.assertLeaseHeld(client);
        await insertRowErrors(client, jobId, 'validate', errors);
      },
      { synchronousCommit: false },
    );
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
}

/** The batch ledger: every `batchSize` valid rows start the next batch, which spans the lines of its rows. */
class BatchLedger {
  readonly batches: BatchRange[] = [];
  private rowsInLast = 0;

  constructor(private readonly batchSize: number) {}

  add(line: number): void {
    let last = this.batches[this.batches.length - 1];
    if (!last || this.rowsInLast === this.batchSize) {
      last = { firstRow: line, lastRow: line, rowCount: 0 };
      this.batches.push(last);
      this.rowsInLast = 0;
    }
    last.lastRow = line;
    last.rowCount += 1;
    this.rowsInLast += 1;
  }

  /** A row found to be a duplicate after the fact: its batch writes one row fewer. */
  forget(line: number): void {
    let low = 0;
    let high = this.batches.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >>> 1;
      if (this.batches[middle]!.firstRow <= line) low = middle;
      else high = middle - 1;
    }
    this.batches[low]!.rowCount -= 1;
  }
}

/**
 * One `csv validate` span for the pass (its S3 read, `csv read`, and the duplicate search beneath), with the rows and
 * bytes it saw; the pass itself reads and checks in one stream, so reading has no span of its own beyond the open.
 */
export async function validateImport(deps: ValidateDeps): Promise<ValidationSummary> {
  const { bucket, key } = deps.payload;
  return inSpan('csv validate', { bucket, key, 'csv.profile': deps.profile.name }, async (span) => {
    const summary = await validateRows(deps);
    span.setAttributes({ rows: summary.rows, 'rows.valid': summary.valid, 'rows.invalid': summary.invalid, bytes: summary.bytes ?? 0, batches: summary.batches });
    return summary;
  });
}

/** What the header line settles for the rows after it: where each column is, and how a row is checked. */
interface RunLayout {
  layout: HeaderLayout;
  validator: RowValidator;
  /** The file is an `errors --csv` export being imported again: its fields were escaped on the way out. */
  exported: boolean;
  /** Positions of the profile's natural key among the staged columns. */
  keyPositions: number[];
}

/** Reads the header line and records the run (its header, columns and the object's version) in a fenced write. */
async function startRun(
  deps: ValidateDeps,
  client: PoolClient,
  headerRecord: CsvRecord,
  object: { etag?: string | undefined; size?: number | null | undefined },
): Promise<RunLayout> {
  const { jobId, profile, payload, tenant } = deps;
  const layout = readHeader(profile, headerRecord, { bucket: payload.bucket, key: payload.key, encoding: payload.encoding });
  const columns = layout.columns.map((column) => column.name);
  await inTransaction(client, async () => {
    await deps.assertLeaseHeld(client);
    await insertCsvImportRun(client, {
      jobId, profile: profile.name, tenantId: tenant, bucket: payload.bucket, objectKey: payload.key,
      delimiter: payload.delimiter, encoding: payload.encoding, header: layout.header, columns,
      objectEtag: object.etag ?? null, objectSize: object.size ?? null,
    });
  });
  return {
    layout,
    validator: new RowValidator(layout),
    exported: isErrorExport(layout.header),
    keyPositions: profile.target.naturalKey.map((key) => columns.indexOf(key)),
  };
}

/** The checks of the data rows: counts, the batch ledger of valid rows, keys that may repeat, and the row errors. */
class RowChecks {
  readonly counts = { read: 0, valid: 0, invalid: 0 };
  readonly ledger: BatchLedger;
  readonly seenKeys = new SeenKeys();
  /** Rows whose key may have been seen before: the exact search keeps their fields. */
  readonly flagged = new RowSet();

  readonly references: ReferencesToCreate;

  constructor(
    private readonly run: RunLayout,
    private readonly errors: RowErrorWriter,
    batchSize: number,
    tenant: string,
  ) {
    this.ledger = new BatchLedger(batchSize);
    this.references = new ReferencesToCreate(run.layout.columns, tenant);
  }

  /**
   * Checks one data row. Returns a promise only when the row's error filled the buffer and a write must be waited
   * for: the hot path of a valid row stays synchronous.
   */
  check(record: CsvRecord): Promise<void> | undefined {
    const { counts } = this;
    counts.read += 1;
    // An exported file's cells lose the export's formula escape before they are checked or stored: a malformed row
    // stored as read would be escaped once more by the next export (`'-x` → `''-x`, one more `'` every round).
    if (this.run.exported && record.fields !== null) unescapeFields(record.fields);
    if (record.fields === null || record.problem !== undefined) {
      counts.invalid += 1;
      return this.errors.add({
        row: record.line,
        fields: record.fields,
        issues: [{ column: null, rule: 'malformed', message: record.problem ?? 'the row cannot be read' }],
      });
    }
    const check = this.run.validator.check(record.fields);
    if (!check.ok) {
      counts.invalid += 1;
      return this.errors.add({ row: record.line, fields: record.fields, issues: check.issues });
    }
    counts.valid += 1;
    this.references.add(check.values);
    const { keyPositions } = this.run;
    const key = keyPositions.length === 1 ? check.values[keyPositions[0]!]! : keyPositions.map((p) => check.values[p]).join('\u0000');
    if (this.seenKeys.add(key)) this.flagged.add(record.line);
    this.ledger.add(record.line);
    return undefined;
  }
}

async function validateRows(deps: ValidateDeps): Promise<ValidationSummary> {
  const { pool, s3, jobId, profile, payload, tenant, signal, progress, log } = deps;
  const started = Date.now();
  const client = await pool.connect();
  const errors = new RowErrorWriter(client, jobId, deps.assertLeaseHeld);
  let object: Awaited<ReturnType<typeof openObject>> | undefined;
  try {
    await inTransaction(client, async () => {
      await deps.assertLeaseHeld(client);
      await discardValidation(client, jobId);
    });
    object = await inSpan('csv read', { bucket: payload.bucket, key: payload.key }, async (span) => {
      const opened = await openObject(s3, payload.bucket, payload.key, signal, { stallTimeoutMs: deps.stallTimeoutMs });
      if (opened.size !== undefined && opened.size !== null) span.setAttribute('bytes', opened.size);
      return opened;
    });
    const { size, etag } = object;
    let run: RunLayout | undefined;
    let checks: RowChecks | undefined;
    const position: RecordStreamPosition = { bytes: 0 };
    const report = () => {
      const seconds = (Date.now() - started) / 1000;
      const bytes = position.bytes;
      const counts = checks?.counts ?? { read: 0, valid: 0, invalid: 0 };
      progress.update(jobProgress('validate', bytes, size ?? bytes, {
        unit: 'bytes',
        rows: counts.read,
        valid: counts.valid,
        invalid: counts.invalid,
        rate: seconds > 0 ? Math.round(counts.read / seconds) : 0,
        etaSeconds: size && bytes > 0 ? Math.round((seconds * (size - bytes)) / bytes) : null,
      }));
    };

    for await (const records of csvRecords(object.body, { delimiter: payload.delimiter, encoding: payload.encoding, signal }, position)) {
      let first = 0;
      if (!checks) {
        if (records.length === 0) continue;
        run = await startRun(deps, client, records[0]!, object);
        checks = new RowChecks(run, errors, deps.batchSize, tenant);
        first = 1;
      }
      for (let index = first; index < records.length; index += 1) {
        const pending = checks.check(records[index]!);
        if (pending) await pending;
      }
      // On the pool, not this client: its row-error write may be in flight.
      await checks.references.flush(pool);
      report();
    }
    if (!run || !checks) {
      throw new PermanentJobError(`s3://${payload.bucket}/${payload.key} is empty: no header line`, 'CSV_EMPTY', {
        bucket: payload.bucket,
        key: payload.key,
      });
    }
    await errors.drain();
    report();

    const { counts, ledger, seenKeys, flagged } = checks;
    const { layout, exported } = run;
    // The exact search reads the file again: only when some key may repeat.
    const removed =
      seenKeys.maybeRepeated > 0
        ? await inSpan('csv duplicate search', { bucket: payload.bucket, key: payload.key, rows: seenKeys.maybeRepeated }, () => reportDuplicateKeys({
            client,
            jobId,
            profile,
            layout,
            exported,
            flagged,
            open: () => openObject(s3, payload.bucket, payload.key, signal, { ifMatch: etag, stallTimeoutMs: deps.stallTimeoutMs }),
            stream: { delimiter: payload.delimiter, encoding: payload.encoding, signal },
            assertLeaseHeld: deps.assertLeaseHeld,
            // A duplicate is not written: the reference names counted for it when it read as valid go back.
            onDuplicate: (fields) => {
              const check = run.validator.check(fields);
              if (check.ok) checks.references.remove(check.values);
            },
          }))
        : [];
    for (const line of removed) ledger.forget(line);
    const duplicates = removed.length;
    const referencesToCreate = checks.references.counts();
    const referencesToCreateAtLeast = checks.references.countedInPart();
    const validatedAt = await inTransaction(client, async () => {
      await deps.assertLeaseHeld(client);
      return markValidated(
        client,
        jobId,
        {
          rowsRead: counts.read,
          rowsValid: counts.valid - duplicates,
          rowsInvalid: counts.invalid + duplicates,
          batches: ledger.batches.length,
          referencesToCreate,
          referencesToCreateAtLeast,
        },
        ledger.batches,
      );
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
      ...(referencesToCreate ? { referencesToCreate } : {}),
      ...(referencesToCreateAtLeast ? { referencesToCreateAtLeast } : {}),
      batches: ledger.batches.length,
      columns: layout.columns.map((column) => column.name),
      firstErrors: await firstErrorsOf(client, jobId),
      bytes: position.bytes,
      seconds: Math.round(seconds * 10) / 10,
      rowsPerSecond: Math.round(counts.read / Math.max(seconds, 0.001)),
      validatedAt: validatedAt.toISOString(),
    };
    log.info({ rows: summary.rows, valid: summary.valid, invalid: summary.invalid, duplicates, seconds }, 'csv validated');
    return summary;
  } finally {
    object?.body.destroy();
    await errors.settle();
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
    // Not among the run's stored counts: the row errors say it (the review page and `show` list it).
    duplicates: await countDuplicateRows(db, run.jobId),
    ...(run.referencesToCreate ? { referencesToCreate: run.referencesToCreate } : {}),
    ...(run.referencesToCreateAtLeast ? { referencesToCreateAtLeast: run.referencesToCreateAtLeast } : {}),
    ...(run.validatedAt ? { validatedAt: run.validatedAt.toISOString() } : {}),
    batches: run.batches,
    columns: run.columns,
    firstErrors: await firstErrorsOf(db, run.jobId),
  };
}
