// Looking at runs and steering them: jobs, show, cancel, requeue.
import type { Command } from 'commander';
import { InvalidArgumentError } from 'commander';
import { defaultRegistry } from '../../handlers/registry.js';
import type { RunErrors } from '../../handlers/types.js';
import { cancelRun, cliActor, requeueRun, resolveRun } from '../../actions/run-actions.js';
import { getRunRecord, type JobActionRecord, type Resolution } from '../../queue/job-actions.js';
import { JobNotFoundError, listJobs } from '../../queue/operator.js';
import { estimateJson, estimateRun } from '../../queue/estimate.js';
import { dependencyName } from '../../queue/outage.js';
import { JOB_STATES, type JobRow, type JobState } from '../../queue/types.js';
import { withDatabase } from '../context.js';
import { describeEstimate } from '../estimate-view.js';
import { formatDuration, formatTable, printJson, printLine } from '../output.js';
import { MAX_LIST_LIMIT, parseDurationMs, parseJobId, parseLimit, parseList } from '../parse.js';

function parseStates(value: string): JobState[] {
  const states = parseList(value);
  const unknown = states.filter((state) => !(JOB_STATES as readonly string[]).includes(state));
  if (unknown.length > 0) throw new InvalidArgumentError(`unknown state(s) ${unknown.join(', ')}; states: ${JOB_STATES.join(', ')}`);
  return states as JobState[];
}

export function summarizeProgress(progress: Record<string, unknown> | null): string {
  if (!progress) return '';
  const done = Number(progress.done ?? progress.itemsDone ?? NaN);
  const total = Number(progress.total ?? progress.itemsTotal ?? NaN);
  if (Number.isFinite(done) && Number.isFinite(total) && total > 0) {
    return `${done}/${total} (${Math.floor((100 * done) / total)}%)`;
  }
  return typeof progress.phase === 'string' ? progress.phase : '';
}

export function registerJobCommands(program: Command): void {
  program
    .command('jobs')
    .description('list runs, newest first (--oldest-first: the longest waiting first)')
    .option('--state <list>', `filter by state(s): ${JOB_STATES.join(', ')}`, parseStates)
    .option('--kind <list>', 'filter by kind(s)', parseList)
    .option('--tenant <id>', 'filter by tenant')
    .option('--since <duration>', 'created within this long, e.g. 2h, 7d', parseDurationMs)
    .option('--limit <n>', `at most this many rows (up to ${MAX_LIST_LIMIT})`, parseLimit, 50)
    .option('--oldest-first', 'the oldest runs first (with --state queued: the ones that have waited longest)')
    .option('--json', 'print JSON only')
    .action(async (options: { state?: JobState[]; kind?: string[]; tenant?: string; since?: number; limit: number; oldestFirst?: boolean; json?: boolean }) => {
      const jobs = await withDatabase((pool) =>
        listJobs(pool, {
          ...(options.state ? { states: options.state } : {}),
          ...(options.kind ? { kinds: options.kind } : {}),
          ...(options.tenant ? { tenantId: options.tenant } : {}),
          ...(options.since !== undefined ? { since: new Date(Date.now() - options.since) } : {}),
          limit: options.limit,
          oldestFirst: options.oldestFirst ?? false,
        }),
      );
      if (options.json) return printJson(jobs);
      if (jobs.length === 0) return printLine('No jobs match.');
      printLine(
        formatTable(
          ['id', 'kind', 'state', 'tenant', 'attempts', 'progress', 'created', 'age'],
          jobs.map((job) => [
            job.id, job.kind, job.state + (job.outageDependency ? ` (waiting for ${dependencyName(job.outageDependency)})` : ''),
            job.tenantId, `${job.attempts}/${job.maxAttempts}`,
            summarizeProgress(job.progress), job.createdAt, formatDuration(Date.now() - job.createdAt.getTime()),
          ]),
        ),
      );
    });

  program
    .command('show <id>')
    .description('one run in full: state, attempts, lease, progress, result, last error, failed items/rows')
    .option('--errors <n>', `list at most this many failed items or rows (up to ${MAX_LIST_LIMIT}; all are counted)`, parseLimit, 10)
    .option('--json', 'print JSON only')
    .action(async (id: string, options: { errors: number; json?: boolean }) => {
      const { job, errors, record, estimate } = await withDatabase(async (pool) => {
        const jobId = parseJobId(id);
        const record = await getRunRecord(pool, jobId);
        if (!record) throw new JobNotFoundError(jobId);
        const job = record.job;
        // Per-item/row failures come from the kind's handler (the `listErrors` of the handler contract).
        const handler = defaultRegistry().get(job.kind);
        const errors = handler?.listErrors ? await handler.listErrors(pool, job.id, { limit: options.errors, offset: 0 }) : null;
        return { job, errors, record, estimate: await estimateRun(pool, job) };
      });
      if (options.json) return printJson({ ...job, resolution: record.resolution, actions: record.actions, errors, estimate: estimateJson(estimate) });
      printLine(describeJob(job));
      const expected = describeEstimate(estimate);
      if (expected) printLine(`${'estimate'.padEnd(11)} ${expected}`);
      const history = describeHistory(record.actions, record.resolution);
      if (history) printLine(history);
      if (errors) printLine(describeRunErrors(errors));
    });

  program
    .command('cancel <id>')
    .description('cancel a queued, parked or running run (a running one stops at its next item boundary)')
    .option('--note <text>', 'why (kept in the run history; the run\'s tenant reads it too)')
    .option('--json', 'print JSON only')
    .action(async (id: string, options: { note?: string; json?: boolean }) => {
      const { job, pending } = await withDatabase((pool) => cancelRun(pool, cliActor(), parseJobId(id), options.note));
      if (options.json) return printJson({ id: job.id, state: job.state, cancelPending: pending });
      printLine(
        pending
          ? `Job ${job.id} is running: cancel requested; its worker stops it at the next item boundary.`
          : `Job ${job.id} canceled.`,
      );
    });

  program
    .command('requeue <id>')
    .description('run a failed, dead or canceled run again (same run record)')
    .option('--reset-attempts', 'count attempts from zero again')
    .option('--note <text>', 'why (kept in the run history; the run\'s tenant reads it too)')
    .option('--json', 'print JSON only')
    .action(async (id: string, options: { resetAttempts?: boolean; note?: string; json?: boolean }) => {
      const job = await withDatabase((pool) =>
        requeueRun(pool, cliActor(), parseJobId(id), { resetAttempts: options.resetAttempts ?? false, note: options.note }),
      );
      if (options.json) return printJson({ id: job.id, state: job.state, attempts: job.attempts, maxAttempts: job.maxAttempts });
      printLine(`Job ${job.id} requeued (attempts ${job.attempts}/${job.maxAttempts}).`);
    });

  program
    .command('resolve <id>')
    .description('mark a failed, dead or partial run as handled: it leaves the dead list and gauge and stays in history')
    .requiredOption('--note <text>', 'why the run needs nothing more (kept with who and when; the run\'s tenant reads it too)')
    .option('--json', 'print JSON only')
    .action(async (id: string, options: { note: string; json?: boolean }) => {
      const actor = cliActor();
      const job = await withDatabase((pool) => resolveRun(pool, actor, parseJobId(id), options.note));
      if (options.json) return printJson({ id: job.id, state: job.state, resolvedBy: actor.name, note: options.note });
      printLine(`Job ${job.id} (${job.state}) resolved by ${actor.name}: ${options.note}`);
    });
}

