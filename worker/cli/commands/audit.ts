// `audit`: objects in the bucket without a documents row, and documents rows without an object; `--fix` deletes
// old orphan objects only (see worker/audit/documents-audit.ts for why that is the only safe direction).
// `audit start|runs|findings|repair`: the data-consistency audit job kind (worker/audit/consistency-audit.ts) — enqueue
// one, list runs with their finding counts, list or export one run's findings, and repair missing references.
import { finished } from 'node:stream/promises';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { cliActor, submitRun } from '../../actions/run-actions.js';
import { AUDIT_CHECK_GROUPS } from '../../audit/consistency-audit.js';
import { CHECKS, countFindings, pageOfFindings, type CheckName } from '../../audit/consistency-store.js';
import { DEFAULT_DOCUMENTS_PREFIX, documentsPrefixProblem } from '../../audit/documents-prefix.js';
import { repairMissingReferences } from '../../audit/reference-repair.js';
import { escapeFormula } from '../../imports/csv/formula-escape.js';
import { csvFieldFor } from '../../imports/csv/row-errors.js';
import { auditDocuments, type AuditProgress, type AuditReport } from '../../audit/documents-audit.js';
import { requireBucket } from '../../config.js';
import type { Pool } from '../../db/pool.js';
import { AUDIT_KIND } from '../../handlers/kinds.js';
import { listJobs, requireJob } from '../../queue/operator.js';
import type { JobRow } from '../../queue/types.js';
import { createS3Client } from '../../storage/s3-client.js';
import { withDatabase } from '../context.js';
import { formatBytes, formatDuration, formatTable, printJson, printLine, terminalSafeLines } from '../output.js';
import { integerIn, MAX_LIST_LIMIT, parseDurationMs, parseJobId, parseLimit } from '../parse.js';

/** Exit code when the audit found something (0: bucket and table agree). */
export const AUDIT_FINDINGS_EXIT_CODE = 2;
/**
 * Exit code of `audit repair` when some source files could not be read now (S3 unavailable, throttled, not configured,
 * access refused): their findings stay open. sysexits' EX_UNAVAILABLE, as for a database that does not answer.
 */
const REPAIR_UNAVAILABLE_EXIT_CODE = 69;

interface AuditCommandOptions {
  bucket?: string;
  prefix?: string;
  limit: number;
  fix?: boolean;
  minAge: number;
  json?: boolean;
}

export function registerAuditCommand(program: Command): void {
  const audit = program
    .command('audit')
    .description(
      `compare the bucket with the documents table: objects without a row, rows without an object. Exit 0 when ` +
        `they agree, ${AUDIT_FINDINGS_EXIT_CODE} when something is left to look at`,
    )
    .option('--bucket <name>', 'bucket to audit (default S3_BUCKET)')
    .option('--prefix <prefix>', 'only keys under this prefix, e.g. imports/ (required with --fix; default the whole bucket)')
    .option('--limit <n>', `list at most this many findings of each kind (up to ${MAX_LIST_LIMIT}; all are counted)`, parseLimit, 50)
    .option('--fix', 'delete orphan objects (no row) older than --min-age under --prefix; rows are never changed')
    .addOption(
      new Option('--min-age <duration>', 'with --fix: only objects last written longer ago than this')
        .argParser(parseDurationMs)
        .default(86_400_000, '24h'),
    )
    .option('--json', 'print JSON only')
    // `audit`'s own options go before a subcommand's name, so `audit findings <id> --limit 500` is the subcommand's
    // --limit: commander otherwise hands an option the parent also knows to the parent, wherever it stands.
    .enablePositionalOptions()
    .action(async (options: AuditCommandOptions) => {
      const prefix = options.prefix ?? '';
      if (options.fix && prefix === '') {
        throw new Error(
          'audit --fix needs --prefix: the bucket may hold objects that are not documents (CSV uploads, backend files), ' +
            'so deletions are limited to the documents key prefix, e.g. --prefix imports/',
        );
      }
      const report = await withDatabase(async (pool, config) => {
        const bucket = options.bucket ?? requireBucket(config);
        if (options.fix) {
          const running = await listJobs(pool, { states: ['running'], limit: 10 });
          if (running.length > 0) {
            throw new Error(
              `audit --fix refuses to run while jobs are running (${running.map((job) => `${job.id} ${job.kind}`).join(', ')}): ` +
                'an import may be between its upload and its commit. Run it again once `bulk-import jobs --state running` is empty',
            );
          }
        }
        const s3 = createS3Client({ region: config.awsRegion, endpoint: config.s3Endpoint, forcePathStyle: config.s3ForcePathStyle });
        try {
          return await auditDocuments({
            pool,
            s3,
            bucket,
            prefix,
            limit: options.limit,
            fix: options.fix ? { minAgeMs: options.minAge } : undefined,
            onProgress: process.stderr.isTTY && !options.json ? showProgress : undefined,
          });
        } finally {
          if (process.stderr.isTTY && !options.json) process.stderr.write('\n');
          s3.destroy();
        }
      });
      const remaining = report.rowsWithoutObject.total + report.orphanObjects.total - (report.fix?.deleted ?? 0);
      process.exitCode = remaining > 0 ? AUDIT_FINDINGS_EXIT_CODE : 0;
      if (options.json) return printJson(report);
      printReport(report);
    });
  registerConsistencyAuditCommands(audit);
}

