// Enqueue: insert a run, or return the active run with the same dedupe key (the idempotency key).
import type { Queryable } from '../db/pool.js';
import { activeTraceparent, contextOfTraceparent, inSpan } from '../tracing/spans.js';
import { JOBS_READY_CHANNEL } from './channels.js';
import { PermanentJobError } from './errors.js';
import { EQUAL_SHARES, fairTagStep, firstFairTagSql, type FairSharePolicy } from './fair-share.js';
import { ACTIVE_STATES, JOB_COLUMNS, JOB_KIND_PATTERN, sqlStates, toJobRow, type JobRow } from './types.js';

/**
 * Limits of an enqueue request, checked before any SQL (docs/RUNBOOK.md, "Limits"): a payload is a job's parameters,
 * not its data — files and rows go through S3 — and each run's payload is read by every claim and listing.
 */
export const ENQUEUE_LIMITS = {
  /** The payload serialized as JSON, in UTF-8 bytes. */
  payloadBytes: 256 * 1024,
  /** The dedupe key in UTF-8 bytes (it is a btree index entry, which Postgres caps at about 2.7 kB). */
  dedupeKeyBytes: 2_048,
  /** The tenant id in characters (the import kinds accept 1-128 letters, digits, ".", "_", "-"). */
  tenantChars: 128,
  /** `priority` is an integer column. */
  priority: { min: -2_147_483_648, max: 2_147_483_647 },
  /** The same range as JOB_MAX_ATTEMPTS. */
  maxAttempts: { min: 1, max: 100 },
} as const;

/** W3C trace context, version 00 (later versions may append fields). */
const TRACEPARENT = /^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-[0-9a-f-]{1,190})?$/;
const MAX_RUN_AT_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

function refuse(message: string, code = 'INVALID_ENQUEUE', context: Record<string, unknown> = {}): never {
  throw new PermanentJobError(`cannot enqueue: ${message}`, code, context);
}

/**
 * What a tenant id may not hold besides: control characters (U+0000-U+001F, U+007F-U+009F) and U+FFFE, U+FFFF. The id
 * is an attribute of the run's outcome notification, and SNS refuses such characters in attribute values (the same
 * characters as in a message body: those of XML 1.0, less the control ones) — every try of that message, for ever.
 */
const TENANT_REFUSED_CHARACTER = /[\p{Cc}\uFFFE\uFFFF]/u;

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function checkText(name: string, field: string, value: string | null | undefined, max: number, unit: 'bytes' | 'characters'): void {
  if (value === null || value === undefined) return;
  if (typeof value !== 'string') refuse(`${name} must be a string`, 'INVALID_ENQUEUE', { field });
  const size = unit === 'bytes' ? Buffer.byteLength(value, 'utf8') : value.length;
  if (size > max) refuse(`${name} is ${size} ${unit} long, at most ${max} allowed`, 'INVALID_ENQUEUE', { field, size, max });
  // Postgres text cannot hold U+0000 (SQLSTATE 22P05).
  if (value.includes('\u0000')) refuse(`${name} holds a NUL character (U+0000), which cannot be stored`, 'INVALID_ENQUEUE', { field });
  // A lone surrogate would reach the database as U+FFFD: refuse rather than store another text than was sent.
  if (LONE_SURROGATE.test(value)) {
    refuse(`${name} holds a lone UTF-16 surrogate (half of a character), which is not valid Unicode text`, 'INVALID_ENQUEUE', { field });
  }
}

function checkInteger(name: string, value: number | undefined, range: { min: number; max: number }): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < range.min || value > range.max) {
    refuse(`${name} must be a whole number from ${range.min} to ${range.max}, got ${String(value).slice(0, 40)}`, 'INVALID_ENQUEUE', {
      field: name,
    });
  }
}

