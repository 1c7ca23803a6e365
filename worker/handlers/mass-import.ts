// `mass-import`: a campaign import of a mounted share into the bucket and the documents table. Plan, then import:
// the walk records every entry as an item (so progress has a total and the ceiling is checked before anything is
// written), then pending items are imported several at once, each exactly once across crashes (see mass-import/file-transfer.ts).
// The run ends `succeeded`, or `partial` when items failed for good (permanent failures, or transient ones on its last
// attempt); items that failed only transiently while attempts are left send the run back to the queue instead.
// Payload: { source?, tenant?, prefix?, dryRun?, maxFiles?, maxTotalBytes?, maxFileBytes?, concurrency? }.
import type { S3Client } from '@aws-sdk/client-s3';
import { withTransaction, type Queryable } from '../db/pool.js';
import { PermanentJobError, TransientJobError } from '../queue/errors.js';
import { DependencyOutageError } from '../queue/outage.js';
import { AdaptiveConcurrency } from '../imports/mass-import/adaptive-concurrency.js';
import { requireCampaignMount } from '../imports/mass-import/campaign-mount.js';
import {
  CeilingExceededError, checkCeiling, hardCapOf, LIMIT_NAMES, resolveLimits, UploadCeiling, type ImportLimits,
} from '../imports/mass-import/ceiling.js';
import { inspectPlan } from '../imports/mass-import/dry-run-report.js';
import { writeFailedItemsCsv } from '../imports/mass-import/failed-items-export.js';
import { insertPlannedItems, itemTotals, listItems, plannedPathSpan, resetTransientFailures } from '../imports/mass-import/items-table.js';
import { runImportLoop } from '../imports/mass-import/import-loop.js';
import { ItemOutcomeBatcher } from '../imports/mass-import/item-outcome-batcher.js';
import { checkPlannedSource, normaliseSource, planTree, resolveSourceDirectory } from '../imports/mass-import/import-plan.js';
import { MAX_DIRECTORY_NAMES_HELD } from '../imports/mass-import/directory-walk.js';
import { ImportProgress } from '../imports/mass-import/import-progress.js';
import { checkPlanRoot, plannedRoot, recordPlanRoot, rootIdentityOf } from '../imports/mass-import/plan-root.js';
import { s3Silence } from '../imports/mass-import/s3-outage-watch.js';
import { isValidPrefix, keyPrefixFor } from '../imports/object-key.js';
import { watchCredentials } from '../storage/s3-client.js';
import { isValidTenant, resolveTenant, TENANT_RULE } from '../imports/tenant.js';
import { MASS_IMPORT_KIND } from './kinds.js';
import { bytesMetric, countMetric } from './metrics.js';
import { PayloadReader } from './payload.js';
import { jobProgress } from './progress.js';
import type { JobContext, JobHandler, JobOutcome } from './types.js';

export interface MassImportPayload {
  /** Directory relative to IMPORT_ROOT; `.` is the root itself. */
  source: string;
  /** Tenant of the documents; defaults to the job's tenant. */
  tenant: string | undefined;
  /** First segment(s) of every object key; segments after the first are marked in keys (object-key.ts). */
  prefix: string;
  dryRun: boolean;
  /** Ceiling overrides (OQ-IMP-002); checked against the worker's hard caps when the run starts. */
  limits: Partial<ImportLimits>;
  /** Files uploaded at once; at most MASS_IMPORT_CONCURRENCY. */
  concurrency: number | undefined;
}

export const DEFAULT_PREFIX = 'imports';
const TRIES_PER_ATTEMPT = 5;
// A file that changed while it was imported is read again, at most this many reads in all (FILE_CHANGED_DURING_IMPORT).
const CHANGED_READS_PER_ITEM = 3;
const RETRY_BACKOFF = { baseMs: 250, maxMs: 10_000 };
const THROTTLE_HOLD_MS = 10_000;
const THROTTLE_GROW_STEP_MS = 2_000;
const MAX_BYTES = Number.MAX_SAFE_INTEGER;
// After a shutdown the files under way may finish within this share of WORKER_SHUTDOWN_GRACE_MS; then they are
// aborted, so the run is given back (and multipart uploads are aborted on S3) before the runner's grace time ends.
const SHUTDOWN_DRAIN_SHARE = 0.8;
// An object key is at most 1,024 bytes (S3), and holds the source's files' paths: a longer source could import
// nothing. A prefix is a few short segments. Both end up in the default dedupe key (at most 2,048 bytes).
const MAX_SOURCE_BYTES = 1_024;
const MAX_PREFIX_BYTES = 256;

