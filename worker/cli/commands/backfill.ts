// `bulk-import backfill list|status|undo|discard`: which backfills exist, how many rows still lack the field (the
// pre-check before a run and the proof of 100% after it), and the rollback of a run that saved before-images.
// Runs are enqueued with `bulk-import enqueue backfill --payload …`.
import type { Command } from 'commander';
import { BATCH_TRIES } from '../../backfills/batch-sizer.js';
import { DEFAULT_BATCH_TIMEOUT_MS, MAX_BATCH_TIMEOUT_MS, MIN_BATCH_TIMEOUT_MS, type CompiledBackfill } from '../../backfills/compile.js';
import { defaultBackfills } from '../../backfills/registry.js';
import { countRows } from '../../backfills/statements.js';
import { countBeforeImages, discardBeforeImages, undoBackfill, type BeforeImageScope } from '../../backfills/undo.js';
import { BACKFILL_KIND } from '../../handlers/kinds.js';
import { getJob, listJobs } from '../../queue/operator.js';
import type { Pool } from '../../db/pool.js';
import type { JobRow } from '../../queue/types.js';
import { withDatabase } from '../context.js';
import { formatTable, printJson, printLine, terminalSafe } from '../output.js';
import { integerIn } from '../parse.js';
import { summarizeProgress } from './jobs.js';

/** How far back `status` looks for the latest run of the backfill. */
const RECENT_RUNS = 200;
/** `undo --batch-size`: rows per transaction. */
const UNDO_BATCH_SIZE = { default: 5_000, min: 1, max: 100_000 };

interface BeforeImageOptions {
  tenant?: string;
  job?: string;
  dryRun?: boolean;
  json?: boolean;
}

interface UndoOptions extends BeforeImageOptions {
  batchSize: number;
  batchTimeoutMs: number;
}

interface DiscardOptions extends BeforeImageOptions {
  all?: boolean;
}

function beforeImageScope(compiled: CompiledBackfill, options: BeforeImageOptions): BeforeImageScope {
  if (options.tenant !== undefined && !compiled.tenant) {
    throw new Error(`backfill ${compiled.definition.name} has no tenant column: --tenant cannot be used`);
  }
  let jobId: number | null = null;
  if (options.job !== undefined) {
    if (!/^[1-9]\d{0,15}$/.test(options.job)) throw new Error(`--job must be a job id, not "${options.job}"`);
    jobId = Number(options.job);
  }
  return { tenantId: options.tenant ?? null, jobId };
}

interface StatusOptions {
  tenant?: string;
  json?: boolean;
  check?: boolean;
}