/** The payload as the JSON that would be stored, refused when it is not a JSON object or over the limit. */
function checkPayload(payload: unknown): void {
  if (payload === undefined) return;
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) refuse('the payload must be a JSON object');
  let json: string;
  try {
    json = JSON.stringify(payload);
  } catch (error) {
    refuse(`the payload cannot be serialized as JSON: ${(error as Error).message}`);
  }
  const bytes = Buffer.byteLength(json, 'utf8');
  if (bytes > ENQUEUE_LIMITS.payloadBytes) {
    refuse(
      `the payload is ${bytes} bytes of JSON, at most ${ENQUEUE_LIMITS.payloadBytes} (256 KiB) allowed: a payload holds a ` +
        `job's parameters; put data in S3 and name it in the payload`,
      'PAYLOAD_TOO_LARGE',
      { bytes, max: ENQUEUE_LIMITS.payloadBytes },
    );
  }
  // jsonb cannot hold U+0000 either (SQLSTATE 22P05).
  if (/(?:^|[^\\])(?:\\\\)*\\u0000/.test(json)) refuse('the payload holds a NUL character (U+0000), which cannot be stored');
  // Nor half of a UTF-16 surrogate pair: JSON.stringify writes a lone one as an escape, which jsonb refuses (22P05).
  if (/(?:^|[^\\])(?:\\\\)*\\u[dD][89a-fA-F][0-9a-fA-F]{2}/.test(json)) {
    refuse('the payload holds a lone UTF-16 surrogate (half of a character), which is not valid Unicode text');
  }
}

/**
 * Refuses a request the jobs table would refuse (or should never hold) with a PermanentJobError that names the field
 * and the limit, before any SQL: kind, payload size, text lengths, integer ranges, run time.
 */
export function checkEnqueueRequest(request: EnqueueRequest): void {
  if (typeof request.kind !== 'string' || !JOB_KIND_PATTERN.test(request.kind)) {
    refuse(`kind must be 1-64 lowercase letters, digits and "-", got ${JSON.stringify(String(request.kind).slice(0, 80))}`);
  }
  checkPayload(request.payload);
  checkText('tenant', 'tenant', request.tenantId, ENQUEUE_LIMITS.tenantChars, 'characters');
  const refused = typeof request.tenantId === 'string' ? TENANT_REFUSED_CHARACTER.exec(request.tenantId)?.[0] : undefined;
  if (refused !== undefined) {
    const code = `U+${refused.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
    refuse(
      `tenant holds ${code}, a control character or a noncharacter, which an SNS message attribute cannot carry (the run's outcome notification could never be sent)`,
      'INVALID_ENQUEUE',
      { field: 'tenant', character: code },
    );
  }
  checkText('dedupe key', 'dedupeKey', request.dedupeKey, ENQUEUE_LIMITS.dedupeKeyBytes, 'bytes');
  if (request.traceparent !== undefined && request.traceparent !== null && !TRACEPARENT.test(String(request.traceparent))) {
    refuse('traceparent must be a W3C trace context: 00-<32 hex digits>-<16 hex digits>-<2 hex digits>');
  }
  checkInteger('priority', request.priority, ENQUEUE_LIMITS.priority);
  checkInteger('max attempts', request.maxAttempts, ENQUEUE_LIMITS.maxAttempts);
  checkInteger('size bytes', request.sizeBytes ?? undefined, { min: 0, max: Number.MAX_SAFE_INTEGER });
  // A JS Date reaches 271,821 BC; timestamptz starts at 4713 BC. A run time is never before the epoch anyway.
  const runAtMs = request.runAt instanceof Date ? request.runAt.getTime() : Number.NaN;
  if (request.runAt !== undefined && !(runAtMs >= 0 && runAtMs <= MAX_RUN_AT_MS)) {
    refuse('runAt must be a valid date from 1970 to 9999', 'INVALID_ENQUEUE', { field: 'runAt' });
  }
}

export interface EnqueueRequest {
  kind: string;
  payload?: Record<string, unknown>;
  tenantId?: string | null;
  /** While a run with this key is queued, running or in review, enqueuing it again returns that run. */
  dedupeKey?: string | null;
  priority?: number;
  /** Not before this time; default now. */
  runAt?: Date;
  maxAttempts?: number;
  /** The work's size as the submitter knows it (a CSV object's size, a mass import's planned bytes), in bytes. */
  sizeBytes?: number | null;
  /**
   * The submitter's W3C trace context, for a caller whose trace is not the active OpenTelemetry context; by default
   * the active one. The run's spans join that trace (null: a trace of its own).
   */
  traceparent?: string | null;
}

export interface EnqueueResult {
  job: JobRow;
  /** True when an active run with the same dedupe key was returned instead of a new one. */
  reused: boolean;
}

