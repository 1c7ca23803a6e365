// `bulk-import audit repair <audit id>`: the explicit repair of `missing-reference` findings, never run by the audit
// itself. For each product whose category/supplier/location id names no row, the name is taken from the import's
// source rows — the row with the product's sku that the run which last wrote it wrote: read again from S3 pinned to the
// ETag that run validated, skipping the lines it did not write (its row errors: invalid and duplicate rows, excluded
// rows), as validation keeps the first valid row of a sku — and the reference row is recreated by name (or found,
// when one with that name exists: relinked), then the product is pointed at it, only if it still holds the missing id
// and that id still names no row of its tenant (the backend may have restored the row since the audit: then the
// finding is recorded already-fixed, and nothing changes).
// The finding's record (repaired_at, repair) commits in the same transaction as that change. When the source is gone
// for good (run deleted by retention or being deleted — its job marked, its row errors maybe gone already —, file
// replaced or deleted, no such row, no name in it) the finding is reported and closed, nothing changes. When it
// cannot be read now (S3 unavailable or throttled, not configured, access refused) the finding stays open for a later
// repair: closing it would lose it for good. Without `apply` it only says what it would do.
import type { S3Client } from '@aws-sdk/client-s3';
import { withTransaction, type Pool, type Queryable } from '../db/pool.js';
import { csvRecords, isErrorExport, unescapeFields } from '../imports/csv/record-stream.js';
import { rowErrorLines } from '../imports/csv/row-errors.js';
import { RowRanges } from '../imports/csv/row-ranges.js';
import { getCsvImportRun } from '../imports/csv/run-record.js';
import { openObject } from '../imports/csv/s3-object.js';
import { PermanentJobError } from '../queue/errors.js';
import {
  lockOpenFinding,
  markRepaired,
  pageOfFindings,
  PRODUCT_REFERENCES,
  referenceResolves,
  type Finding,
  type ProductReference,
} from './consistency-store.js';

export interface RepairOptions {
  pool: Pool;
  s3: S3Client | undefined;
  auditJobId: number;
  apply: boolean;
  signal: AbortSignal;
  stallTimeoutMs: number;
}

export interface RepairEntry {
  finding: number;
  product: number;
  column: string;
  missingId: number;
  /**
   * `recreated`: a reference row of that name was created and the product points at it; `relinked`: one of that name
   * existed and the product points at it now. `left-open`: the source could not be read now (see the reason); the
   * finding stays open for a later repair.
   */
  action: 'recreated' | 'relinked' | 'would-recreate' | 'reported' | 'already-fixed' | 'left-open';
  name?: string;
  newId?: number;
  reason?: string;
}

const PAGE = 1_000;

/** Why the source cannot be read; `permanent` when it never will be (then the finding is closed as reported). */
interface SourceError {
  error: string;
  permanent: boolean;
}

/** S3 errors that say the validated file is gone for good: deleted, or replaced by another (its ETag changed). */
const GONE_CODES = new Set(['CSV_OBJECT_NOT_FOUND', 'CSV_OBJECT_CHANGED']);

