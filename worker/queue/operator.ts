// Operator statements: look at runs, cancel, requeue, and resume a run parked for review.
import { isPool, withTransaction, type Queryable } from '../db/pool.js';
import { JOB_CANCEL_CHANNEL, JOBS_READY_CHANNEL } from './channels.js';
import { ACTIVE_STATES, JOB_COLUMNS, JOB_STATES, sqlStates, toJobRow, type JobRow, type JobState } from './types.js';

export class JobNotFoundError extends Error {
  constructor(readonly jobId: number) {
    super(`job ${jobId} does not exist`);
    this.name = 'JobNotFoundError';
  }
}

export class InvalidTransitionError extends Error {
  constructor(
    readonly jobId: number,
    readonly state: JobState,
    action: string,
    allowed: string,
  ) {
    super(`job ${jobId} is ${state}: cannot ${action} it (only ${allowed})`);
    this.name = 'InvalidTransitionError';
  }
}

/** A requeue or replay refused because another run holds the same dedupe key while active. */
export class DedupeConflictError extends Error {
  /** `holder`: the active run that has the key, when known. */
  constructor(readonly holder?: { id: number; state: string; dedupeKey: string }) {
    super(
      holder
        ? `cannot requeue: job ${holder.id} (${holder.state}) is active with the same dedupe key ${JSON.stringify(holder.dedupeKey)}; ` +
            'cancel or finish it first, or resolve this run'
        : 'cannot requeue: another run with the same dedupe key is active; cancel or finish it first',
    );
    this.name = 'DedupeConflictError';
  }
}

export async function getJob(db: Queryable, id: number): Promise<JobRow | null> {
  // Prepared (planned once per connection): every API request about a run starts with it.
  const { rows } = await db.query({ name: 'bulk-import-job', text: `SELECT ${JOB_COLUMNS} FROM jobs WHERE id = $1`, values: [id] });
  return rows[0] ? toJobRow(rows[0]) : null;
}

export async function requireJob(db: Queryable, id: number): Promise<JobRow> {
  const job = await getJob(db, id);
  if (!job) throw new JobNotFoundError(id);
  return job;
}

export interface JobFilter {
  states?: JobState[];
  kinds?: string[];
  tenantId?: string;
  /** Created at or after. */
  since?: Date;
  limit?: number;
  /** Oldest (lowest id) first, e.g. the runs that have waited longest; newest first otherwise. */
  oldestFirst?: boolean;
}

export async function listJobs(db: Queryable, filter: JobFilter = {}): Promise<JobRow[]> {
  const { rows } = await db.query(
    `SELECT ${JOB_COLUMNS} FROM jobs
     WHERE ($1::text[] IS NULL OR state = ANY($1))
       AND ($2::text[] IS NULL OR kind = ANY($2))
       AND ($3::text IS NULL OR tenant_id = $3)
       AND ($4::timestamptz IS NULL OR created_at >= $4)
     ORDER BY id ${filter.oldestFirst ? 'ASC' : 'DESC'} LIMIT $5`,
    [filter.states ?? null, filter.kinds ?? null, filter.tenantId ?? null, filter.since ?? null, filter.limit ?? 100],
  );
  return rows.map(toJobRow);
}

export interface JobPageFilter {
  states?: JobState[] | undefined;
  kinds?: string[] | undefined;
  tenantId?: string | null | undefined;
  /** Created at or after. */
  since?: Date | undefined;
  /** Created before. */
  until?: Date | undefined;
  /** Keyset cursor: only runs with a lower id (the last id of the previous page). */
  beforeId?: number | undefined;
  limit: number;
}

/** What a listing shows of a run: no payload or result (up to 256 KiB each, and read by nobody in a list). */
export type JobSummaryRow = Pick<
  JobRow,
  'id' | 'kind' | 'tenantId' | 'state' | 'attempts' | 'maxAttempts' | 'progress' | 'lastError' | 'createdAt' | 'startedAt' | 'finishedAt' | 'updatedAt'
>;

const SUMMARY_COLUMNS = `id, kind, tenant_id, state, attempts, max_attempts, progress, last_error, created_at, started_at, finished_at,
  updated_at`;