interface JsonOption {
  json?: boolean;
}

/** --json given to the subcommand or to `audit` itself (commander hands a shared option name to the parent). */
function wantsJson(command: Command): boolean {
  return (command.optsWithGlobals() as JsonOption).json === true;
}

function registerConsistencyAuditCommands(audit: Command): void {
  audit
    .command('start')
    .description(`enqueue a data-consistency audit run (checks: ${AUDIT_CHECK_GROUPS.join(', ')}); the stack runs one nightly`)
    .option('--tenant <id>', "only this tenant's rows and runs")
    .option('--checks <list>', `comma-separated: ${AUDIT_CHECK_GROUPS.join(',')} (default all)`)
    .option('--batch-size <n>', 'products per keyset batch (default 10000)')
    .option(
      '--documents-prefix <prefix>',
      `the key prefix the documents check lists, ending with "/" (default ${DEFAULT_DOCUMENTS_PREFIX}; the stack passes its bucketPrefix)`,
      parseDocumentsPrefix,
    )
    .option('--json', 'print JSON only')
    .action(async (options: { tenant?: string; checks?: string; batchSize?: string; documentsPrefix?: string }, command: Command) => {
      const payload: Record<string, unknown> = {};
      if (options.batchSize !== undefined) payload.batchSize = Number(options.batchSize);
      if (options.tenant) payload.tenant = options.tenant;
      if (options.checks) payload.checks = options.checks.split(',').map((check) => check.trim());
      if (options.documentsPrefix !== undefined) payload.documentsPrefix = options.documentsPrefix;
      const { job, reused } = await withDatabase((pool) => submitRun(pool, cliActor(), { kind: AUDIT_KIND, payload }));
      if (wantsJson(command)) return printJson({ id: job.id, state: job.state, reused });
      printLine(`${reused ? 'An audit is already active' : 'Audit enqueued'}: job ${job.id}. Follow it with: bulk-import watch ${job.id}; then bulk-import audit findings ${job.id}`);
    });

  audit
    .command('runs')
    .description('the latest data-consistency audit runs with their findings per check')
    .option('--limit <n>', 'how many runs', parseLimit, 20)
    .option('--json', 'print JSON only')
    .action(async (options: { limit: number }, command: Command) => {
      const runs = await withDatabase(async (pool) => {
        const jobs = await listJobs(pool, { kinds: [AUDIT_KIND], limit: options.limit });
        return Promise.all(
          jobs.map(async (job) => {
            const { byCheck, stored, notStored } = await findingCounts(pool, job.id, job.result);
            return {
              id: job.id,
              state: job.state,
              tenant: job.tenantId ?? ((job.payload.tenant as string | undefined) ?? null),
              createdAt: job.createdAt,
              finishedAt: job.finishedAt ?? null,
              // What the run found, as the AuditFindings metric (and its alarm) counts it for a full-scope run: the
              // stored findings and those beyond listLimit. A narrowed run (tenant, some checks, part of the import
              // root) publishes no metric.
              findings: stored + notStored,
              byCheck,
              notStored,
            };
          }),
        );
      });
      if (wantsJson(command)) return printJson(runs);
      if (runs.length === 0) return printLine('No audit runs yet: bulk-import audit start');
      printLine(
        formatTable(
          ['id', 'state', 'tenant', 'findings', 'by check', 'created'],
          runs.map((run) => [
            run.id, run.state, run.tenant ?? '*', run.findings,
            [listCounts(run.byCheck), run.notStored > 0 ? `not stored ${run.notStored}` : ''].filter(Boolean).join(', '), run.createdAt,
          ]),
        ),
      );
    });

  audit
    .command('findings <id>')
    .description('the findings of one audit run (--csv: all of them as CSV, for a spreadsheet or a ticket)')
    .option('--check <name>', `only one check: ${CHECKS.join(', ')}`)
    .option('--limit <n>', 'list at most this many (not with --csv)', parseLimit, 100)
    .option('--after <finding-id>', 'only findings after this one: the next page (--json prints it as nextAfter; not with --csv)', integerIn(0, Number.MAX_SAFE_INTEGER), 0)
    .option('--csv', 'every finding as CSV on stdout')
    .option('--json', 'print JSON only')
    .action(async (id: string, options: { check?: string; limit: number; after: number; csv?: boolean }, command: Command) => {
      const jobId = parseJobId(id);
      if (options.check !== undefined && !(CHECKS as readonly string[]).includes(options.check)) {
        throw new Error(`--check must be one of ${CHECKS.join(', ')}`);
      }
      const check = (options.check ?? null) as CheckName | null;
      await withDatabase(async (pool) => {
        const job = await requireAuditRun(pool, jobId);
        // Not done (or never done): its findings are not the audit's answer, and "0 findings" would read as all clear.
        const unfinished = unfinishedAudit(job);
        if (unfinished) {
          process.stderr.write(`${unfinished}\n`);
          if (job.state !== 'queued' && job.state !== 'running') process.exitCode = 1;
        }
        if (options.csv) {
          const field = csvFieldFor(',');
          // Subjects and details hold S3 keys, that is tenants' file names: formula-escaped like every CSV export, for
          // the spreadsheet this is for (a name `a;=HYPERLINK(…)` splits into a formula cell in a `;` locale).
          const line = (values: unknown[]) =>
            `${values.map((value) => field(escapeFormula(value === null || value === undefined ? '' : String(value)))).join(',')}\r\n`;
          // To a terminal, control characters of those names are shown, not obeyed.
          const tty = process.stdout.isTTY === true ? terminalSafeLines() : undefined;
          tty?.pipe(process.stdout, { end: false });
          const out: NodeJS.WritableStream = tty ?? process.stdout;
          const write = async (text: string) => {
            if (!out.write(text)) await new Promise((resolve) => out.once('drain', resolve));
          };
          await write(line(['id', 'check', 'tenant', 'subject', 'subject_id', 'details', 'repaired_at', 'repair']));
          for (let after = 0; ; ) {
            const page = await pageOfFindings(pool, jobId, after, 1_000, check);
            for (const finding of page) {
              const repairedAt = finding.repairedAt?.toISOString() ?? '';
              const repair = finding.repair ? JSON.stringify(finding.repair) : '';
              await write(line([finding.id, finding.check, finding.tenantId, finding.subject, finding.subjectId, JSON.stringify(finding.details), repairedAt, repair]));
            }
            if (page.length < 1_000) break;
            after = page[page.length - 1]!.id;
          }
          if (tty) {
            tty.end();
            await finished(tty);
          }
          return;
        }
        const findings = await pageOfFindings(pool, jobId, options.after, options.limit, check);
        const { byCheck, stored: total, notStored } = await findingCounts(pool, jobId, job.result);
        // A full page may have more after it: its last id is where the next starts (null when this one is the last).
        const nextAfter = findings.length === options.limit ? findings[findings.length - 1]!.id : null;
        // `total` counts what can be listed; `notStored` the document findings the run counted beyond its listLimit.
        if (wantsJson(command)) return printJson({ id: jobId, state: job.state, total, byCheck, notStored, findings, nextAfter });
        printLine(
          `Audit ${jobId}: ${total} finding(s)${total ? ` (${listCounts(byCheck)})` : ''}` +
            (notStored > 0 ? `, and ${notStored} document finding(s) counted beyond the run's listLimit, not stored` : ''),
        );
        if (findings.length > 0) {
          printLine(formatTable(['id', 'check', 'tenant', 'subject', 'repaired'], findings.map((f) => [f.id, f.check, f.tenantId ?? '', f.subject, f.repairedAt ?? ''])));
        }
        if (nextAfter !== null) printLine(`More may follow: bulk-import audit findings ${jobId} --after ${nextAfter}${check ? ` --check ${check}` : ''} --limit ${options.limit}`);
      });
    });

  audit
    .command('repair <id>')
    .description(
      "recreate the missing references an audit run found, by name from the import's source rows, or relink to a row " +
        'of that name when one exists (or report why not); ' +
        `prints what it would do unless --apply. Exit ${REPAIR_UNAVAILABLE_EXIT_CODE} when a source file could not be read now ` +
        '(S3 unavailable): those findings stay open',
    )
    .option('--apply', 'make the changes (default: only show them)')
    .option('--json', 'print JSON only')
    .action(async (id: string, options: { apply?: boolean }, command: Command) => {
      const entries = await withDatabase(async (pool, config) => {
        const job = await requireAuditRun(pool, parseJobId(id));
        // Its findings are the audit's answer only once it succeeded: what a run still going (or stopped) stored so far
        // is part of it, and "nothing to repair" would be a guess.
        const unfinished = unfinishedAudit(job);
        if (unfinished) throw new Error(`${unfinished}; repair works on the findings of a finished audit`);
        const s3 = config.s3Bucket
          ? createS3Client({ region: config.awsRegion, endpoint: config.s3Endpoint, forcePathStyle: config.s3ForcePathStyle })
          : undefined;
        try {
          return await repairMissingReferences({
            pool, s3, auditJobId: parseJobId(id), apply: options.apply === true, signal: new AbortController().signal,
            stallTimeoutMs: config.s3StallTimeoutMs,
          });
        } finally {
          s3?.destroy();
        }
      });
      const leftOpen = entries.filter((entry) => entry.action === 'left-open').length;
      if (leftOpen > 0) process.exitCode = REPAIR_UNAVAILABLE_EXIT_CODE;
      if (wantsJson(command)) return printJson({ applied: options.apply === true, entries });
      if (entries.length === 0) return printLine('Nothing to repair: no open missing-reference findings in this audit run.');
      printLine(
        formatTable(
          ['finding', 'product', 'column', 'missing id', 'action', 'name', 'new id', 'reason'],
          entries.map((e) => [e.finding, e.product, e.column, e.missingId, e.action, e.name ?? '', e.newId ?? '', e.reason ?? '']),
        ),
      );
      if (leftOpen > 0) printLine(`${leftOpen} finding(s) left open: their source file could not be read now (see the reason). Run the repair again.`);
      if (!options.apply) printLine('Nothing changed. Run again with --apply to recreate (or relink, when the name exists) the references listed as would-recreate.');
    });
}

