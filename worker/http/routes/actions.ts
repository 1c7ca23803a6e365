// POST /v1/jobs/{id}/finalize|reject|cancel|requeue|resolve. The run must be visible to the key first (another
// tenant's run is a 404, like a run that does not exist); then the role: a tenant key may finalize or reject its own
// reviews, an operator key may do everything. Each action lands in the run's history with the key's name.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { cancelRun, finalizeRun, rejectRun, requeueRun, requireVisibleJob, resolveRun } from '../../actions/run-actions.js';
import { getRunRecord } from '../../queue/job-actions.js';
import type { JobRow } from '../../queue/types.js';
import { ERROR_RESPONSES, JOB_ID_PARAMS, NOTE_BODY } from '../schemas.js';
import { actorOf, isOperatorKey, requireOperator, type ApiDependencies } from '../server.js';
import { jobDetailView } from '../views.js';

type ActionBody = { note?: string; resetAttempts?: boolean; excludeRows?: string; validatedAt?: string };
type ActionRequest = FastifyRequest<{ Params: { id: number }; Body: ActionBody | undefined }>;

interface ActionRoute {
  name: 'finalize' | 'reject' | 'cancel' | 'requeue' | 'resolve';
  summary: string;
  operatorOnly: boolean;
  body?: Record<string, unknown>;
  run(deps: ApiDependencies, request: ActionRequest): Promise<JobRow>;
}

const ACTIONS: ActionRoute[] = [
  {
    name: 'finalize',
    summary: 'approve a CSV import in review_ready: a worker writes its valid rows',
    operatorOnly: false,
    body: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: {
        ...NOTE_BODY.properties,
        excludeRows: {
          type: 'string',
          maxLength: 100_000,
          description: 'rows not to write, by line number: "12,40-90" (exported with the failed rows)',
        },
        validatedAt: {
          type: 'string',
          format: 'date-time',
          maxLength: 40,
          description:
            "the validation approved (the run's result.validatedAt): refused with 409 REVIEW_STALE when the run was validated again since",
        },
      },
    },
    run: (deps, request) =>
      finalizeRun(deps.pool, actorOf(request), request.params.id, request.body?.note, {
        excludeRows: request.body?.excludeRows,
        validatedAt: request.body?.validatedAt,
      }),
  },
  {
    name: 'reject',
    summary: 'reject a CSV import in review_ready: it ends canceled, nothing written',
    operatorOnly: false,
    run: (deps, request) => rejectRun(deps.pool, actorOf(request), request.params.id, request.body?.note),
  },
  {
    name: 'cancel',
    summary: 'cancel a queued, parked or running run (a running one stops at its next item boundary)',
    operatorOnly: true,
    run: async (deps, request) => (await cancelRun(deps.pool, actorOf(request), request.params.id, request.body?.note)).job,
  },
  {
    name: 'requeue',
    summary: 'run a failed, dead or canceled run again (same run record)',
    operatorOnly: true,
    body: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: { ...NOTE_BODY.properties, resetAttempts: { type: 'boolean', description: 'count attempts from zero again' } },
    },
    run: (deps, request) =>
      requeueRun(deps.pool, actorOf(request), request.params.id, { resetAttempts: request.body?.resetAttempts ?? false, note: request.body?.note }),
  },
  {
    name: 'resolve',
    summary: 'mark a failed, dead or partial run as handled, with a note: it leaves the dead list and gauge, and stays in history',
    operatorOnly: true,
    body: { ...NOTE_BODY, type: 'object', required: ['note'], properties: { note: { type: 'string', minLength: 1, maxLength: 2000 } } },
    run: (deps, request) => resolveRun(deps.pool, actorOf(request), request.params.id, request.body!.note!),
  },
];

export function registerActionRoutes(app: FastifyInstance, deps: ApiDependencies): void {
  for (const action of ACTIONS) {
    app.post<{ Params: { id: number }; Body: ActionBody | undefined }>(
      `/v1/jobs/:id/${action.name}`,
      {
        schema: {
          tags: ['actions'],
          summary: action.summary + (action.operatorOnly ? ' (operator keys)' : ''),
          params: JOB_ID_PARAMS,
          body: action.body ?? NOTE_BODY,
          response: { 200: { $ref: 'Job#' }, ...ERROR_RESPONSES },
        },
      },
      async (request) => {
        const actor = actorOf(request);
        await requireVisibleJob(deps.pool, actor, request.params.id);
        if (action.operatorOnly) requireOperator(request, action.name);
        const job = await action.run(deps, request);
        request.log.info({ jobId: job.id, action: action.name, actor: actor.name, state: job.state }, 'run action');
        const record = await getRunRecord(deps.pool, job.id);
        return jobDetailView(record?.job ?? job, record ?? {}, isOperatorKey(request));
      },
    );
  }
}