export function registerBackfillCommands(program: Command): void {
  const backfill = program
    .command('backfill')
    .description('backfills: list them, and count the rows that still lack the field (enqueue runs with `enqueue backfill`)');

  backfill
    .command('list')
    .description('the backfills this build knows')
    .option('--json', 'print JSON only')
    .action((options: { json?: boolean }) => {
      const rows = defaultBackfills().list().map(({ definition, batchSize, parallelism }) => ({
        name: definition.name,
        table: definition.table,
        column: definition.targetColumn,
        from: definition.sourceColumns,
        compute: definition.compute.language,
        tenantColumn: definition.tenantColumn ?? null,
        defaultBatchSize: batchSize,
        defaultParallelism: parallelism,
        description: definition.description,
      }));
      if (options.json) return printJson(rows);
      printLine(
        formatTable(
          ['name', 'fills', 'from', 'compute', 'batch', 'streams', 'description'],
          rows.map((row) => [
            row.name, `${row.table}.${row.column}`, row.from.join(', '), row.compute, row.defaultBatchSize,
            row.defaultParallelism, row.description,
          ]),
        ),
      );
    });

  backfill
    .command('status <name>')
    .description('how many rows still lack the field (one scan of the table), and the latest run')
    .option('--tenant <id>', "only this tenant's rows")
    .option('--check', 'exit with status 1 unless every row has the field')
    .option('--json', 'print JSON only')
    .action(async (name: string, options: StatusOptions) => {
      const compiled = defaultBackfills().require(name);
      if (options.tenant !== undefined && !compiled.tenant) {
        throw new Error(`backfill ${name} has no tenant column: --tenant cannot be used`);
      }
      const tenantId = options.tenant ?? null;
      const { counts, latest } = await withDatabase(async (pool) => ({
        counts: await countRows(pool, compiled, { tenantId }),
        latest: latestRun(await listJobs(pool, { kinds: [BACKFILL_KIND], limit: RECENT_RUNS }), name, tenantId),
      }));
      const filledPercent = counts.rows === 0 ? 100 : (100 * (counts.rows - counts.missing)) / counts.rows;
      const status = {
        backfill: name,
        table: compiled.definition.table,
        column: compiled.definition.targetColumn,
        tenant: tenantId,
        rows: counts.rows,
        missing: counts.missing,
        complete: counts.missing === 0,
        filledPercent: Math.floor(filledPercent * 100) / 100,
        latestRun: latest
          ? { id: latest.id, state: latest.state, dryRun: latest.payload.dryRun === true, progress: latest.progress, result: latest.result }
          : null,
      };
      if (options.json) printJson(status);
      else {
        printLine(`backfill   ${name} (${status.table}.${status.column}${tenantId === null ? '' : `, tenant ${tenantId}`})`);
        printLine(`rows       ${counts.rows}`);
        printLine(`missing    ${counts.missing} (${status.filledPercent}% filled)${status.complete ? ' — complete' : ''}`);
        if (tenantId !== null && counts.rows === 0) printLine(`note       tenant ${tenantId} has no rows in ${status.table}`);
        if (latest) {
          const kind = latest.payload.dryRun === true ? 'dry run' : 'run';
          printLine(`latest     ${kind} ${latest.id}, ${latest.state}${latest.state === 'running' ? `, ${summarizeProgress(latest.progress)}` : ''}`);
        } else printLine('latest     no run yet');
      }
      // A tenant with no rows (a mistyped id) proves nothing: 0 missing of 0 rows is no check passed.
      if (options.check && tenantId !== null && counts.rows === 0) {
        throw new Error(`tenant ${tenantId} has no rows in ${status.table}: nothing to check (is the tenant id right?)`);
      }
      if (options.check && !status.complete) {
        throw new Error(`${counts.missing} row(s) of ${status.table} still lack ${status.column}`);
      }
    });

  backfill
    .command('undo <name>')
    .description(
      'restore the values a run with "saveBeforeImage": true overwrote, on rows that still hold what it wrote (--dry-run: count only)',
    )
    .option('--tenant <id>', "only this tenant's rows")
    .option('--job <id>', 'only the rows this run wrote')
    .option(
      '--batch-size <n>',
      `rows per transaction (${UNDO_BATCH_SIZE.min}-${UNDO_BATCH_SIZE.max})`,
      integerIn(UNDO_BATCH_SIZE.min, UNDO_BATCH_SIZE.max),
      UNDO_BATCH_SIZE.default,
    )
    .option(
      '--batch-timeout-ms <ms>',
      `statement timeout of a batch (${MIN_BATCH_TIMEOUT_MS}-${MAX_BATCH_TIMEOUT_MS}): a batch that outlasts it is rolled back and tried again with half the rows`,
      integerIn(MIN_BATCH_TIMEOUT_MS, MAX_BATCH_TIMEOUT_MS),
      DEFAULT_BATCH_TIMEOUT_MS,
    )
    .option('--dry-run', 'count what would be restored, change nothing')
    .option('--json', 'print JSON only')
    .action(async (name: string, options: UndoOptions) => {
      const compiled = defaultBackfills().require(name);
      const scope = beforeImageScope(compiled, options);
      const { batchSize, batchTimeoutMs } = options;
      await withDatabase(async (pool) => {
        if (scope.jobId !== null) await requireRunWithImages(pool, compiled, scope.jobId, options.tenant);
        if (options.dryRun) {
          const counts = await countBeforeImages(pool, compiled, scope);
          if (options.json) return printJson({ dryRun: true, ...counts });
          printLine(`backfill     ${name} (${compiled.definition.table}.${compiled.definition.targetColumn})`);
          printLine(`saved        ${counts.saved} before-image(s)`);
          printLine(`would restore ${counts.restorable}; left alone: ${counts.changed} changed since, ${counts.deleted} deleted`);
          return;
        }
        const outcome = await undoBackfill(pool, compiled, {
          ...scope,
          batchSize,
          batchTimeoutMs,
          // On stderr in both modes (stdout's JSON stays the outcome).
          onRetry: (retry) =>
            process.stderr.write(
              `undo batch after key ${terminalSafe(JSON.stringify(retry.afterKey))} ${retry.reason === 'lock' ? 'waited for a locked row past its lock timeout (or met a deadlock)' : 'of one row outlasted its batch timeout'}; trying it again (try ${retry.try + 1} of ${BATCH_TRIES})\n`,
            ),
        });
        if (options.json) return printJson(outcome);
        printLine(`restored ${outcome.restored} row(s) of ${outcome.table}.${outcome.column} to their values before backfill ${name}`);
        if (outcome.batchTimeouts > 0) {
          printLine(`${outcome.batchTimeouts} batch(es) outlasted the ${batchTimeoutMs} ms batch timeout and were tried again with half the rows; ended at ${outcome.finalBatchSize} row(s) a batch`);
        }
        if (outcome.skipped > 0) {
          printLine(`left alone ${outcome.skipped} row(s) changed or deleted since the backfill wrote them (before-images kept): ${outcome.skippedKeys.join(', ')}`);
        }
      });
    });

  backfill
    .command('discard <name>')
    .description(
      'delete the before-images of a backfill once its run is accepted (no undo after this): --job <id> for one run, --all for every run (--dry-run: count only)',
    )
    .option('--tenant <id>', "only this tenant's rows")
    .option('--job <id>', 'only the rows this run wrote')
    .option('--all', 'the before-images of every run of the backfill')
    .option('--dry-run', 'count what would be discarded, change nothing')
    .option('--json', 'print JSON only')
    .action(async (name: string, options: DiscardOptions) => {
      const compiled = defaultBackfills().require(name);
      if (options.job === undefined && !options.all) {
        throw new Error('discard deletes before-images for good: name the run (--job <id>), or every run of the backfill (--all)');
      }
      if (options.job !== undefined && options.all) throw new Error('--job and --all cannot be used together');
      const scope = beforeImageScope(compiled, options);
      await withDatabase(async (pool) => {
        if (scope.jobId !== null) await requireRunWithImages(pool, compiled, scope.jobId, options.tenant);
        if (options.dryRun) {
          const counts = await countBeforeImages(pool, compiled, scope);
          if (options.json) return printJson({ dryRun: true, backfill: name, wouldDiscard: counts.saved, restorable: counts.restorable });
          printLine(`would discard ${counts.saved} before-image(s) of backfill ${name} (an undo would restore ${counts.restorable} of their rows now)`);
          return;
        }
        const deleted = await discardBeforeImages(pool, compiled, scope);
        if (options.json) printJson({ backfill: name, discarded: deleted });
        else printLine(`discarded ${deleted} before-image(s) of backfill ${name}`);
      });
    });
}

