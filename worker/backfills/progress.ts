// The progress a backfill run stores on its job row: the counters operators see (`done`/`total`, rate, ETA) and the
// state a later attempt resumes from (cursor, conflicting keys waiting for a retry).

export type BackfillPhase = 'counting' | 'filling' | 'retrying' | 'verifying' | 'dry-run' | 'done';

// A type alias, not an interface: it must be assignable to the Record<string, unknown> that progress writes take.
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
  /** Key of the last row of the last committed batch; null before the first. Rows after it are still to walk. */
  cursor: unknown;
  /** Keys of rows a concurrent writer changed between read and write: retried in a later batch. */
  retryKeys: unknown[];
  /** Conflicts met (a row retried twice counts twice). */
  conflicts: number;
  /** Rows written whose computed value left them missing (the compute gave nothing usable). */
  unfillable: number;
  batches: number;
  /** Rows per second of this attempt. */
  rate: number;
  etaSeconds: number | null;
};

export function freshProgress(mode: BackfillProgress['mode'], backfill: string, tenant: string | null): BackfillProgress {
  return {
    mode,
    backfill,
    tenant,
    phase: 'counting',
    done: 0,
    total: 0,
    cursor: null,
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
  if (typeof saved.done !== 'number' || !Array.isArray(saved.retryKeys)) return undefined;
  return { ...freshProgress('fill', backfill, tenant), ...(saved as Partial<BackfillProgress>), phase: 'counting' };
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