/**
 * A page of runs, newest (highest id) first, keyset-paged by id: never OFFSET, so page 1,000 costs what page 1 does.
 * The statement holds only the filters given, so each set gets the plan its filters allow (with `$n IS NULL OR …` in
 * one statement for all, a prepared plan could not use the tenant index). The frequent listings (at most one state, by
 * tenant or not, paged or not) are prepared under a name for their filters and limit: planned once per connection
 * (planning the partitioned query again was 60 % of a listing's database time). The others (several states, a kind, a
 * time range) are planned for their values on each request: prepared too, every set of states, kinds and times a
 * caller tried would stay in each connection (58 kB a statement; up to 49,000 of them), so the named ones are bounded
 * to 10 × 4 × 6 = 240 (no state filter, the empty set or one state; by tenant or not; paged or not; six limits), and
 * as many of versionedJobsPageQuery and of jobsPageSignatureQuery (the API's listings; this form serves the admin pages
 * and the CLI): 720 in all.
 */
export function jobsPageQuery(filter: JobPageFilter): { name: string | undefined; text: string; values: unknown[] } {
  return listingStatement(filter, 'page', (page) => `SELECT ${SUMMARY_COLUMNS} FROM jobs ${page.where} ORDER BY ${page.order} LIMIT ${page.limit}`);
}

/**
 * The texts of the named listing statements, built once: a name stands for its text (the form, the states, whether a
 * tenant and a cursor are given, the limit), and building a page's text again on every request was a tenth of a
 * polled listing's CPU in the API server. Bounded by the number of names (at most 720).
 */
const statementTexts = new Map<string, string>();

/**
 * A listing statement in one of its forms (`page`, the API's versioned `pagev`, its signature `psig`): the filters'
 * statement parts, named after the form when frequent, its text built once per name, `extra` values after the
 * filters' (`$n` in the text is the first of them).
 */
function listingStatement(
  filter: JobPageFilter,
  form: 'page' | 'pagev' | 'psig',
  build: (page: ReturnType<typeof pageStatement>, n: number) => string,
  extra: unknown[] = [],
): { name: string | undefined; text: string; values: unknown[] } {
  const page = pageStatement(filter);
  const values = [...page.values, ...extra];
  if (page.name === undefined) return { name: undefined, text: build(page, page.values.length + 1), values };
  const name = `bulk-import-jobs-${form}(${page.name})`;
  let text = statementTexts.get(name);
  if (text === undefined) statementTexts.set(name, (text = build(page, page.values.length + 1)));
  return { name, text, values };
}

