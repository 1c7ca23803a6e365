// What a person (through the CLI) or a caller (through the HTTP API) does to runs, each recorded with its actor and
// note in the run's history (job_actions). The queue statements stay in worker/queue/; this layer adds the actor's
// scope (a tenant sees its own runs only: another tenant's run is "not found") and the record, in the same
// transaction wherever the queue statement can run in one.
import { userInfo } from 'node:os';
import { submitJob, type SubmitOptions, type SubmitResult } from '../api.js';
import { withTransaction as withDatabaseTransaction, type Pool, type PoolClient, type Queryable } from '../db/pool.js';
import { retryWhenRowMoved } from '../db/row-moved.js';
import { CSV_FINALIZE_KIND, CSV_IMPORT_KIND } from '../handlers/kinds.js';
import { finalizeImport, rejectImport, type FinalizeOptions } from '../imports/csv/review.js';
import { InvalidRowRangesError, RowRanges } from '../imports/csv/row-ranges.js';
import {
  listDeadJobs,
  listPurgeable,
  purgeDeadBatch,
  purgeScope,
  replayDeadJobsById,
  type PurgedJob,
  type PurgeRequest,
} from '../queue/dead-letters.js';
import type { EnqueueRequest } from '../queue/enqueue.js';
import { recordJobActions, type JobAction } from '../queue/job-actions.js';
import {
  cancelJob,
  getJob,
  JobNotFoundError,
  replayDeadJobs,
  requeueJob,
  resolveJob,
  type CancelResult,
  type RequeueOptions,
  type SkippedReplay,
} from '../queue/operator.js';
import type { JobRow } from '../queue/types.js';

/** An action's transaction: tried again when the run moved between the live and archive partitions under it. */
const withTransaction = <T>(pool: Pool, work: (tx: PoolClient) => Promise<T>): Promise<T> =>
  retryWhenRowMoved(() => withDatabaseTransaction(pool, work));

/** Who acts: an API key (its name, and its tenant for a tenant key) or the operator CLI (no tenant: every run). */
export interface Actor {
  name: string;
  /** Only this tenant's runs exist for the actor; null = every run. */
  tenantId: string | null;
}

/** The CLI's actor: `cli:<user>` of the operating-system account that ran the command. */
export function cliActor(): Actor {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry for this uid (some containers)
  }
  return { name: `cli:${user}`, tenantId: null };
}

/** The longest note an action keeps (characters). */
export const MAX_NOTE_CHARS = 2_000;

export class ActionRefusedError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
    this.name = 'ActionRefusedError';
  }
}

function checkNote(note: string | null | undefined): string | null {
  if (note === undefined || note === null) return null;
  if (note.length > MAX_NOTE_CHARS) throw new ActionRefusedError(`a note is at most ${MAX_NOTE_CHARS} characters`, 'INVALID_NOTE');
  return note.replaceAll('\u0000', '\uFFFD');
}

/** The run as the actor may see it; JobNotFoundError when it does not exist or is another tenant's. */
export async function requireVisibleJob(db: Queryable, actor: Actor, id: number): Promise<JobRow> {
  const job = await getJob(db, id);
  if (!job || (actor.tenantId !== null && job.tenantId !== actor.tenantId)) throw new JobNotFoundError(id);
  return job;
}

function record(db: Queryable, actor: Actor, action: JobAction, jobs: Array<Pick<JobRow, 'id'> & { state: JobRow['state'] | null }>, note: string | null) {
  return recordJobActions(
    db,
    jobs.map((job) => ({ jobId: job.id, action, actor: actor.name, byOperator: actor.tenantId === null, note, stateAfter: job.state })),
  );
}

/** Submits a run; a new run records `submitted` with the actor, a reused one (same dedupe key, still active) nothing. */
export async function submitRun(pool: Pool, actor: Actor, request: EnqueueRequest, options: SubmitOptions = {}): Promise<SubmitResult> {
  return withTransaction(pool, async (tx) => {
    const result = await submitJob(tx, request, options);
    if (!result.reused) await record(tx, actor, 'submitted', [result.job], null);
    return result;
  });
}

export async function cancelRun(pool: Pool, actor: Actor, id: number, note?: string | null): Promise<CancelResult> {
  const text = checkNote(note);
  return withTransaction(pool, async (tx) => {
    await requireVisibleJob(tx, actor, id);
    const result = await cancelJob(tx, id);
    await record(tx, actor, 'canceled', [result.job], text);
    return result;
  });
}

export async function requeueRun(pool: Pool, actor: Actor, id: number, options: RequeueOptions & { note?: string | null } = {}): Promise<JobRow> {
  const text = checkNote(options.note);
  return withTransaction(pool, async (tx) => {
    await requireVisibleJob(tx, actor, id);
    const job = await requeueJob(tx, id, options);
    await record(tx, actor, 'requeued', [job], text);
    return job;
  });
}

export async function resolveRun(pool: Pool, actor: Actor, id: number, note: string): Promise<JobRow> {
  const text = checkNote(note);
  if (!text || text.trim() === '') throw new ActionRefusedError('resolve needs a note saying why the run needs nothing more', 'NOTE_REQUIRED');
  return withTransaction(pool, async (tx) => {
    await requireVisibleJob(tx, actor, id);
    const job = await resolveJob(tx, id, { by: actor.name, note: text });
    await record(tx, actor, 'resolved', [job], text);
    return job;
  });
}