function parsePayload(raw: Record<string, unknown>): MassImportPayload {
  const read = new PayloadReader(MASS_IMPORT_KIND, raw);
  read.onlyKnown(['source', 'tenant', 'prefix', 'dryRun', 'concurrency', ...LIMIT_NAMES]);
  const rawSource = read.optionalString('source', undefined, 'a string', MAX_SOURCE_BYTES) ?? '.';
  const source = normaliseSource(rawSource);
  if (source === undefined) {
    throw new PermanentJobError(
      `invalid mass-import payload: "source" must be a directory relative to the import root without "..", got ${JSON.stringify(rawSource)}`,
      'INVALID_PAYLOAD',
      { field: 'source' },
    );
  }
  const tenant = read.optionalString('tenant');
  if (tenant !== undefined && !isValidTenant(tenant)) {
    throw new PermanentJobError(
      `invalid mass-import payload: "tenant" must be ${TENANT_RULE}, got ${JSON.stringify(tenant)}`,
      'INVALID_PAYLOAD',
      { field: 'tenant' },
    );
  }
  const prefix = read.optionalString('prefix', undefined, 'a string', MAX_PREFIX_BYTES) ?? DEFAULT_PREFIX;
  if (!isValidPrefix(prefix)) {
    throw new PermanentJobError(
      'invalid mass-import payload: "prefix" must be segments of letters, digits, ".", "_" or "-", each starting with a ' +
        `letter or digit, joined by "/", got ${JSON.stringify(prefix)}`,
      'INVALID_PAYLOAD',
      { field: 'prefix' },
    );
  }
  const limits: Partial<ImportLimits> = {};
  for (const name of LIMIT_NAMES) {
    const value = read.optionalInteger(name, 1, MAX_BYTES);
    if (value !== undefined) limits[name] = value;
  }
  return { source, tenant, prefix, dryRun: read.boolean('dryRun', false), limits, concurrency: read.optionalInteger('concurrency', 1, 256) };
}

/** Payload limits may raise the defaults only up to the worker's hard caps (its configuration decides, not the caller). */
function checkHardCaps(context: JobContext<MassImportPayload>): ImportLimits {
  const config = context.services.config.massImport;
  for (const name of LIMIT_NAMES) {
    const requested = context.payload.limits[name];
    const cap = hardCapOf(config, name);
    if (requested !== undefined && requested > cap.value) {
      throw new PermanentJobError(
        `payload ${name} = ${requested} is above the hard cap ${cap.value} of this worker; raising it needs a configuration change (${cap.variable})`,
        'LIMIT_ABOVE_HARD_CAP',
        { limit: name, requested, hardCap: cap.value },
      );
    }
  }
  return resolveLimits(config, context.payload.limits);
}

/**
 * A run that waits out an S3 outage asks S3 once before trying any file. Without this, each retry found S3 still away
 * the long way: a streak of files, each after its own and the SDK's retries (about a hundred requests and seconds of
 * backoff per attempt here, from every waiting run of the fleet at once while S3 comes back).
 */
async function checkS3IsBack(context: JobContext<MassImportPayload>, s3: S3Client, bucket: string, timeoutMs: number): Promise<void> {
  if (context.job.outageDependency !== 's3') return;
  const silence = await s3Silence(s3, bucket, context.signal, timeoutMs);
  if (silence === undefined) return;
  throw new DependencyOutageError(
    `S3 unavailable: it still does not answer (${silence}) at the start of attempt ${context.job.attempt}; no file was tried — ` +
      'the run waits for S3 and resumes with the files not yet imported',
    's3',
    new Date(),
    false,
    'S3_UNAVAILABLE',
    { bucket, probe: 'HeadBucket', lastCode: silence },
  );
}