/** The parts of a page's statement: the filters as a WHERE clause and its values, the limit, the name's filters. */
function pageStatement(filter: JobPageFilter): { name: string | undefined; where: string; order: string; values: unknown[]; limit: number } {
  const conditions: string[] = [];
  const values: unknown[] = [];
  const where = (condition: (param: string) => string, value: unknown) => {
    values.push(value);
    conditions.push(condition(`$${values.length}`));
  };
  let states: JobState[] | undefined;
  if (filter.states !== undefined) {
    // The states are part of the statement, not a parameter, so that its prepared plan can use a partial index for
    // them (jobs_needing_attention): a plan for any `$1` could not. Only the known state names get here.
    states = JOB_STATES.filter((state) => filter.states!.includes(state));
    const unknown = filter.states.find((state) => !JOB_STATES.includes(state));
    if (unknown !== undefined) throw new Error(`unknown run state ${JSON.stringify(unknown)}`);
    conditions.push(states.length > 0 ? `state IN ${sqlStates(states)}` : 'false');
  }
  const tenantId = filter.tenantId ?? undefined;
  const frequent = (states === undefined || states.length <= 1) && filter.kinds === undefined && filter.since === undefined && filter.until === undefined;
  const byTenantIndex =
    frequent && tenantId !== undefined && filter.beforeId !== undefined && (states === undefined || (states.length === 1 && states[0] === 'queued'));
  if (filter.kinds !== undefined) where((p) => `kind = ANY(${p}::text[])`, filter.kinds);
  if (tenantId !== undefined && !byTenantIndex) where((p) => `tenant_id = ${p}`, tenantId);
  if (filter.since !== undefined) where((p) => `created_at >= ${p}`, filter.since);
  if (filter.until !== undefined) where((p) => `created_at < ${p}`, filter.until);
  if (byTenantIndex) {
    // A prepared tenant listing of every state or of queued runs below a cursor, written so that its plan reads the
    // tenant's own runs through the tenant index (tenant_id, id) from the page down, and nothing else. A generic plan
    // cannot tell tenants apart (it prices `tenant_id = $n` at one over their number, and the live partition holds
    // few): given that, `id < $m` and `ORDER BY id DESC`, with few tenants it started at the cursor in the primary key
    // and walked it backwards filtering on the tenant, through every other tenant's runs below the cursor — a
    // reviewer measured 22,000–24,000 rows, 3–4 ms a page, halfway through a 40,000-run flood of another tenant, with
    // fresh statistics. Here the tenant is a range, `>=` and a row comparison that is also the cursor, so the order
    // by tenant then id is one only the tenant index gives without a sort, and its backward scan starts at the page.
    // The tenant sits behind sub-selects, so a plan made for its value costs what the generic plan does and Postgres
    // keeps the generic one (planned once per connection, as the other named listings). A plain range `tenant_id >=
    // $n AND tenant_id <= $n` is priced at 0.5 % of the rows, and then sorting all of a tenant's queued runs looked
    // cheap; the row comparison is priced apart.
    // First pages keep `tenant_id = $n`: there the generic plan reads the tenant index from its newest run, and the
    // range form costs a polled page a quarter more database time (pg_stat_statements: 121 against 97 µs for a page's
    // signature). Listings of finished, parked or running runs keep it too: their partial indexes
    // (jobs_live_not_waiting, jobs_live_lease_expiry) skip the tenant's own backlog of queued runs, which the tenant
    // index would walk.
    values.push(tenantId);
    const tenant = `(SELECT $${values.length}::text)`;
    conditions.push(`tenant_id >= ${tenant}`);
    where((p) => `(tenant_id, id) < (${tenant}, ${p}::bigint)`, filter.beforeId);
  } else if (filter.beforeId !== undefined) where((p) => `id < ${p}::bigint`, filter.beforeId);
  const order = byTenantIndex ? 'tenant_id DESC, id DESC' : 'id DESC';
  // The limit is part of the statement too. With `LIMIT $n` Postgres never used the statement's generic plan: it
  // costs a parameter's limit at a tenth of the rows, so every custom plan (for 50 rows) looked cheaper, and each
  // execution planned the partitioned query again (0.3 ms of its 0.5 ms).
  if (!Number.isSafeInteger(filter.limit) || filter.limit < 1) throw new Error(`a page's limit must be a positive integer, not ${filter.limit}`);
  // A statement planned on each request reads exactly its page; a prepared one, the next prepared limit up.
  const limit = frequent ? preparedPageLimit(filter.limit) : filter.limit;
  // The name: the states as a bit mask over JOB_STATES, then the filters present, then the limit (within the 63 bytes
  // by which Postgres tells prepared statements apart).
  const name = [
    ...(states === undefined ? [] : [`s=${states.reduce((mask, state) => mask | (1 << JOB_STATES.indexOf(state)), 0).toString(16)}`]),
    ...(tenantId === undefined ? [] : ['t']),
    ...(filter.beforeId === undefined ? [] : ['b']),
    `n=${limit}`,
  ];
  return { name: frequent ? name.join(',') : undefined, where: conditions.length > 0 ? `WHERE ${conditions.join(' AND ')}` : '', order, values, limit };
}

/**
 * The limits listing statements are prepared with. A page of another size reads the next one up and keeps its own
 * (listJobsPage): each connection keeps every statement it prepared, and a statement per limit from 1 to 500 (the
 * API's range) would let one caller multiply them by 500.
 */
const PREPARED_PAGE_LIMITS = [10, 20, 50, 100, 200, 500];

/** The limit a page of `limit` runs is read with: the next prepared limit up, or itself past the largest. */
function preparedPageLimit(limit: number): number {
  return PREPARED_PAGE_LIMITS.find((prepared) => prepared >= limit) ?? limit;
}

/** The page jobsPageQuery describes, read. */
export async function listJobsPage(db: Queryable, filter: JobPageFilter): Promise<JobSummaryRow[]> {
  const { rows } = await db.query(jobsPageQuery(filter));
  return rows.slice(0, filter.limit).map(toSummaryRow);
}

