// `backfill`: fills a derived column over a large table in keyset-ordered, optimistic, resumable batches (see
// worker/backfills/). Payload: { name, tenant?, batchSize?, batchTimeoutMs?, parallelism?, dryRun?, maxRows?,
// sampleSize?, saveBeforeImage? }.
import { BACKFILL_NAME, DEFAULT_BATCH_TIMEOUT_MS, MAX_BATCH_SIZE, MAX_BATCH_TIMEOUT_MS, MAX_PARALLELISM, MIN_BATCH_TIMEOUT_MS } from '../backfills/compile.js';
import { runDryRun } from '../backfills/dry-run.js';
import { runFill } from '../backfills/fill-run.js';
import { defaultBackfills, type BackfillRegistry } from '../backfills/registry.js';
import { PermanentJobError } from '../queue/errors.js';
import { BACKFILL_KIND } from './kinds.js';
import { countMetric } from './metrics.js';
import { PayloadReader } from './payload.js';
import type { JobHandler, JobOutcome } from './types.js';

export interface BackfillPayload {
  name: string;
  /** Only this tenant's rows; null means every row (or the job's own tenant, when it has one). */
  tenant: string | null;
  /** Rows per batch transaction; undefined means the backfill's default. */
  batchSize: number | undefined;
  /**
   * The statement timeout of a batch's statements (ms): a batch that outlasts it is rolled back and tried again with
   * half the rows (worker/backfills/batch-sizer.ts).
   */
  batchTimeoutMs: number;
  /** Key ranges walked at once; undefined means the backfill's default. */
  parallelism: number | undefined;
  /** Count and sample, write nothing. */
  dryRun: boolean;
  /** Stop after this many rows written; null means no limit. */
  maxRows: number | null;
  /** Before/after pairs a dry run reports. */
  sampleSize: number;
  /** Keep key + old value of every row written (backfill_before_images), restorable with `backfill undo`. */
  saveBeforeImage: boolean;
}

const PAYLOAD_FIELDS = ['name', 'tenant', 'batchSize', 'batchTimeoutMs', 'parallelism', 'dryRun', 'maxRows', 'sampleSize', 'saveBeforeImage'];
const MAX_SAMPLE = 100;
const SAMPLE_KEYS_IN_RESULT = 20;