const CSV_KINDS = new Set([CSV_IMPORT_KIND, CSV_FINALIZE_KIND]);

async function requireCsvImport(pool: Pool, actor: Actor, id: number, action: string): Promise<void> {
  const job = await requireVisibleJob(pool, actor, id);
  if (!CSV_KINDS.has(job.kind)) throw new ActionRefusedError(`job ${id} is a ${job.kind} run, not a CSV import: nothing to ${action}`, 'NOT_A_CSV_IMPORT');
}

/** Longest list of excluded rows a history note repeats (the run's result keeps the whole list). */
const EXCLUSION_IN_NOTE_CHARS = 500;

export async function finalizeRun(pool: Pool, actor: Actor, id: number, note?: string | null, options: FinalizeOptions = {}): Promise<JobRow> {
  const text = checkNote(note);
  let excluded: RowRanges | null;
  try {
    excluded = typeof options.excludeRows === 'string' ? RowRanges.parse(options.excludeRows) : (options.excludeRows ?? null);
  } catch (error) {
    if (error instanceof InvalidRowRangesError) throw new ActionRefusedError(`excludeRows: ${error.message}`, 'INVALID_ROWS');
    throw error;
  }
  if (options.validatedAt && Number.isNaN(new Date(options.validatedAt).getTime())) {
    throw new ActionRefusedError(`validatedAt: ${JSON.stringify(String(options.validatedAt)).slice(0, 60)} is not a date (the run's result.validatedAt)`, 'INVALID_VALIDATED_AT');
  }
  await requireCsvImport(pool, actor, id, 'finalize');
  // The selection goes into the history with the decision: "finalized, excluded rows 12,40-90".
  let history = text;
  if (excluded) {
    const list = excluded.toString();
    const shown = list.length <= EXCLUSION_IN_NOTE_CHARS ? list : `${list.slice(0, EXCLUSION_IN_NOTE_CHARS)}… (the run's result lists all)`;
    const exclusion = `excluded rows ${shown} (${excluded.size()} line(s))`;
    history = text ? `${text} — ${exclusion}` : exclusion;
  }
  // In the decision's own transaction: a decision never commits without its history entry.
  return finalizeImport(pool, id, { excludeRows: excluded, validatedAt: options.validatedAt }, (tx, job) => record(tx, actor, 'finalized', [job], history));
}

export async function rejectRun(pool: Pool, actor: Actor, id: number, note?: string | null): Promise<JobRow> {
  const text = checkNote(note);
  await requireCsvImport(pool, actor, id, 'reject');
  return rejectImport(pool, id, (tx, job) => record(tx, actor, 'rejected', [job], text));
}

export interface ReplayRequest extends RequeueOptions {
  /** The dead runs to replay (all must be dead), or `all`. */
  ids?: number[] | undefined;
  all?: boolean | undefined;
  kinds?: string[] | undefined;
  note?: string | null | undefined;
}

export interface ReplayResult {
  replayed: JobRow[];
  /** With `all`: dead runs left dead because their dedupe key is in use (by an active run, or one replayed instead). */
  skipped: SkippedReplay[];
}

/** Dead-letter replay (operators only: the caller checks the role). */
export async function replayDead(pool: Pool, actor: Actor, request: ReplayRequest): Promise<ReplayResult> {
  const text = checkNote(request.note);
  const options = { resetAttempts: request.resetAttempts ?? false };
  // The history in the replay's own transaction: a replay never commits without its entries.
  return withTransaction(pool, async (tx) => {
    const result = request.all
      ? await replayDeadJobs(tx, { ...options, ...(request.kinds ? { kinds: request.kinds } : {}) })
      : { replayed: await replayDeadJobsById(tx, request.ids ?? [], options), skipped: [] };
    await record(tx, actor, 'replayed', result.replayed, text);
    return result;
  });
}

/**
 * Dead-letter purge (operators only); the history keeps a `purged` entry per deleted run. The runs go in batches of
 * `PURGE_BATCH_RUNS`, each committed with its entries, so a purge of many runs holds no long transaction (nor the
 * locks and the vacuum horizon of one). Stopped between batches, the runs purged so far stay purged with their entries
 * and the rest stay dead: the same purge again takes the rest. `onBatch` hears the running total after each batch.
 */
export async function purgeDead(
  pool: Pool,
  actor: Actor,
  request: PurgeRequest & { note?: string | null },
  onBatch?: (purgedSoFar: number) => void,
): Promise<PurgedJob[]> {
  const text = checkNote(request.note);
  const scope = await purgeScope(pool, request);
  if (request.dryRun) return listPurgeable(pool, scope);
  const purged: PurgedJob[] = [];
  for (let after: number | null = 0; after !== null; ) {
    const from: number = after;
    const batch = await withTransaction(pool, async (tx) => {
      const result = await purgeDeadBatch(tx, scope, from);
      await record(tx, actor, 'purged', result.purged.map((job) => ({ id: job.id, state: null })), text);
      return result;
    });
    purged.push(...batch.purged);
    after = batch.next;
    if (after !== null) onBatch?.(purged.length);
  }
  return purged;
}

export { listDeadJobs };
