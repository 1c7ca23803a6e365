import type { Command } from 'commander';
import { cliActor, submitRun } from '../../actions/run-actions.js';
import { withDatabase } from '../context.js';
import { printJson, printLine } from '../output.js';
import { ENQUEUE_LIMITS } from '../../queue/enqueue.js';
import { integerIn, parseJsonObject } from '../parse.js';
import { describeEstimate } from '../estimate-view.js';
import { estimateJson } from '../../queue/estimate.js';

/** A submit refused by a queue limit (sysexits EX_TEMPFAIL: try again later; the message says when). */
export const EXIT_QUEUE_LIMIT = 75;

interface EnqueueOptions {
  payload: Record<string, unknown>;
  tenant?: string;
  dedupeKey?: string;
  dedupe: boolean;
  maxAttempts?: number;
  priority?: number;
  sizeBytes?: number;
  json?: boolean;
}

export function registerEnqueueCommand(program: Command): void {
  program
    .command('enqueue <kind>')
    .description('enqueue a job; returns the active run instead when one with the same dedupe key exists')
    .option('--payload <json>', 'job payload as a JSON object', parseJsonObject, {})
    .option('--tenant <id>', 'tenant the job belongs to')
    .option('--dedupe-key <key>', "idempotency key (default: the kind's own, e.g. tenant + source)")
    .option('--no-dedupe', 'never reuse an active run')
    .option('--max-attempts <n>', `attempts before the job goes dead (${ENQUEUE_LIMITS.maxAttempts.min}-${ENQUEUE_LIMITS.maxAttempts.max})`, integerIn(ENQUEUE_LIMITS.maxAttempts.min, ENQUEUE_LIMITS.maxAttempts.max))
    .option('--priority <n>', 'lower runs first (default 0; a 32-bit integer)', integerIn(ENQUEUE_LIMITS.priority.min, ENQUEUE_LIMITS.priority.max))
    .option('--size-bytes <n>', "the work's size in bytes (a CSV object's size, a mass import's planned bytes): counts toward ADMISSION_*_QUEUED_BYTES", integerIn(0, Number.MAX_SAFE_INTEGER))
    .option('--json', 'print JSON only')
    .action(async (kind: string, options: EnqueueOptions) => {
      const { job, reused, estimate } = await withDatabase((pool, config) =>
        submitRun(
          pool,
          cliActor(),
          {
            kind,
            payload: options.payload,
            tenantId: options.tenant ?? null,
            ...(options.dedupe ? (options.dedupeKey !== undefined ? { dedupeKey: options.dedupeKey } : {}) : { dedupeKey: null }),
            ...(options.maxAttempts !== undefined ? { maxAttempts: options.maxAttempts } : {}),
            ...(options.priority !== undefined ? { priority: options.priority } : {}),
            ...(options.sizeBytes !== undefined ? { sizeBytes: options.sizeBytes } : {}),
          },
          { defaultMaxAttempts: config.worker.defaultMaxAttempts, queue: config.queue },
        ),
      );
      if (options.json) return printJson({ id: job.id, state: job.state, reused, kind: job.kind, dedupeKey: job.dedupeKey, estimate: estimateJson(estimate) });
      printLine(
        reused
          ? `Job ${job.id} (${job.kind}) is already ${job.state} with dedupe key ${job.dedupeKey}: reusing it, nothing new enqueued.`
          : `Enqueued job ${job.id} (${job.kind}), state ${job.state}.`,
      );
      const expected = describeEstimate(estimate);
      if (expected) printLine(`Estimate: ${expected}.`);
    });
}