function toSummaryRow(row: Record<string, unknown>): JobSummaryRow {
  return {
    id: row.id as number,
    kind: row.kind as string,
    tenantId: row.tenant_id as string | null,
    state: row.state as JobState,
    attempts: row.attempts as number,
    maxAttempts: row.max_attempts as number,
    progress: row.progress as Record<string, unknown> | null,
    lastError: row.last_error as JobRow['lastError'],
    createdAt: row.created_at as Date,
    startedAt: row.started_at as Date | null,
    finishedAt: row.finished_at as Date | null,
    updatedAt: row.updated_at as Date,
  };
}

/** A run of a versioned page: its row version, and its columns unless the caller said it held that version. */
export interface VersionedSummary {
  id: number;
  version: string;
  row: JobSummaryRow | null;
}

/** A run's row version (versionedJobsPageQuery says why these two parts). */
const ROW_VERSION = `xmin::text || ':' || date_part('epoch', updated_at)::text`;

const SUMMARY_REST = SUMMARY_COLUMNS.split(',').map((column) => column.trim()).filter((column) => column !== 'id');

/**
 * The page of jobsPageQuery with each run's row version, and the rest of its columns only for runs whose version the
 * caller does not hold (`known`: run id → version, sent as one JSON object, looked up per row in log time). The
 * version is `xmin:updated_at`: xmin is the transaction that wrote the row's current version, so every update of a
 * run — the archiver's move to the other partition included — gives it a new one, and updated_at keeps a version
 * apart from one written at the same transaction id on another timeline (a database restored to a point in time
 * while the API ran on; transaction ids then come round again). The page is chosen and ordered exactly as
 * jobsPageQuery's; the known versions only spare sending (and parsing) columns the caller already has. One statement:
 * a page of runs nobody holds costs one trip, as before.
 */
export function versionedJobsPageQuery(filter: JobPageFilter, known: KnownVersions): { name: string | undefined; text: string; values: unknown[] } {
  return listingStatement(
    filter,
    'pagev',
    (page, n) => `SELECT page.id, page.version, fresh.* FROM (
       SELECT ${ROW_VERSION} AS version, ${SUMMARY_COLUMNS}
       FROM jobs ${page.where} ORDER BY ${page.order} LIMIT ${page.limit}) page
     LEFT JOIN LATERAL (SELECT ${SUMMARY_REST.map((column) => `page.${column}`).join(', ')}
       WHERE ($${n}::jsonb ->> page.id::text) IS DISTINCT FROM page.version) fresh ON true
     ORDER BY page.id DESC`,
    [known.json],
  );
}

/**
 * The runs and row versions of the page versionedJobsPageQuery would return, as one string (`id@version,…`, the
 * page's order; pageSignature builds the same string from a page read before). A caller holding the whole answer to a
 * page asks this first: while the signature is the same, so is the page, and the database returns one short row
 * instead of the page's 50, which the caller would only have checked and dropped. The page is chosen exactly as
 * versionedJobsPageQuery chooses it (the same filters, order and prepared limit; the runs past the caller's own limit
 * are cut here, by `$n`).
 */
export function jobsPageSignatureQuery(filter: JobPageFilter): { name: string | undefined; text: string; values: unknown[] } {
  return listingStatement(
    filter,
    'psig',
    (page, n) => `SELECT coalesce(array_to_string((array_agg(page.id::text || '@' || page.version ORDER BY page.id DESC))[1:$${n}], ','), '') AS signature
     FROM (SELECT id, ${ROW_VERSION} AS version FROM jobs ${page.where} ORDER BY ${page.order} LIMIT ${page.limit}) page`,
    [filter.limit],
  );
}

/** The signature jobsPageSignatureQuery returns for a page of these runs at these versions (in page order). */
export function pageSignature(ids: readonly number[], versions: readonly string[]): string {
  return ids.map((id, place) => `${id}@${versions[place]}`).join(',');
}

/** The page's signature, read (see jobsPageSignatureQuery). */
export async function readJobsPageSignature(db: Queryable, filter: JobPageFilter): Promise<string> {
  const { rows } = await db.query(jobsPageSignatureQuery(filter));
  return rows[0].signature as string;
}

/** Row versions a caller holds (run id → version), as the JSON object versionedJobsPageQuery sends. */
export class KnownVersions {
  static readonly NONE = new KnownVersions([]);
  readonly json: string;
  constructor(versions: Iterable<readonly [id: number, version: string]>) {
    this.json = JSON.stringify(Object.fromEntries(versions));
  }
}