export async function repairMissingReferences(options: RepairOptions): Promise<RepairEntry[]> {
  const entries: RepairEntry[] = [];
  const open: Finding[] = [];
  for (let after = 0; ; ) {
    const page = await pageOfFindings(options.pool, options.auditJobId, after, PAGE, 'missing-reference');
    open.push(...page.filter((finding) => finding.repairedAt === null));
    if (page.length < PAGE) break;
    after = page[page.length - 1]!.id;
  }
  // One read of each source file for all its findings.
  const byRun = new Map<number | null, Finding[]>();
  for (const finding of open) {
    const run = (finding.details.importJobId as number | null) ?? null;
    byRun.set(run, [...(byRun.get(run) ?? []), finding]);
  }
  for (const [runId, findings] of byRun) {
    const names = runId === null ? { error: 'the product has no importing run', permanent: true } : await namesFromSource(options, runId, findings);
    for (const finding of findings) {
      const column = finding.details.column as string;
      const base = { finding: finding.id, product: finding.subjectId!, column, missingId: Number(finding.details.referencedId) };
      const reference = PRODUCT_REFERENCES.find((candidate) => candidate.column === column)!;
      const name = 'error' in names ? undefined : names.names.get(`${finding.details.sku as string}\u0000${reference.nameColumn}`);
      if (name === undefined || name === '') {
        const reason = 'error' in names ? names.error : `no ${reference.nameColumn} for sku ${finding.details.sku as string} in the source file`;
        if ('error' in names && !names.permanent) {
          entries.push({ ...base, action: 'left-open', reason });
          continue;
        }
        // Another repair may have recorded (and fixed) it meanwhile: then that record stands, and this says so.
        if (options.apply && !(await markRepaired(options.pool, finding.id, { action: 'reported', reason }))) {
          entries.push({ ...base, action: 'already-fixed', reason: 'another repair recorded this finding first' });
          continue;
        }
        entries.push({ ...base, action: 'reported', reason });
        continue;
      }
      if (!options.apply) {
        entries.push({ ...base, action: 'would-recreate', name });
        continue;
      }
      const entry = await withTransaction(options.pool, async (tx): Promise<RepairEntry> => {
        if (!(await lockOpenFinding(tx, finding.id))) return { ...base, action: 'already-fixed', reason: 'another repair recorded this finding first' };
        const { rows: current } = await tx.query<{ id: string }>(
          `SELECT id FROM products WHERE id = $1 AND ${column} = $2 FOR UPDATE`,
          [base.product, base.missingId],
        );
        // The finding's record commits with the change it records: a repair cut off before its commit (a kill, a
        // database restart) left neither, and the next repair does it again — never a change without its record,
        // which the rerun would only see as `already-fixed`.
        const record = async (done: RepairEntry): Promise<RepairEntry> => {
          await markRepaired(tx, finding.id, { action: done.action, name: done.name, newId: done.newId, reason: done.reason });
          return done;
        };
        if (current.length === 0) return record({ ...base, action: 'already-fixed', reason: 'the product no longer holds the missing id' });
        // A row restored under the missing id makes the finding stale: one recreated by name would be a duplicate,
        // and the product would leave the row the backend put back.
        if (await referenceResolves(tx, reference, base.product)) {
          return record({ ...base, action: 'already-fixed', reason: `${reference.table} ${base.missingId} exists again for the product's tenant` });
        }
        const { id: newId, created } = await referenceByName(tx, reference, finding.tenantId!, name);
        await tx.query(`UPDATE products SET ${column} = $2, updated_at = now() WHERE id = $1`, [base.product, newId]);
        return record({ ...base, action: created ? 'recreated' : 'relinked', name, newId });
      });
      entries.push(entry);
    }
  }
  return entries;
}

/**
 * The tenant's reference row named `name`: the one that exists (`created` false), or a new one. Locked until the
 * repair commits (FOR KEY SHARE, as a foreign key would), so the product is never pointed at a row deleted meanwhile.
 */
async function referenceByName(
  tx: Queryable,
  reference: ProductReference,
  tenantId: string,
  name: string,
): Promise<{ id: number; created: boolean }> {
  for (;;) {
    const { rows: found } = await tx.query<{ id: string }>(
      `SELECT id FROM ${reference.table} WHERE tenant_id = $1 AND name = $2 FOR KEY SHARE`,
      [tenantId, name],
    );
    if (found.length > 0) return { id: Number(found[0]!.id), created: false };
    const { rows: inserted } = await tx.query<{ id: string }>(
      `INSERT INTO ${reference.table} (tenant_id, name) VALUES ($1, $2) ON CONFLICT (tenant_id, name) DO NOTHING RETURNING id`,
      [tenantId, name],
    );
    if (inserted.length > 0) return { id: Number(inserted[0]!.id), created: true };
    // Another transaction committed that name since the SELECT: the next one finds it.
  }
}