export function createBackfillHandler(backfills: BackfillRegistry = defaultBackfills()): JobHandler<BackfillPayload> {
  return {
    kind: BACKFILL_KIND,
    description: 'fills a missing column over a large table in resumable, optimistic batches (dryRun to rehearse)',
    parsePayload(raw) {
      const read = new PayloadReader(BACKFILL_KIND, raw);
      read.onlyKnown(PAYLOAD_FIELDS);
      const name = read.string('name', BACKFILL_NAME, `the name of a backfill: ${backfills.names().join(', ')}`);
      const backfill = backfills.require(name);
      const tenant = read.optionalString('tenant', /^\S(.{0,198}\S)?$/s, 'a tenant id (1-200 characters)') ?? null;
      if (tenant !== null && !backfill.tenant) {
        throw new PermanentJobError(`invalid backfill payload: backfill ${name} has no tenant column, so "tenant" cannot be used`, 'INVALID_PAYLOAD', { field: 'tenant' });
      }
      const saveBeforeImage = read.boolean('saveBeforeImage', false);
      // A before-image holds the target column only: a definition whose write sets other columns too could not be undone.
      if (saveBeforeImage && backfill.definition.write !== undefined) {
        throw new PermanentJobError(
          `invalid backfill payload: backfill ${name} writes more than its target column, so "saveBeforeImage" cannot be used (take a snapshot)`,
          'INVALID_PAYLOAD',
          { field: 'saveBeforeImage' },
        );
      }
      return {
        name,
        tenant,
        saveBeforeImage,
        batchSize: read.optionalInteger('batchSize', 1, MAX_BATCH_SIZE),
        batchTimeoutMs: read.optionalInteger('batchTimeoutMs', MIN_BATCH_TIMEOUT_MS, MAX_BATCH_TIMEOUT_MS) ?? DEFAULT_BATCH_TIMEOUT_MS,
        parallelism: read.optionalInteger('parallelism', 1, MAX_PARALLELISM),
        dryRun: read.boolean('dryRun', false),
        maxRows: read.optionalInteger('maxRows', 1, Number.MAX_SAFE_INTEGER) ?? null,
        sampleSize: read.optionalInteger('sampleSize', 0, MAX_SAMPLE) ?? 10,
      };
    },
    // The same backfill over the same rows runs once at a time; a dry run has its own key, so rehearsing never
    // returns (or blocks) the real run.
    defaultDedupeKey(payload, tenantId) {
      return `backfill:${payload.name}:${payload.tenant ?? tenantId ?? '*'}${payload.dryRun ? ':dry-run' : ''}`;
    },
    async run(context): Promise<JobOutcome> {
      const { payload, job, log } = context;
      const backfill = backfills.require(payload.name);
      if (payload.tenant !== null && job.tenantId !== null && payload.tenant !== job.tenantId) {
        throw new PermanentJobError(
          `backfill payload tenant "${payload.tenant}" differs from the job's tenant "${job.tenantId}"`,
          'INVALID_PAYLOAD',
          { field: 'tenant' },
        );
      }
      const tenantId = payload.tenant ?? (backfill.tenant ? job.tenantId : null);
      const options = {
        backfill,
        scope: { tenantId },
        batchSize: payload.batchSize ?? backfill.batchSize,
        batchTimeoutMs: payload.batchTimeoutMs,
        maxRows: payload.maxRows,
        parallelism: payload.parallelism ?? backfill.parallelism,
        saveBeforeImage: payload.saveBeforeImage,
      };
      const about = {
        backfill: backfill.definition.name,
        table: backfill.definition.table,
        column: backfill.definition.targetColumn,
        tenant: tenantId,
      };

      if (payload.dryRun) {
        const outcome = await runDryRun(context, { ...options, sampleSize: payload.sampleSize });
        log.info({ ...about, would_change: outcome.wouldChange, missing: outcome.missing }, 'backfill dry run done');
        return {
          result: { ...about, dryRun: true, ...outcome, remaining: outcome.missing },
          metrics: { RowsProcessed: countMetric(0), RowsRemaining: countMetric(outcome.missing), RowsWouldChange: countMetric(outcome.wouldChange) },
        };
      }

      const outcome = await runFill(context, options);
      const { progress } = outcome;
      const complete = outcome.remaining === 0;
      log.info(
        { ...about, written: progress.done, remaining: outcome.remaining, conflicts: progress.conflicts, duration_ms: outcome.durationMs },
        complete ? 'backfill complete: no row lacks the field' : 'backfill stopped with rows still lacking the field',
      );
      return {
        // Rows left after a full walk (persistent conflicts, unfillable rows, rows added without the field behind
        // the cursor) make the run partial; a run stopped by maxRows did what it was asked.
        state: complete || outcome.stoppedBy === 'maxRows' ? 'succeeded' : 'partial',
        result: {
          ...about,
          dryRun: false,
          beforeImage: payload.saveBeforeImage,
          complete,
          remaining: outcome.remaining,
          rowsInScope: outcome.rowsInScope,
          rowsWritten: progress.done,
          rowsWrittenThisAttempt: outcome.rowsWrittenThisAttempt,
          stoppedBy: outcome.stoppedBy,
          conflicts: progress.conflicts,
          unresolvedConflicts: outcome.unresolvedConflicts.length,
          unresolvedConflictKeys: outcome.unresolvedConflicts.slice(0, SAMPLE_KEYS_IN_RESULT),
          unfillable: progress.unfillable,
          batches: progress.batches,
          // Batches rolled back for outlasting the timeout, and the size the run ended with (the payload's unless some were).
          batchTimeouts: progress.batchTimeouts ?? 0,
          finalBatchSize: progress.batchSize ?? options.batchSize,
          resumedFromCursors: outcome.resumedFrom?.map((partition) => partition.cursor) ?? null,
          partitions: progress.partitions.length,
          durationMs: outcome.durationMs,
          rowsPerSecond: Math.round(outcome.rowsWrittenThisAttempt / Math.max(outcome.durationMs / 1000, 0.001)),
        },
        metrics: {
          RowsProcessed: countMetric(progress.done),
          RowsRemaining: countMetric(outcome.remaining),
          RowConflicts: countMetric(progress.conflicts),
          RowsUnfillable: countMetric(progress.unfillable),
        },
      };
    },
  };
}

export const backfillHandler = createBackfillHandler();