/** The page versionedJobsPageQuery describes, read: `row` is null for the runs whose version was known. */
export async function listVersionedJobsPage(db: Queryable, filter: JobPageFilter, known: KnownVersions): Promise<VersionedSummary[]> {
  const { rows } = await db.query(versionedJobsPageQuery(filter, known));
  // `kind` is never null in a row that was sent: a null one is a run whose version the caller holds.
  return rows.slice(0, filter.limit).map((row) => ({ id: row.id as number, version: row.version as string, row: row.kind === null ? null : toSummaryRow(row) }));
}

export interface CancelResult {
  job: JobRow;
  /** True when the job was running: its worker aborts the handler and ends the run `canceled`. */
  pending: boolean;
}

/**
 * Queued or parked runs end `canceled` at once. A running job is marked and its worker is told through NOTIFY (and
 * its next heartbeat), aborts the handler at the next item boundary and records `canceled`.
 */
export async function cancelJob(db: Queryable, id: number): Promise<CancelResult> {
  const { rows } = await db.query(
    `WITH target AS (SELECT id, state FROM jobs WHERE id = $1 FOR UPDATE),
     updated AS (
       UPDATE jobs SET
         state = CASE WHEN target.state = 'running' THEN 'running' ELSE 'canceled' END,
         cancel_requested_at = coalesce(jobs.cancel_requested_at, now()),
         finished_at = CASE WHEN target.state = 'running' THEN NULL ELSE now() END,
         updated_at = now()
       FROM target WHERE jobs.id = target.id AND target.state IN ${sqlStates(ACTIVE_STATES)}
       RETURNING ${JOB_COLUMNS.split(',').map((column) => `jobs.${column.trim()}`).join(', ')}
     )
     SELECT updated.*, CASE WHEN updated.state = 'running' THEN pg_notify('${JOB_CANCEL_CHANNEL}', updated.id::text) END AS told
     FROM updated`,
    [id],
  );
  if (rows[0]) {
    const job = toJobRow(rows[0]);
    return { job, pending: job.state === 'running' };
  }
  const job = await requireJob(db, id);
  throw new InvalidTransitionError(id, job.state, 'cancel', `${ACTIVE_STATES.join(', ')} runs can be canceled`);
}

export interface RequeueOptions {
  /** Start counting attempts from zero again; otherwise the run gets at least one more attempt. */
  resetAttempts?: boolean;
}

const REQUEUABLE: JobState[] = ['failed', 'dead', 'canceled'];

/**
 * The active run (queued, running, review_ready) that holds the dedupe key of the run aliased `run` in the
 * surrounding statement, other than it: what a requeue of that run would collide with.
 */
const activeHolderOf = (run: string) => `SELECT active.id, active.state FROM jobs active
  WHERE active.dedupe_key = ${run}.dedupe_key AND active.tenant_id IS NOT DISTINCT FROM ${run}.tenant_id
    AND active.state IN ${sqlStates(ACTIVE_STATES)} AND active.id <> ${run}.id
  LIMIT 1`;

/** Starts a failed, dead or canceled run again as the same run record. */
export async function requeueJob(db: Queryable, id: number, options: RequeueOptions = {}): Promise<JobRow> {
  // Named in the refusal: the active run that holds this run's dedupe key (a resubmission), if one does.
  const { rows: holders } = await db.query<{ id: number; state: string; dedupe_key: string }>(
    `SELECT holder.id, holder.state, this.dedupe_key FROM jobs this CROSS JOIN LATERAL (${activeHolderOf('this')}) holder
     WHERE this.id = $1 AND this.state IN ${sqlStates(REQUEUABLE)}`,
    [id],
  );
  const holder = holders[0];
  if (holder) throw new DedupeConflictError({ id: Number(holder.id), state: holder.state, dedupeKey: holder.dedupe_key });
  const { rows } = await requeueWhere(db, 'id = $1', [id], options);
  if (rows[0]) return rows[0];
  const job = await requireJob(db, id);
  const { rows: retained } = await db.query('SELECT 1 FROM jobs WHERE id = $1 AND retention_started_at IS NOT NULL', [id]);
  if (retained.length > 0) {
    throw new InvalidTransitionError(id, job.state, 'requeue', `runs retention is not deleting: this one is past RETENTION_DAYS and being deleted`);
  }
  throw new InvalidTransitionError(id, job.state, 'requeue', `${REQUEUABLE.join(', ')} runs can be requeued`);
}