async function run(context: JobContext<MassImportPayload>): Promise<JobOutcome> {
  const { job, payload, services, progress, log, signal } = context;
  const tenant = resolveTenant(MASS_IMPORT_KIND, payload.tenant, job.tenantId);
  const limits = checkHardCaps(context);
  if (!services.s3 || !services.bucket) {
    throw new PermanentJobError('mass-import needs S3: set S3_BUCKET (and S3_ENDPOINT for an S3-compatible server)', 'S3_NOT_CONFIGURED');
  }
  const { s3, bucket, pool, config } = services;
  // Built by createS3Client, which watches already; a client made otherwise is watched from here on.
  watchCredentials(s3);
  await checkS3IsBack(context, s3, bucket, config.massImport.requestTimeoutMs);
  const realRoot = await requireCampaignMount(config.importRoot, config.importRootRequireMount);
  const root = await rootIdentityOf(realRoot);
  // A plan is read only from the root it was made from (plan-root.ts): checked before the source is looked for there.
  const planned = payload.dryRun ? undefined : await plannedPathSpan(pool, job.id);
  if (planned) checkPlanRoot(await plannedRoot(pool, job.id), root);
  const sourceDir = await resolveSourceDirectory(realRoot, payload.source);
  const fenced = <T>(work: (tx: Queryable) => Promise<T>) =>
    withTransaction(pool, async (tx) => {
      await context.assertLeaseHeld(tx);
      return work(tx);
    });
  const planOptions = {
    realRoot,
    sourceDir,
    prefix: payload.prefix,
    tenant,
    signal,
    onProgress: (seen: number) => progress.update(jobProgress('planning', 0, 0, { entriesSeen: seen })),
    // The walk may hold as many file names of one directory as the hard cap allows: subdirectory names, which cost the
    // same, get at least as much room (a tree of one directory per document). Not the run's own limit: a dry run and
    // a real run of a tree agree.
    maxDirectoryNames: Math.max(MAX_DIRECTORY_NAMES_HELD, config.massImport.hardCapFiles),
  };

  if (payload.dryRun) {
    progress.update(jobProgress('planning', 0, 0));
    // A rehearsal measures the tree up to the hard caps (past them no payload can import it), whatever the run's limits.
    const stopAbove = { files: config.massImport.hardCapFiles, totalBytes: config.massImport.hardCapTotalBytes };
    const plan = await planTree({ ...planOptions, stopAbove });
    const violations = checkCeiling(config.massImport, limits, plan.measure);
    const report = await inspectPlan(pool, plan, {
      bucket,
      tenant,
      realRoot,
      sourceDir,
      signal,
      violations,
      onProgress: (checked) => progress.update(jobProgress('checking', checked, plan.items.length)),
    });
    log.info({ report }, 'mass-import dry run finished');
    return { result: { ...report, tenant, source: payload.source, bucket, keyPrefix: keyPrefixFor(payload.prefix, tenant) } };
  }

  if (planned) {
    // The plan was made of the source's real path then: a source repointed since fails the run, once (import-plan.ts).
    checkPlannedSource(payload.source, realRoot, sourceDir, planned);
    const reset = await fenced((tx) => resetTransientFailures(tx, job.id));
    log.info({ retried_items: reset }, 'resuming mass import from its plan');
  } else {
    progress.update(jobProgress('planning', 0, 0));
    // The walk stops as soon as the tree is over the run's files or bytes: refused after about a ceiling's worth of
    // entries, however large the tree (a `source` one level too high).
    const plan = await planTree({ ...planOptions, stopAbove: { files: limits.maxFiles, totalBytes: limits.maxTotalBytes } });
    const violations = checkCeiling(config.massImport, limits, plan.measure);
    if (violations.length > 0) throw new CeilingExceededError(payload.source, violations);
    await fenced(async (tx) => {
      await insertPlannedItems(tx, job.id, plan.items);
      await recordPlanRoot(tx, job.id, root);
    });
    log.info({ files: plan.measure.files, bytes: plan.measure.totalBytes, unsafe: plan.unsafe }, 'mass import planned');
  }

  const startTotals = await itemTotals(pool, job.id);
  const tracker = new ImportProgress(startTotals, progress, Date.now, job.attempt < job.maxAttempts);
  const limiter = new AdaptiveConcurrency(Math.min(payload.concurrency ?? config.massImport.concurrency, config.massImport.concurrency), {
    holdMs: THROTTLE_HOLD_MS,
    growStepMs: THROTTLE_GROW_STEP_MS,
  });
  const outcomes = new ItemOutcomeBatcher({ pool, jobId: job.id, tenant, bucket, assertLeaseHeld: context.assertLeaseHeld });
  await runImportLoop({
    pool,
    signal,
    shutdownDrainMs: Math.floor(config.worker.shutdownGraceMs * SHUTDOWN_DRAIN_SHARE),
    limiter,
    progress: tracker,
    item: {
      pool,
      assertLeaseHeld: context.assertLeaseHeld,
      leaseConfirmed: context.leaseConfirmed,
      jobId: job.id,
      tenant,
      bucket,
      realRoot,
      sourceDir,
      s3,
      log,
      outcomes,
      limiter,
      ceiling: new UploadCeiling(config.massImport, limits, startTotals.bytes - startTotals.bytesFailed),
      multipartThresholdBytes: config.massImport.multipartThresholdBytes,
      bufferLimitBytes: config.massImport.bufferLimitBytes,
      requestTimeoutMs: config.massImport.requestTimeoutMs,
      triesPerAttempt: TRIES_PER_ATTEMPT,
      changedReadsPerItem: CHANGED_READS_PER_ITEM,
      retryBackoff: RETRY_BACKOFF,
    },
  });

  const totals = await itemTotals(pool, job.id);
  tracker.annotate({ concurrency: limiter.limit, throttleSignals: limiter.throttleSignals });
  if (totals.failedTransient > 0 && job.attempt < job.maxAttempts) {
    // Files that failed only because S3 (or the share) was unavailable after their retries are not `partial`
    // material while the run has attempts left: the queue retries the run after a backoff, and the next attempt
    // puts exactly those items back to pending (resetTransientFailures). Imported files stay imported.
    progress.update(tracker.snapshot('importing'));
    throw new TransientJobError(
      `${totals.failedTransient} file(s) failed with transient errors after their retries (S3 or the share unavailable); ` +
        `the run goes back to the queue and tries them again (attempt ${job.attempt} of ${job.maxAttempts}); ` +
        `${totals.done + totals.skipped} file(s) already imported or skipped stay so`,
      'ITEMS_FAILED_TRANSIENTLY',
      { bucket, failedTransient: totals.failedTransient, failedPermanent: totals.failed - totals.failedTransient },
    );
  }
  const finalProgress = tracker.snapshot('finished');
  progress.update(finalProgress);
  const result = {
    tenant,
    source: payload.source,
    bucket,
    keyPrefix: keyPrefixFor(payload.prefix, tenant),
    files: totals.files,
    imported: totals.done,
    skipped: totals.skipped,
    failed: totals.failed,
    // Of `failed`: files that still failed transiently on the run's last attempt (a re-run tries them again).
    failedTransient: totals.failedTransient,
    bytes: totals.bytes,
    bytesImported: totals.bytesDone,
    bytesSkipped: totals.bytesSkipped,
    thisAttempt: { attempt: job.attempt, ...tracker.thisAttempt() },
    concurrency: { max: limiter.max, lowest: limiter.lowest, final: limiter.limit },
    throttleSignals: limiter.throttleSignals,
  };
  return {
    state: totals.failed > 0 ? 'partial' : 'succeeded',
    result,
    metrics: {
      Files: countMetric(totals.files),
      FilesImported: countMetric(totals.done),
      FilesSkipped: countMetric(totals.skipped),
      FailedItems: countMetric(totals.failed),
      BytesImported: bytesMetric(totals.bytesDone),
    },
  };
}

export const massImportHandler: JobHandler<MassImportPayload> = {
  kind: MASS_IMPORT_KIND,
  description: 'imports a directory of the campaign mount into S3 and the documents table, exactly once per file',
  parsePayload,
  run,
  requiresTenant: true,
  defaultDedupeKey(payload, tenantId) {
    const tenant = payload.tenant ?? tenantId ?? '-';
    return `${MASS_IMPORT_KIND}:${tenant}:${payload.prefix}:${payload.source}${payload.dryRun ? ':dry-run' : ''}`;
  },
  async listErrors(db, jobId, page) {
    const { total, items } = await listItems(db, jobId, { states: ['failed'], order: 'recent', ...page });
    return {
      total,
      columns: ['item', 'path', 'size', 'code', 'error', 'tries'],
      rows: items.map((item) => ({
        item: item.itemNo,
        path: item.relativePath,
        size: item.size,
        code: item.errorCode,
        error: item.errorMessage,
        tries: item.tries,
      })),
    };
  },
  exportErrorsCsv: (db, jobId, out, reader) => writeFailedItemsCsv(db, jobId, out, reader),
};
