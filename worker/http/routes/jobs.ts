// GET /v1/jobs (keyset-paged listing), GET /v1/jobs/{id} (the run record), POST /v1/jobs (submit any kind).
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import { submitRun } from '../../actions/run-actions.js';
import { runTenant } from '../../api.js';
import { CSV_IMPORT_KIND } from '../../handlers/kinds.js';
import { parseCsvImportPayload } from '../../imports/csv/payload.js';
import { requireSubmitTenant } from '../../imports/tenant.js';
import { QueueLimitError } from '../../queue/admission.js';
import { estimateJson, estimateRun, ThroughputCache } from '../../queue/estimate.js';
import { checkEnqueueRequest, type EnqueueRequest } from '../../queue/enqueue.js';
import { getRunRecord } from '../../queue/job-actions.js';
import { JOB_KIND_PATTERN_SOURCE, JOB_STATES, type JobState } from '../../queue/types.js';
import { measureCsvUpload } from '../csv-upload.js';
import { decodeCursor, encodeCursor } from '../cursor.js';
import { ApiError, jobNotFound, queueLimitForTenant } from '../errors.js';
import { CURSOR, ERROR_RESPONSES, JOB_ID_PARAMS, JOB_SUMMARY_SCHEMA, limitParam } from '../schemas.js';
import { actorOf, isOperatorKey, keyOf, tenantScope, type ApiDependencies } from '../server.js';
import { SummaryRenderings } from '../summary-renderings.js';
import { jobDetailView, jobSummaryView } from '../views.js';

/** Kinds a tenant key may submit: a CSV import reads only its tenant's uploads. Mass imports read the shared campaign
 * mount and backfills rewrite tables: operators start those. */
export const TENANT_KINDS: readonly string[] = [CSV_IMPORT_KIND];

const LIST_QUERY = {
  type: 'object',
  additionalProperties: false,
  properties: {
    state: { type: 'array', items: { type: 'string', enum: [...JOB_STATES] }, maxItems: JOB_STATES.length },
    kind: { type: 'array', items: { type: 'string', pattern: JOB_KIND_PATTERN_SOURCE }, maxItems: 20 },
    tenant: { type: 'string', minLength: 1, maxLength: 128 },
    since: { type: 'string', format: 'date-time', description: 'created at or after' },
    until: { type: 'string', format: 'date-time', description: 'created before' },
    limit: limitParam(50, 500),
    cursor: CURSOR,
  },
} as const;

const SUBMIT_BODY = {
  type: 'object',
  required: ['kind'],
  additionalProperties: false,
  properties: {
    kind: { type: 'string', pattern: JOB_KIND_PATTERN_SOURCE },
    payload: { type: 'object', additionalProperties: true },
    tenant: { type: 'string', minLength: 1, maxLength: 128, description: 'operator keys only; a tenant key submits for its own tenant' },
    dedupeKey: { anyOf: [{ type: 'string', minLength: 1, maxLength: 2048 }, { type: 'null' }], description: "default: the kind's own; null: never reuse" },
    priority: { type: 'integer', minimum: -2147483648, maximum: 2147483647 },
    maxAttempts: { type: 'integer', minimum: 1, maximum: 100 },
    runAt: { type: 'string', format: 'date-time' },
    sizeBytes: { type: 'integer', minimum: 0, description: "the work's size, counted toward the queued-bytes limits: a mass import's planned bytes; for a CSV import the API reads the upload's size from S3 (a different value here is refused)" },
  },
} as const;

/** A date-time query value as a Date: the schema's format lets through what a Date cannot hold (a leap second, :60). */
function queryTime(value: string | undefined, field: string): Date | undefined {
  if (value === undefined) return undefined;
  const date = new Date(value);
  const year = date.getUTCFullYear();
  if (Number.isNaN(date.getTime()) || year < 1 || year > 9999) {
    throw new ApiError(400, 'INVALID_REQUEST', `${field} must be a date-time from year 1 to 9999, as 2026-12-05T10:00:00Z (not a leap second)`, field);
  }
  return date;
}

interface ListQuery {
  state?: JobState[];
  kind?: string[];
  tenant?: string;
  since?: string;
  until?: string;
  limit: number;
  cursor?: string;
}

interface SubmitBody {
  kind: string;
  payload?: Record<string, unknown>;
  tenant?: string;
  dedupeKey?: string | null;
  priority?: number;
  maxAttempts?: number;
  runAt?: string;
  sizeBytes?: number;
}

/** A CSV import's size is its upload's, measured (csv-upload.ts): the queued-bytes limits must not take the caller's word. */
async function csvUploadSize(deps: ApiDependencies, log: FastifyBaseLogger, body: SubmitBody, scope: string | null): Promise<number> {
  const payload = parseCsvImportPayload(body.kind, body.payload ?? {});
  const tenant = requireSubmitTenant(body.kind, runTenant(scope ?? body.tenant ?? null, payload));
  return measureCsvUpload(deps, log, body.kind, payload, tenant, body.sizeBytes);
}