/**
 * An audit run's findings: those stored, per check, and the document findings it counted beyond its listLimit (in
 * the run's result, once it ended; the AuditFindings metric of a full-scope run counts them too).
 */
async function findingCounts(
  pool: Pool,
  jobId: number,
  result: Record<string, unknown> | null,
): Promise<{ byCheck: Record<string, number>; stored: number; notStored: number }> {
  const byCheck = await countFindings(pool, jobId);
  return { byCheck, stored: Object.values(byCheck).reduce((sum, n) => sum + n, 0), notStored: Number(result?.findingsNotStored ?? 0) };
}

/** `--documents-prefix`: refused before anything is enqueued, naming the rule it breaks. */
function parseDocumentsPrefix(value: string): string {
  const problem = documentsPrefixProblem(value);
  if (problem !== null) throw new InvalidArgumentError(`the documents prefix ${problem}, got ${JSON.stringify(value)}`);
  return value;
}

/** "missing-reference 3, object-without-document 100" */
function listCounts(byCheck: Record<string, number>): string {
  return Object.entries(byCheck).map(([check, n]) => `${check} ${n}`).join(', ');
}

function showProgress(progress: AuditProgress): void {
  process.stderr.write(
    `\r${progress.phase}: ${progress.objectsListed} objects listed, ${progress.orphansFound} orphans, ${progress.jobInputsFound} job inputs` +
      `${progress.deleted ? `, ${progress.deleted} deleted` : ''}   `,
  );
}