/**
 * `--job <id>` names a run of this backfill that saved before-images: another id (a typo, the dry run's id from the
 * same procedure, a run without saveBeforeImage) would otherwise "restore 0 rows" or "discard 0" and exit 0.
 */
async function requireRunWithImages(pool: Pool, compiled: CompiledBackfill, jobId: number, tenant: string | undefined): Promise<void> {
  const name = compiled.definition.name;
  const job = await getJob(pool, jobId);
  if (!job) {
    // Retention deletes finished runs, and their before-images stay (no foreign key): an id they name is a run's.
    const { rows } = await pool.query('SELECT 1 FROM backfill_before_images WHERE backfill = $1 AND job_id = $2 LIMIT 1', [name, jobId]);
    if (rows.length === 0) throw new Error(`job ${jobId} does not exist, and no before-image of backfill ${name} names it`);
    return;
  }
  if (job.kind !== BACKFILL_KIND || job.payload.name !== name) {
    throw new Error(`job ${jobId} is not a run of backfill ${name} (it is a ${job.kind} run${job.kind === BACKFILL_KIND ? ` of ${String(job.payload.name)}` : ''})`);
  }
  if (job.payload.dryRun === true) {
    throw new Error(`job ${jobId} is a dry run of backfill ${name}: it wrote nothing and saved no before-images; give the id of the run that wrote`);
  }
  if (job.payload.saveBeforeImage !== true) {
    throw new Error(`job ${jobId} ran without "saveBeforeImage": it saved no before-images, so there is nothing to undo or discard (docs/RUNBOOK.md: restore from the snapshot)`);
  }
  const runTenant = tenantOf(job);
  if (tenant !== undefined && runTenant !== null && runTenant !== tenant) {
    throw new Error(`job ${jobId} wrote tenant ${runTenant}'s rows, not those of --tenant ${tenant}`);
  }
}

/** The tenant whose rows a backfill run wrote: its payload's, or the job's; null for every tenant's. */
function tenantOf(job: JobRow): string | null {
  return (job.payload.tenant as string | undefined) ?? job.tenantId ?? null;
}

function latestRun(jobs: JobRow[], name: string, tenantId: string | null): JobRow | undefined {
  return jobs.find((job) => job.payload.name === name && tenantOf(job) === tenantId);
}