export function registerJobRoutes(app: FastifyInstance, deps: ApiDependencies): void {
  // Each run's summary is rendered once per version of its row (summary-renderings.ts).
  // A tenant's rendering of a run leaves out what an operator's shows (views.ts): each audience keeps its own.
  const summaries = { operator: new SummaryRenderings(), tenant: new SummaryRenderings() };
  // The kinds' throughput behind queued and running runs' estimates, read at most once a second.
  const throughput = new ThroughputCache(deps.pool);
  app.get<{ Querystring: ListQuery }>(
    '/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        summary: 'runs, newest first; filters combine; `next` pages on',
        querystring: LIST_QUERY,
        response: {
          200: { type: 'object', properties: { jobs: { type: 'array', items: { $ref: 'JobSummary#' } }, next: { type: ['string', 'null'] } } },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (request, reply) => {
      const query = request.query;
      const scope = tenantScope(request);
      // A tenant key asking for another tenant's runs sees none, as if that tenant had none.
      if (scope !== null && query.tenant !== undefined && query.tenant !== scope) return { jobs: [], next: null };
      const before = query.cursor ? (decodeCursor(query.cursor, { id: 'integer' }).id as number) : undefined;
      // The summaries are JSON already, written with the schema the page's own serializer uses for them.
      const summaryJson = reply.compileSerializationSchema(JOB_SUMMARY_SCHEMA);
      const operator = scope === null;
      const page = await summaries[operator ? 'operator' : 'tenant'].page(
        deps.pool,
        {
          states: query.state,
          kinds: query.kind,
          tenantId: scope ?? query.tenant ?? null,
          since: queryTime(query.since, 'since'),
          until: queryTime(query.until, 'until'),
          beforeId: before,
          limit: query.limit,
        },
        (run) => summaryJson(jobSummaryView(run, operator)),
        (runs, lastId) => {
          const next = runs.length === query.limit && lastId !== undefined ? JSON.stringify(encodeCursor({ id: lastId })) : 'null';
          return `{"jobs":[${runs.join(',')}],"next":${next}}`;
        },
      );
      return reply.type('application/json; charset=utf-8').send(page.body);
    },
  );

  app.get<{ Params: { id: number } }>(
    '/v1/jobs/:id',
    {
      schema: {
        tags: ['jobs'],
        summary: 'one run: state, attempts, progress with rate and ETA, result, last error, who started it, action history',
        params: JOB_ID_PARAMS,
        response: { 200: { $ref: 'Job#' }, ...ERROR_RESPONSES },
      },
    },
    async (request) => {
      const record = await getRunRecord(deps.pool, request.params.id, tenantScope(request));
      if (!record) throw jobNotFound(request.params.id);
      return { ...jobDetailView(record.job, record, isOperatorKey(request)), estimate: estimateJson(await estimateRun(deps.pool, record.job, { throughputOf: (kind) => throughput.read(kind) })) };
    },
  );

  app.post<{ Body: SubmitBody }>(
    '/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        summary: "submit a run of any kind; the payload is checked by the kind's own reader; 200 with reused: true for an active run of the same dedupe key",
        body: SUBMIT_BODY,
        response: {
          200: { type: 'object', properties: { reused: { type: 'boolean' }, job: { $ref: 'Job#' } } },
          201: { type: 'object', properties: { reused: { type: 'boolean' }, job: { $ref: 'Job#' } } },
          ...ERROR_RESPONSES,
        },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const key = keyOf(request);
      const scope = tenantScope(request);
      if (scope !== null) {
        if (!TENANT_KINDS.includes(body.kind)) {
          throw new ApiError(403, 'FORBIDDEN', `a tenant key may submit ${TENANT_KINDS.join(', ')} runs; ${body.kind} runs need an operator key`, 'kind');
        }
        if (body.tenant !== undefined && body.tenant !== scope) throw new ApiError(400, 'TENANT_MISMATCH', 'a tenant key submits for its own tenant only', 'tenant');
        // Fair share interleaves tenants within a priority only: a tenant choosing its own would jump every other
        // tenant's queued runs.
        if (body.priority !== undefined && body.priority !== 0) {
          throw new ApiError(403, 'FORBIDDEN', 'a tenant key submits at the default priority (0); other priorities need an operator key', 'priority');
        }
        const payloadTenant = body.payload?.tenant;
        if (payloadTenant !== undefined && payloadTenant !== scope) {
          throw new ApiError(400, 'TENANT_MISMATCH', 'a tenant key submits for its own tenant only', 'payload.tenant');
        }
      }
      let runAt = body.runAt ? new Date(body.runAt) : undefined;
      // A time in the past is "now" for a tenant: with plain claim order (FAIR_CLAIM=false) an earlier run_at is claimed
      // first, so a backdated run would jump every other tenant's queued runs, as a priority would.
      if (scope !== null && runAt !== undefined && runAt.getTime() < Date.now()) runAt = undefined;
      const submit: EnqueueRequest = {
        kind: body.kind,
        payload: body.payload ?? {},
        tenantId: scope ?? body.tenant ?? null,
        ...(body.dedupeKey !== undefined ? { dedupeKey: body.dedupeKey } : {}),
        ...(body.priority !== undefined ? { priority: body.priority } : {}),
        ...(body.maxAttempts !== undefined ? { maxAttempts: body.maxAttempts } : {}),
        ...(runAt ? { runAt } : {}),
        ...(body.sizeBytes !== undefined ? { sizeBytes: body.sizeBytes } : {}),
      };
      if (body.kind === CSV_IMPORT_KIND) {
        // The request's own checks first (submit repeats them): a malformed request is refused without a call to S3.
        checkEnqueueRequest(submit);
        submit.sizeBytes = await csvUploadSize(deps, request.log, body, scope);
      }
      const { job, reused, estimate } = await submitRun(deps.pool, actorOf(request), submit, {
        registry: deps.registry,
        defaultMaxAttempts: deps.config.worker.defaultMaxAttempts,
        queue: deps.config.queue,
      }).catch((error: unknown) => {
        throw scope !== null && error instanceof QueueLimitError ? queueLimitForTenant(error) : error;
      });
      request.log.info({ jobId: job.id, kind: job.kind, reused, actor: key.name }, 'run submitted');
      const record = await getRunRecord(deps.pool, job.id);
      return reply.code(reused ? 200 : 201).send({ reused, job: { ...jobDetailView(job, record ?? {}, isOperatorKey(request)), estimate: estimateJson(estimate) } });
    },
  );
}