/**
 * sku + "\0" + column → the name in the row of the run's file that the run wrote, for the skus of `findings`; or why
 * the source cannot be read.
 */
async function namesFromSource(
  options: RepairOptions,
  runId: number,
  findings: Finding[],
): Promise<{ names: Map<string, string> } | SourceError> {
  const gone: SourceError = { error: `import run ${runId} is no longer on record (retention): recreate the reference by hand`, permanent: true };
  const run = await getCsvImportRun(options.pool, runId);
  // A run retention has begun deleting (its child rows go one table at a time, the run last) is gone already: its row
  // errors may be, and without them another line of the sku would name the reference.
  if (!run || !(await onRecord(options.pool, runId))) return gone;
  if (!options.s3) return { error: 'S3 is not configured (S3_BUCKET): the source file cannot be read; the finding stays open', permanent: false };
  const wanted = new Set(findings.map((finding) => finding.details.sku as string));
  const index = (name: string) => run.header.findIndex((column) => column.trim().toLowerCase() === name);
  const skuAt = index('sku');
  const columns = PRODUCT_REFERENCES.map((reference) => [reference.nameColumn, index(reference.nameColumn)] as const);
  if (skuAt < 0) return { error: `the file of run ${runId} has no sku column`, permanent: true };
  // Lines the run did not write: a later row of the same sku (a duplicate, an invalid row) must not name the reference.
  const unwritten = await rowErrorLines(options.pool, runId);
  // Retention marks the run (committed) before it deletes a row of it: unmarked after the read, the read was whole.
  if (!(await onRecord(options.pool, runId))) return gone;
  const excluded = RowRanges.fromStored(run.excludedRows);
  const names = new Map<string, string>();
  const found = new Set<string>();
  const unreadable = (error: unknown): SourceError => {
    const permanent = error instanceof PermanentJobError && GONE_CODES.has(error.code);
    const reason = `s3://${run.bucket}/${run.objectKey} of run ${runId} cannot be read as validated: ${(error as Error).message}`;
    return permanent ? { error: reason, permanent } : { error: `${reason}; the finding stays open: run the repair again`, permanent };
  };
  let object;
  try {
    object = await openObject(options.s3, run.bucket, run.objectKey, options.signal, {
      ifMatch: run.objectEtag ?? undefined,
      stallTimeoutMs: options.stallTimeoutMs,
    });
  } catch (error) {
    return unreadable(error);
  }
  const exported = isErrorExport(run.header);
  try {
    let header = true;
    reading: for await (const records of csvRecords(object.body as AsyncIterable<Buffer>, { delimiter: run.delimiter, encoding: run.encoding, signal: options.signal })) {
      for (const record of records) {
        if (header) {
          header = false;
          continue;
        }
        const fields = record.fields;
        if (!fields || unwritten.has(record.line) || excluded?.has(record.line)) continue;
        if (exported) unescapeFields(fields);
        const sku = fields[skuAt]?.trim();
        if (sku === undefined || !wanted.has(sku) || found.has(sku)) continue;
        found.add(sku);
        for (const [column, at] of columns) {
          if (at >= 0) names.set(`${sku}\u0000${column}`, (fields[at] ?? '').trim());
        }
        if (found.size === wanted.size) break reading;
      }
    }
  } catch (error) {
    // S3 failing while the body streams (a reset, a stall) is no answer about the file either.
    return unreadable(error);
  } finally {
    object.body.destroy();
  }
  return { names };
}

/**
 * Whether the run is still on record: its job exists and retention has not begun deleting it (jobs.retention_started_at,
 * set before any of its child rows go; worker/queue/maintenance.ts, deleteExpiredJobs).
 */
async function onRecord(db: Queryable, runId: number): Promise<boolean> {
  const { rows } = await db.query<{ on_record: boolean }>(
    'SELECT EXISTS (SELECT FROM jobs WHERE id = $1 AND retention_started_at IS NULL) AS on_record',
    [runId],
  );
  return rows[0]!.on_record;
}