/** A dead run a replay of all left dead: its dedupe key is taken by `heldBy` (active, or replayed in its place). */
export interface SkippedReplay {
  id: number;
  kind: string;
  tenantId: string | null;
  dedupeKey: string;
  heldBy: number;
}

// The dead runs a replay of all takes (unresolved: resolved ones were handled on purpose, only a replay by id starts
// them again), locked, and of those the ones that cannot be queued again without a second active run of their dedupe
// key: another run of the key is active (the client submitted again), or the same replay queues a newer dead run of
// the key. Left dead, they are listed with the run that holds their key, instead of the whole replay failing.
const REPLAY_CANDIDATES = `
  WITH dead AS (
    SELECT id, kind, tenant_id, dedupe_key FROM jobs
    WHERE state = 'dead' AND resolved_at IS NULL AND retention_started_at IS NULL AND ($1::text[] IS NULL OR kind = ANY($1))
    ORDER BY id FOR UPDATE
  )
  SELECT dead.id, dead.kind, dead.tenant_id, dead.dedupe_key,
    coalesce(
      (SELECT holder.id FROM (${activeHolderOf('dead')}) holder),
      (SELECT max(newer.id) FROM dead newer
       WHERE newer.dedupe_key = dead.dedupe_key AND newer.tenant_id IS NOT DISTINCT FROM dead.tenant_id AND newer.id > dead.id)
    ) AS held_by
  FROM dead ORDER BY dead.id`;

/** How many times a dead-letter replay looks again after a client took a replayed run's dedupe key meanwhile. */
const REPLAY_ROUNDS = 5;

/**
 * Requeues every unresolved dead run (optionally of some kinds): the dead-letter replay. Runs whose dedupe key is in
 * use stay dead and come back in `skipped` (a newer dead run of the same key is replayed in their place). Given a
 * pool it runs in a transaction of its own; given a client, in the caller's transaction.
 */
export async function replayDeadJobs(
  db: Queryable,
  options: RequeueOptions & { kinds?: string[] } = {},
): Promise<{ replayed: JobRow[]; skipped: SkippedReplay[] }> {
  return isPool(db) ? withTransaction(db, (tx) => replayDeadIn(tx, options)) : replayDeadIn(db, options);
}

async function replayDeadIn(tx: Queryable, options: RequeueOptions & { kinds?: string[] }): Promise<{ replayed: JobRow[]; skipped: SkippedReplay[] }> {
  for (let round = 1; ; round += 1) {
    const { rows } = await tx.query<{ id: number; kind: string; tenant_id: string | null; dedupe_key: string | null; held_by: number | null }>(
      REPLAY_CANDIDATES,
      [options.kinds ?? null],
    );
    const skipped = rows
      .filter((row) => row.held_by !== null)
      .map((row) => ({ id: row.id, kind: row.kind, tenantId: row.tenant_id, dedupeKey: row.dedupe_key!, heldBy: Number(row.held_by) }));
    const ids = rows.filter((row) => row.held_by === null).map((row) => row.id);
    if (ids.length === 0) return { replayed: [], skipped };
    // A client may submit a dead run's key after the candidates were read (its run was not visible to them): the
    // requeue then breaks the key's uniqueness and fails whole. Taken back to here, the candidates are read again,
    // and that run's key now counts as held (skipped, as any other).
    await tx.query('SAVEPOINT replay_dead');
    try {
      const { rows: replayed } = await requeueWhere(tx, `id = ANY($1::bigint[]) AND state = 'dead'`, [ids], options);
      await tx.query('RELEASE SAVEPOINT replay_dead');
      return { replayed, skipped };
    } catch (error) {
      if (!(error instanceof DedupeConflictError) || round >= REPLAY_ROUNDS) throw error;
      await tx.query('ROLLBACK TO SAVEPOINT replay_dead');
    }
  }
}

