// The import phase of a run: pending items in plan order, several at once under an adaptive limit, each recorded
// as it finishes. Stops at item boundaries when the job's signal fires; trips a breaker when S3 fails every file.
import type { Pool } from '../db/pool.js';
import { TransientJobError } from '../queue/errors.js';
import type { AdaptiveConcurrency } from './adaptive-concurrency.js';
import { findDocumentsByKeys } from './documents.js';
import { transferItem, type ItemImportContext } from './import-item.js';
import { nextPendingItems } from './import-items.js';
import type { ImportProgress } from './import-progress.js';

const PAGE_SIZE = 256;

export interface ImportLoopOptions {
  pool: Pool;
  item: ItemImportContext;
  limiter: AdaptiveConcurrency;
  progress: ImportProgress;
}

export async function runImportLoop({ pool, item: context, limiter, progress }: ImportLoopOptions): Promise<void> {
  const { signal } = context;
  // When this many files in a row end in a transient failure (S3 down, not one bad file), the attempt stops and the
  // queue retries the run later: the items wait, instead of every remaining file being marked failed.
  const breakerThreshold = Math.max(10, 2 * limiter.max);
  let transientStreak = 0;
  let fatal: unknown;
  const inFlight = new Set<Promise<void>>();
  const publish = () => {
    progress.annotate({ concurrency: limiter.limit, throttleSignals: limiter.throttleSignals });
    progress.publish('importing');
  };
  publish();

  let cursor = -1;
  pages: while (fatal === undefined && !signal.aborted) {
    const page = await nextPendingItems(pool, context.jobId, cursor, PAGE_SIZE);
    if (page.length === 0) break;
    cursor = page[page.length - 1]!.itemNo;
    const existing = await findDocumentsByKeys(pool, context.bucket, page.map((pending) => pending.objectKey));
    for (const pending of page) {
      await limiter.acquire();
      if (fatal !== undefined || signal.aborted) {
        limiter.release();
        break pages;
      }
      // The upload slot is given back as soon as the transfer is over; the commit of its outcome goes on meanwhile.
      let slotHeld = true;
      const freeSlot = () => {
        if (slotHeld) limiter.release();
        slotHeld = false;
      };
      const task: Promise<void> = transferItem(context, pending, existing.get(pending.objectKey))
        .then((outcome) => {
          freeSlot();
          return context.outcomes.record(outcome);
        })
        .then((result) => {
          progress.record(result.outcome, result.bytes, result.sizeDelta);
          if (result.outcome === 'failed' && result.errorClass === 'transient') transientStreak += 1;
          else if (result.outcome !== 'failed') transientStreak = 0;
          if (transientStreak >= breakerThreshold && fatal === undefined) {
            fatal = new TransientJobError(
              `S3 failed ${transientStreak} files in a row after retries (last: ${result.code}); the run stops and retries later, ` +
                'resuming with the files not yet imported',
              'S3_UNAVAILABLE',
              { bucket: context.bucket, lastCode: result.code },
            );
          }
          publish();
        })
        .catch((error: unknown) => {
          fatal ??= error;
        })
        .finally(() => {
          freeSlot();
          inFlight.delete(task);
        });
      inFlight.add(task);
    }
  }
  await Promise.all(inFlight);
  if (signal.aborted) throw signal.reason;
  if (fatal !== undefined) throw fatal;
}
