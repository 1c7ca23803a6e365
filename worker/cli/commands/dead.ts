// The dead-letter state: list dead runs, replay them (chosen ids or all), purge old ones.
import type { Command } from 'commander';
import { cliActor, purgeDead, replayDead } from '../../actions/run-actions.js';
import { listDeadJobs } from '../../queue/dead-letters.js';
import type { JobRow } from '../../queue/types.js';
import { withDatabase } from '../context.js';
import { formatDuration, formatTable, printJson, printLine, terminalSafe } from '../output.js';
import { MAX_LIST_LIMIT, parseDurationMs, parseJobId, parseLimit, parseList } from '../parse.js';

function deadJobJson(job: JobRow) {
  return {
    id: job.id,
    kind: job.kind,
    tenantId: job.tenantId,
    attempts: job.attempts,
    maxAttempts: job.maxAttempts,
    diedAt: job.finishedAt,
    lastError: job.lastError,
  };
}

export function registerDeadCommands(program: Command): void {
  const dead = program.command('dead').description('runs in the dead-letter state (attempts used up): list, replay, purge');

  dead
    .command('list')
    .description('dead runs, most recently dead first, with their last error')
    .option('--kind <list>', 'only these kinds', parseList)
    .option('--limit <n>', `at most this many rows (up to ${MAX_LIST_LIMIT})`, parseLimit, 100)
    .option('--json', 'print JSON only')
    .action(async (options: { kind?: string[]; limit: number; json?: boolean }) => {
      const jobs = await withDatabase((pool) => listDeadJobs(pool, { kinds: options.kind, limit: options.limit }));
      if (options.json) return printJson(jobs.map(deadJobJson));
      if (jobs.length === 0) return printLine('No dead jobs.');
      printLine(
        formatTable(
          ['id', 'kind', 'tenant', 'attempts', 'dead for', 'error', 'message'],
          jobs.map((job) => [
            job.id, job.kind, job.tenantId, `${job.attempts}/${job.maxAttempts}`,
            job.finishedAt ? formatDuration(Date.now() - job.finishedAt.getTime()) : undefined,
            job.lastError?.code, truncate(job.lastError?.message, 80),
          ]),
        ),
      );
      printLine(`\nReplay: bulk-import dead replay <id…> | --all   ·   details: bulk-import show <id>`);
    });

  dead
    .command('replay [ids...]')
    .description('run dead runs again as the same run records: the given ids (all must be dead), or --all')
    .option('--all', 'every dead run (optionally only --kind)')
    .option('--kind <list>', 'with --all: only these kinds', parseList)
    .option('--reset-attempts', 'count attempts from zero again (default: one more attempt each)')
    .option('--note <text>', 'why (kept in each run history; the runs\' tenants read it too)')
    .option('--json', 'print JSON only')
    .action(async (ids: string[], options: { all?: boolean; kind?: string[]; resetAttempts?: boolean; note?: string; json?: boolean }) => {
      if (options.all && ids.length > 0) throw new Error('dead replay: give job ids or --all, not both');
      if (!options.all && ids.length === 0) throw new Error('dead replay: give the ids of dead jobs to replay, or --all');
      if (options.kind && !options.all) throw new Error('dead replay: --kind only applies with --all');
      const jobIds = ids.map(parseJobId);
      const resetAttempts = options.resetAttempts ?? false;
      const { replayed, skipped } = await withDatabase((pool) =>
        replayDead(pool, cliActor(), { ids: jobIds, all: options.all ?? false, kinds: options.kind, resetAttempts, note: options.note }),
      );
      // Runs left dead are said on stderr in both modes (stdout's JSON stays the list of replayed runs).
      for (const run of skipped) {
        // The dedupe key is the submitter's (a tenant's): JSON.stringify leaves C1 controls and bidi marks as they are.
        process.stderr.write(`left dead: job ${run.id} (${run.kind}): its dedupe key ${terminalSafe(JSON.stringify(run.dedupeKey))} is in use by job ${run.heldBy}\n`);
      }
      if (options.json) {
        return printJson(replayed.map((job) => ({ id: job.id, kind: job.kind, state: job.state, attempts: job.attempts, maxAttempts: job.maxAttempts })));
      }
      if (replayed.length === 0) return printLine(skipped.length > 0 ? 'No dead job could be replayed.' : 'No dead jobs to replay.');
      printLine(`Replayed ${replayed.length} dead job(s); they are queued again:`);
      printLine(formatTable(['id', 'kind', 'state', 'attempts'], replayed.map((job) => [job.id, job.kind, job.state, `${job.attempts}/${job.maxAttempts}`])));
    });

  dead
    .command('purge')
    .description('delete dead runs that died longer ago than --older-than (their item records go with them)')
    .requiredOption('--older-than <duration>', 'dead for longer than this, e.g. 7d, 12h', parseDurationMs)
    .option('--kind <list>', 'only these kinds', parseList)
    .option('--dry-run', 'list what would be deleted; delete nothing')
    .option('--note <text>', 'why (kept in the history of each purged run)')
    .option('--json', 'print JSON only')
    .action(async (options: { olderThan: number; kind?: string[]; dryRun?: boolean; note?: string; json?: boolean }) => {
      // A purge of many runs goes in batches, each committed: the running total on stderr (stdout stays the result).
      const purged = await withDatabase((pool) =>
        purgeDead(
          pool,
          cliActor(),
          { olderThanMs: options.olderThan, kinds: options.kind, dryRun: options.dryRun ?? false, note: options.note ?? null },
          (soFar) => process.stderr.write(`purged ${soFar} dead job(s) so far…\n`),
        ),
      );
      if (options.json) return printJson({ dryRun: options.dryRun ?? false, count: purged.length, jobs: purged });
      const verb = options.dryRun ? 'Would delete' : 'Deleted';
      printLine(`${verb} ${purged.length} dead job(s) dead for longer than ${formatDuration(options.olderThan)}.`);
      if (purged.length > 0) {
        printLine(formatTable(['id', 'kind', 'tenant', 'died'], purged.map((job) => [job.id, job.kind, job.tenantId, job.finishedAt])));
      }
    });
}

function truncate(text: string | undefined, length: number): string | undefined {
  if (text === undefined) return undefined;
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}