// A dedupe key is unique among a tenant's active runs (runs without a tenant are a scope of their own): each variant
// spells the predicate of its partial unique index, jobs_live_active_dedupe_key_tenant or …_no_tenant, so that ON
// CONFLICT can infer it. Those indexes are the live partition's (every active run is there; a partitioned table's
// unique indexes would have to include its partition key), so new runs are inserted into jobs_live itself.
const ACTIVE = sqlStates(ACTIVE_STATES);
const DEDUPE_SCOPE = {
  forTenant: { conflict: `(dedupe_key, tenant_id) WHERE dedupe_key IS NOT NULL AND tenant_id IS NOT NULL AND state IN ${ACTIVE}`, tenant: 'tenant_id = $2' },
  withoutTenant: { conflict: `(dedupe_key) WHERE dedupe_key IS NOT NULL AND tenant_id IS NULL AND state IN ${ACTIVE}`, tenant: 'tenant_id IS NULL' },
};
const dedupeScope = (tenantIsNull: boolean) => (tenantIsNull ? DEDUPE_SCOPE.withoutTenant : DEDUPE_SCOPE.forTenant);

// A run's id, for an insert into jobs_live. Runs are numbered by the identity of `jobs` (migration 20261206063000).
// From Postgres 17 a partition shares its parent's identity, so an insert into jobs_live numbers itself; before 17 the
// partition's id has no default and such an insert failed on NOT NULL. Enqueue inserts into the partition (where the
// dedupe keys' unique indexes are, for ON CONFLICT), so it names the id: bulk_import_next_job_id() takes it from the
// identity's sequence as the tables' owner (migration 20261206223000: the worker's role needs no right on the
// sequence, as with the identity), and OVERRIDING SYSTEM VALUE lets it through on 17 and later.
const NEXT_JOB_ID = 'bulk_import_next_job_id()';

// One statement: insert unless an active run holds the key, and wake idle workers when the new job is due. The
// NOTIFY is delivered at commit, so a worker never wakes before it can see the row. (pg_notify sits in the select
// list on purpose: a CTE joined only for its side effect can be optimised away; Postgres folds identical
// notifications of one transaction into one.)
// $9 is the fair tag step of the tenant (fair-share.ts), $10 the size.
const insertJobSql = (tenantIsNull: boolean) => `
WITH inserted AS (
  INSERT INTO jobs_live (id, kind, payload, tenant_id, dedupe_key, priority, run_at, max_attempts, traceparent, fair_tag, size_bytes)
  OVERRIDING SYSTEM VALUE
  VALUES (${NEXT_JOB_ID}, $1, $2, $3, $4, $5, coalesce($6, now()), $7, $8,
    ${firstFairTagSql({ kind: '$1', tenant: '$3', priority: '$5', step: '$9::bigint' }, tenantIsNull)}, $10)
  ON CONFLICT ${dedupeScope(tenantIsNull).conflict} DO NOTHING
  RETURNING ${JOB_COLUMNS}
)
SELECT inserted.*, false AS reused,
  CASE WHEN inserted.run_at <= now() THEN pg_notify('${JOBS_READY_CHANNEL}', inserted.kind) END AS woke
FROM inserted`;
// Prepared under a name (planned once per connection): the fair tag's subqueries made planning most of a single
// enqueue's database time.
const INSERT_JOB = {
  forTenant: { name: 'bulk-import-enqueue', text: insertJobSql(false) },
  withoutTenant: { name: 'bulk-import-enqueue-no-tenant', text: insertJobSql(true) },
};

const activeByKeySql = (tenantIsNull: boolean) =>
  `SELECT ${JOB_COLUMNS}, true AS reused FROM jobs WHERE dedupe_key = $1 AND ${dedupeScope(tenantIsNull).tenant} AND state IN ${ACTIVE}`;
const ACTIVE_BY_KEY = { forTenant: activeByKeySql(false), withoutTenant: activeByKeySql(true) };

/** The tenant's active run (queued, running, in review) holding this dedupe key, if any; null tenant: runs without one. */
export async function findActiveRun(db: Queryable, dedupeKey: string, tenantId: string | null): Promise<JobRow | null> {
  const { rows } = tenantId === null
    ? await db.query(ACTIVE_BY_KEY.withoutTenant, [dedupeKey])
    : await db.query(ACTIVE_BY_KEY.forTenant, [dedupeKey, tenantId]);
  return rows[0] ? toJobRow(rows[0]) : null;
}