async function requeueWhere(
  db: Queryable,
  where: string,
  values: unknown[],
  options: RequeueOptions,
): Promise<{ rows: JobRow[] }> {
  const reset = values.length + 1;
  try {
    const { rows } = await db.query(
      `WITH requeued AS (
         -- Back to the live partition (archived runs too: the archive holds finished runs only).
         UPDATE jobs SET state = 'queued', archived = false, run_at = now(), finished_at = NULL, cancel_requested_at = NULL,
           outage_started_at = NULL, outage_dependency = NULL, resolved_at = NULL, resolved_by = NULL, resolution_note = NULL,
           -- The last error stays for the record; its count of outages in a row (finish.ts) starts again.
           last_error = last_error #- '{context,outageRestarts}',
           attempts = CASE WHEN $${reset} THEN 0 ELSE attempts END,
           max_attempts = CASE WHEN $${reset} THEN max_attempts ELSE greatest(max_attempts, attempts + 1) END,
           updated_at = now()
         -- Not a run retention is deleting (its child rows may be half gone: maintenance.ts, deleteExpiredJobs).
         WHERE ${where} AND state IN ${sqlStates(REQUEUABLE)} AND retention_started_at IS NULL
         RETURNING ${JOB_COLUMNS}
       )
       SELECT requeued.*, pg_notify('${JOBS_READY_CHANNEL}', requeued.kind) AS woke FROM requeued ORDER BY id`,
      [...values, options.resetAttempts ?? false],
    );
    return { rows: rows.map(toJobRow) };
  } catch (error) {
    if ((error as { code?: string }).code === '23505') {
      throw new DedupeConflictError();
    }
    throw error;
  }
}

const RESOLVABLE: JobState[] = ['failed', 'dead', 'partial'];

/**
 * Marks a failed, dead or partial run as resolved (handled by a person, with a note saying why). It keeps its state,
 * leaves the dead-jobs gauge and the dead list, and is purged and retained like any run; a requeue clears it.
 */
export async function resolveJob(db: Queryable, id: number, resolution: { by: string; note: string }): Promise<JobRow> {
  const { rows } = await db.query(
    `UPDATE jobs SET resolved_at = now(), resolved_by = $2, resolution_note = $3
     WHERE id = $1 AND state IN ${sqlStates(RESOLVABLE)} AND resolved_at IS NULL RETURNING ${JOB_COLUMNS}`,
    [id, resolution.by, resolution.note],
  );
  if (rows[0]) return toJobRow(rows[0]);
  const job = await requireJob(db, id);
  const { rows: resolved } = await db.query<{ resolved: boolean }>('SELECT resolved_at IS NOT NULL AS resolved FROM jobs WHERE id = $1', [id]);
  const allowed = `${RESOLVABLE.join(', ')} runs${resolved[0]?.resolved ? ' not resolved yet (this one is already resolved)' : ''}`;
  throw new InvalidTransitionError(id, job.state, 'resolve', allowed);
}

/**
 * Moves a run parked in `review_ready` back to `queued` (optionally as another kind, e.g. from validation to
 * finalize), so a worker picks it up. Returns null when the run is not parked. A cancel request left on the row (runs
 * parked before completions honoured it) is cleared: the approval is the newer word.
 */
export async function resumeParkedJob(
  db: Queryable,
  id: number,
  changes: { kind?: string; payload?: Record<string, unknown> } = {},
): Promise<JobRow | null> {
  const { rows } = await db.query(
    `WITH resumed AS (
       UPDATE jobs SET state = 'queued', kind = coalesce($2, kind), payload = coalesce($3, payload),
         attempts = 0, run_at = now(), outage_started_at = NULL, outage_dependency = NULL, cancel_requested_at = NULL,
         last_error = last_error #- '{context,outageRestarts}', updated_at = now()
       WHERE id = $1 AND state = 'review_ready'
       RETURNING ${JOB_COLUMNS}
     )
     SELECT resumed.*, pg_notify('${JOBS_READY_CHANNEL}', resumed.kind) AS woke FROM resumed`,
    [id, changes.kind ?? null, changes.payload ?? null],
  );
  return rows[0] ? toJobRow(rows[0]) : null;
}

/** Ends a parked run without running it further (e.g. a CSV import rejected at review). */
export async function endParkedJob(
  db: Queryable,
  id: number,
  state: 'canceled' | 'failed',
  result: Record<string, unknown> | null = null,
): Promise<JobRow | null> {
  const { rows } = await db.query(
    `UPDATE jobs SET state = $2, result = coalesce($3, result), finished_at = now(), updated_at = now()
     WHERE id = $1 AND state = 'review_ready' RETURNING ${JOB_COLUMNS}`,
    [id, state, result],
  );
  return rows[0] ? toJobRow(rows[0]) : null;
}
