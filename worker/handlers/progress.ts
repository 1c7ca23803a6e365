// The shape of a run's progress, whatever its kind. `phase`, `done` and `total` are read outside the handler: by the
// CLI and API views, by the rate/ETA code and by the state-notification trigger (migrations/…_job_state_notifications),
// so every handler builds its progress with jobProgress() and the type checker holds them to it.

/** A run's progress as saved on its job row (jobs.progress) and shown while it runs. */
export interface JobProgress {
  /** What the run is doing now: planning, importing, validate, finalize, filling, products … (kind-specific). */
  phase: string;
  /** Units of work done (files, rows, bytes …), over all attempts. */
  done: number;
  /** Units of work in all, or null while the run does not know yet. */
  total: number | null;
  /** Kind-specific figures: bytesDone, valid, invalid, rate, etaSeconds … */
  [figure: string]: unknown;
}

/** The progress of a run in `phase`, `done` of `total`, with the kind's own figures beside them. */
export function jobProgress(phase: string, done: number, total: number | null, figures: Record<string, unknown> = {}): JobProgress {
  return { ...figures, phase, done, total };
}