/** Enqueues one run; `fairShare` places it in its tenant's turn (fair-share.ts). */
export async function enqueueJob(
  db: Queryable,
  request: EnqueueRequest,
  defaultMaxAttempts = 5,
  fairShare: FairSharePolicy = EQUAL_SHARES,
): Promise<EnqueueResult> {
  checkEnqueueRequest({ ...request, maxAttempts: request.maxAttempts ?? defaultMaxAttempts });
  // The `enqueue` span is the parent of every attempt's spans: its context is what the row keeps; without a tracing
  // SDK in this process (no span), the caller's own traceparent is kept as given.
  const parent = request.traceparent ? contextOfTraceparent(request.traceparent) : undefined;
  return inSpan(
    'enqueue',
    { 'job.kind': request.kind, ...(request.tenantId ? { tenant: request.tenantId } : {}) },
    async (span) => {
      const result = await insertJob(db, request, defaultMaxAttempts, activeTraceparent() ?? request.traceparent ?? null, fairShare);
      span.setAttributes({ 'job.id': result.job.id, 'job.reused': result.reused });
      return result;
    },
    parent ? { parent } : {},
  );
}

async function insertJob(
  db: Queryable,
  request: EnqueueRequest,
  defaultMaxAttempts: number,
  traceparent: string | null,
  fairShare: FairSharePolicy,
): Promise<EnqueueResult> {
  const values = [
    request.kind,
    request.payload ?? {},
    request.tenantId ?? null,
    request.dedupeKey ?? null,
    request.priority ?? 0,
    request.runAt ?? null,
    request.maxAttempts ?? defaultMaxAttempts,
    traceparent,
    fairTagStep(fairShare, request.tenantId ?? null),
    request.sizeBytes ?? null,
  ];
  const insert = (request.tenantId ?? null) === null ? INSERT_JOB.withoutTenant : INSERT_JOB.forTenant;
  // The conflicting run may finish between our insert attempt and the lookup; then the key is free again: retry.
  for (let round = 0; round < 10; round += 1) {
    const inserted = await db.query({ ...insert, values });
    if (inserted.rows[0]) return { job: toJobRow(inserted.rows[0]), reused: false };
    const active = await findActiveRun(db, request.dedupeKey!, request.tenantId ?? null);
    if (active) return { job: active, reused: true };
  }
  throw new Error(`could not enqueue ${request.kind}: dedupe key ${request.dedupeKey} kept changing state`);
}

/**
 * Inserts many jobs in one statement (no dedupe keys): for backends and benchmarks that enqueue in bulk.
 * Returns the new ids in input order.
 */
export async function enqueueJobs(
  db: Queryable,
  kind: string,
  payloads: Array<Record<string, unknown>>,
  options: { tenantId?: string | null; priority?: number; maxAttempts?: number; fairShare?: FairSharePolicy } = {},
): Promise<number[]> {
  if (payloads.length === 0) return [];
  const { fairShare = EQUAL_SHARES, ...limits } = options;
  for (const payload of payloads) checkEnqueueRequest({ kind, payload, tenantId: options.tenantId ?? null, ...limits });
  // The runs take consecutive turns of their tenant: first tag, first + step, … ($7 is the step).
  const firstTag = firstFairTagSql({ kind: '$1', tenant: '$3', priority: '$4', step: '$7::bigint' }, (options.tenantId ?? null) === null);
  const { rows } = await db.query<{ id: number }>(
    `WITH inserted AS (
       INSERT INTO jobs_live (id, kind, payload, tenant_id, priority, max_attempts, traceparent, fair_tag)
       OVERRIDING SYSTEM VALUE
       SELECT ${NEXT_JOB_ID}, $1, payload, $3, $4, $5, $6, first.tag + $7::bigint * (position - 1)
       FROM unnest($2::jsonb[]) WITH ORDINALITY AS input(payload, position), (SELECT ${firstTag} AS tag) first
       ORDER BY position
       RETURNING id
     )
     SELECT id, pg_notify('${JOBS_READY_CHANNEL}', $1) AS woke FROM inserted ORDER BY id`,
    [kind, payloads, options.tenantId ?? null, options.priority ?? 0, options.maxAttempts ?? 5, activeTraceparent(),
      fairTagStep(fairShare, options.tenantId ?? null)],
  );
  return rows.map((row) => row.id);
}