function objectTable(objects: AuditReport['orphanObjects']): void {
  if (objects.listed.length === 0) return;
  printLine(
    formatTable(
      ['key', 'size', 'last modified', 'age'],
      objects.listed.map((o) => [
        o.key, formatBytes(o.sizeBytes), o.lastModified, o.lastModified ? formatDuration(Date.now() - o.lastModified.getTime()) : undefined,
      ]),
    ),
  );
  if (objects.total > objects.listed.length) printLine(`… and ${objects.total - objects.listed.length} more`);
}

function printReport(report: AuditReport): void {
  const where = `s3://${report.bucket}/${report.prefix}`;
  printLine(`Audit of ${where}: ${report.objectsListed} objects, ${report.documentRows} documents rows.`);
  printLine('');
  printLine(`Objects without a documents row (orphans): ${report.orphanObjects.total}`);
  objectTable(report.orphanObjects);
  printLine('');
  printLine(
    `Objects a job's payload names (CSV uploads; not orphans, kept by --fix): ${report.jobInputs.total}` +
      (report.jobInputs.total > 0 ? ' — listed apart, not counted as findings' : ''),
  );
  objectTable(report.jobInputs);
  printLine('');
  printLine(`Documents rows whose object is missing: ${report.rowsWithoutObject.total}`);
  if (report.rowsWithoutObject.listed.length > 0) {
    printLine(
      formatTable(
        ['document', 'tenant', 'key', 'import job', 'created'],
        report.rowsWithoutObject.listed.map((r) => [r.documentId, r.tenantId, r.key, r.importJobId, r.createdAt]),
      ),
    );
    if (report.rowsWithoutObject.total > report.rowsWithoutObject.listed.length) {
      printLine(`… and ${report.rowsWithoutObject.total - report.rowsWithoutObject.listed.length} more`);
    }
    printLine('These are never changed automatically: restore the objects or re-import the files (docs/RUNBOOK.md).');
  }
  if (report.fix) {
    const fix = report.fix;
    printLine('');
    printLine(
      `Fix: deleted ${fix.deleted} orphan object(s) older than ${formatDuration(fix.minAgeMs)}; kept ${fix.skippedTooYoung} younger ` +
        `one(s), ${fix.skippedNamedByJob} named by a job's payload meanwhile and ${fix.skippedNowReferenced} that gained a row ` +
        `meanwhile; the ${report.jobInputs.total} object(s) named by jobs are never deleted.`,
    );
    for (const failure of fix.failed) printLine(`  could not delete ${failure.key}: ${failure.error}`);
  } else if (report.orphanObjects.total > 0) {
    printLine(`\nTo delete orphan objects older than a day: bulk-import audit --prefix <documents prefix> --fix`);
  }
}

/** The run `jobId`, which must be an audit: a missing id or another kind is an error, not "0 findings". */
async function requireAuditRun(pool: Pool, jobId: number): Promise<JobRow> {
  const job = await requireJob(pool, jobId);
  if (job.kind !== AUDIT_KIND) throw new Error(`job ${jobId} is a ${job.kind} run, not an audit: bulk-import audit runs lists the audits`);
  return job;
}

/** What to say of an audit that has not succeeded (its findings so far are not its answer), or null. */
function unfinishedAudit(job: JobRow): string | null {
  if (job.state === 'succeeded') return null;
  if (job.state === 'queued' || job.state === 'running') return `audit ${job.id} is ${job.state}: its findings are not all there yet`;
  const why = job.lastError ? ` (${job.lastError.code})` : '';
  return `audit ${job.id} ended ${job.state}${why}: the findings it stored before it stopped are not the whole answer; start a new audit`;
}