/** The resolution and the history of actions on a run, as `show` prints them (empty when there is none). */
export function describeHistory(actions: JobActionRecord[], resolution: Resolution | null): string {
  const out: string[] = [];
  if (resolution) out.push(`${'resolved'.padEnd(11)} ${resolution.at.toISOString()} by ${resolution.by}: ${resolution.note}`);
  if (actions.length > 0) {
    out.push('history');
    out.push(
      formatTable(
        ['at', 'action', 'actor', 'state after', 'note'],
        actions.map((action) => [action.at, action.action, action.actor, action.stateAfter, action.note]),
      ).replace(/^/gm, '  '),
    );
  }
  return out.join('\n');
}

export function describeJob(job: JobRow): string {
  const lines: Array<[string, unknown]> = [
    ['id', job.id],
    ['kind', job.kind],
    ['state', job.state + (job.cancelRequestedAt && job.state === 'running' ? ' (cancel requested)' : '')],
    ['tenant', job.tenantId],
    ['attempts', `${job.attempts}/${job.maxAttempts}`],
    ['priority', job.priority],
    ['dedupe key', job.dedupeKey],
    ['created', job.createdAt.toISOString()],
    ['run at', job.runAt.toISOString()],
    ['started', job.startedAt?.toISOString()],
    ['finished', job.finishedAt?.toISOString()],
    ['lease', job.leaseOwner ? `${job.leaseOwner} until ${job.leaseExpiresAt?.toISOString()}` : undefined],
    ['outage', describeOutage(job)],
    ['progress', summarizeProgress(job.progress) || undefined],
  ];
  const out = lines.filter(([, value]) => value !== undefined && value !== null).map(([name, value]) => `${name.padEnd(11)} ${value}`);
  out.push(`${'payload'.padEnd(11)} ${JSON.stringify(job.payload)}`);
  if (job.progress) out.push(`${'progress'.padEnd(11)} ${JSON.stringify(job.progress)}`);
  if (job.result) out.push(`${'result'.padEnd(11)} ${JSON.stringify(job.result)}`);
  if (job.lastError) {
    const e = job.lastError;
    out.push(`${'last error'.padEnd(11)} [${e.class} ${e.code}, attempt ${e.attempt}, ${e.at}] ${e.message}`);
    if (e.context) out.push(`${'  context'.padEnd(11)} ${JSON.stringify(e.context)}`);
  }
  return out.join('\n');
}

/** The dependency outage a run waits out (queue/outage.ts), e.g. "waiting for S3 since … (4m 10s) …". */
export function describeOutage(job: JobRow, now = Date.now()): string | undefined {
  if (!job.outageDependency || !job.outageStartedAt) return undefined;
  const lasted = formatDuration(now - job.outageStartedAt.getTime());
  const next = job.state === 'queued' ? `; next try at ${job.runAt.toISOString()}` : '';
  return (
    `waiting for ${dependencyName(job.outageDependency)} since ${job.outageStartedAt.toISOString()} (${lasted})${next}; ` +
    'attempts are not counted; ends dead (DEPENDENCY_OUTAGE) once the outage outlasts DEPENDENCY_OUTAGE_BUDGET_MS'
  );
}

/** The failed items or rows of a run, as `show` lists them. */
export function describeRunErrors(errors: RunErrors): string {
  if (errors.total === 0) return `${'errors'.padEnd(11)} none`;
  const head = `${'errors'.padEnd(11)} ${errors.total} failed item(s)/row(s)` +
    (errors.rows.length < errors.total ? `, newest ${errors.rows.length} below (bulk-import errors <id> lists all)` : '');
  return `${head}\n${formatTable(errors.columns, errors.rows.map((row) => errors.columns.map((column) => row[column])))}`;
}
