// The progress a backfill run stores on its job row: the counters operators see (`done`/`total`, rate, ETA) and the
// state a later attempt resumes from (one cursor per key range, conflicting keys waiting for a retry).

export type BackfillPhase = 'counting' | 'filling' | 'retrying' | 'verifying' | 'dry-run' | 'done';

/** One key range walked by its own stream of batches. Bounds are fixed when the run starts. */
export type PartitionProgress = {
  /** Exclusive lower bound of the range; null = from the first key. */
  after: unknown;
  /** Inclusive upper bound; null = to the last key (rows added during the run land here). */
  upTo: unknown;
  /** Key of the last row of the last committed batch of this range; null before the first. */
  cursor: unknown;
  /** The range is walked to its end. */
  finished: boolean;
};

// A type alias, not an interface: it must be assignable to the JobProgress (handlers/progress.ts) progress writes take.
export type BackfillProgress = {
  mode: 'fill' | 'dry-run';
  /** The backfill's name: progress of another backfill is never resumed. */
  backfill: string;
  tenant: string | null;
  phase: BackfillPhase;
  /** Rows written (fill) or rows examined (dry-run) by this run, over all its attempts. */
  done: number;
  /** `done` plus the rows still to do when the attempt started (capped by maxRows). */
  total: number;
  /** The key ranges and where each one's walk stands. */
  partitions: PartitionProgress[];
  /** Keys of rows a concurrent writer changed between read and write: retried in a later batch. */
  retryKeys: unknown[];
  /** Conflicts met (a row retried twice counts twice). */
  conflicts: number;
  /** Rows written whose computed value left them missing (the compute gave nothing usable). */
  unfillable: number;
  batches: number;
  /**
   * Rows the next batch takes: the payload's batch size, or less after batches outlasted the batch timeout
   * (batch-sizer.ts). Fill runs only; a resumed attempt starts from it.
   */
  batchSize?: number;
  /** Batches that outlasted the batch timeout and were rolled back, over all attempts (fill runs only). */
  batchTimeouts?: number;
  /** Rows per second of this attempt. */
  rate: number;
  etaSeconds: number | null;
};

export const WHOLE_TABLE: PartitionProgress = { after: null, upTo: null, cursor: null, finished: false };

export function freshProgress(mode: BackfillProgress['mode'], backfill: string, tenant: string | null): BackfillProgress {
  return {
    mode,
    backfill,
    tenant,
    phase: 'counting',
    done: 0,
    total: 0,
    partitions: [],
    retryKeys: [],
    conflicts: 0,
    unfillable: 0,
    batches: 0,
    rate: 0,
    etaSeconds: null,
  };
}

/** The saved progress of an earlier attempt of the same fill run, or undefined when there is nothing to resume. */
export function resumableProgress(
  saved: Record<string, unknown> | null,
  backfill: string,
  tenant: string | null,
): BackfillProgress | undefined {
  if (!saved || saved.mode !== 'fill' || saved.backfill !== backfill || (saved.tenant ?? null) !== tenant) return undefined;
  if (typeof saved.done !== 'number' || !Array.isArray(saved.retryKeys) || !Array.isArray(saved.partitions)) return undefined;
  if (saved.partitions.length === 0) return undefined;
  return { ...freshProgress('fill', backfill, tenant), ...(saved as Partial<BackfillProgress>), phase: 'counting' };
}

/**
 * Splits the keys of the missing rows into `count` ranges of equal width, walked in parallel. The first range is
 * open below and the last open above, so rows added while the run goes are still inside one.
 */
export function planPartitions(count: number, keyRange: { min: number; max: number } | null): PartitionProgress[] {
  if (count <= 1 || keyRange === null || keyRange.max - keyRange.min + 1 < count) return [{ ...WHOLE_TABLE }];
  const width = Math.ceil((keyRange.max - keyRange.min + 1) / count);
  const bounds = Array.from({ length: count - 1 }, (_, index) => keyRange.min - 1 + (index + 1) * width);
  return Array.from({ length: count }, (_, index) => ({
    after: index === 0 ? null : bounds[index - 1]!,
    upTo: index === count - 1 ? null : bounds[index]!,
    cursor: null,
    finished: false,
  }));
}

/** Rate and ETA from the rows this attempt handled and its elapsed time. */
export function withRate(progress: BackfillProgress, rowsThisAttempt: number, startedAt: number): BackfillProgress {
  const seconds = Math.max((Date.now() - startedAt) / 1000, 0.001);
  const rate = rowsThisAttempt / seconds;
  const left = Math.max(progress.total - progress.done, 0);
  return {
    ...progress,
    rate: Math.round(rate),
    etaSeconds: rate > 0 ? Math.ceil(left / rate) : null,
  };
}
