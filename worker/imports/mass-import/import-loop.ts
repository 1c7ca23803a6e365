// The import phase of a run: pending items in plan order, several at once under an adaptive limit, each recorded
// as it finishes; trips a breaker when S3 fails every file.
//
// How it stops depends on why (the job signal's reason):
//   - shutdown (ShutdownError): no new item starts; the files under way finish and are recorded — a multi-GB upload
//     is not thrown away at 90 % — within `shutdownDrainMs`, after which they are aborted too, so the run is given
//     back before the runner's grace time ends and releases the lease (late writes would be fenced out anyway).
//   - cancel, lease lost: the files under way are aborted at once (multipart uploads aborted on S3 as well).
//   - the loop itself fails (a database error reading the next page, the breaker, an outcome that cannot be
//     recorded): the files under way are aborted too.
// In every case the loop returns only once every file it started has settled: nothing of the run keeps uploading
// after its outcome is recorded. The progress it stops at is published then, without the bytes of the uploads it
// aborted (they were counted while under way): the figures a canceled or given-back run keeps are what it imported.
import type { Pool } from '../../db/pool.js';
import { TransientJobError } from '../../queue/errors.js';
import { ShutdownError } from '../../runner/stop-reasons.js';
import { ItemBatchSpan } from '../../tracing/item-batch-span.js';
import type { AdaptiveConcurrency } from './adaptive-concurrency.js';
import { findDocumentsByKeys } from './documents.js';
import { transferItem, type ItemImportContext } from './file-transfer.js';
import { nextPendingItems } from './items-table.js';
import type { ImportProgress } from './import-progress.js';
import type { TransferOutcome } from './item-outcome-batcher.js';
import { S3OutageWatch } from './s3-outage-watch.js';

const PAGE_SIZE = 256;

export interface ImportLoopOptions {
  pool: Pool;
  /** The job's signal. */
  signal: AbortSignal;
  /** After a shutdown, how long the files under way may still take before they are aborted. */
  shutdownDrainMs: number;
  item: Omit<ItemImportContext, 'signal' | 'stopSignal' | 'onTransferProgress'>;
  limiter: AdaptiveConcurrency;
  progress: ImportProgress;
}

/**
 * The two signals the items run under (plain controllers driven by listeners: Node 20 may garbage-collect the
 * sources of an AbortSignal.any while a request waits on it, so it is not used for anything that must fire):
 *   - `stopping` fires on every stop — shutdown, cancel, lease lost, the loop failing: an item starts no new try.
 *   - `items` fires on a hard stop — cancel, lease lost, the loop failing, or the drain time after a shutdown
 *     running out: the item's work is aborted where it is.
 */
class ItemStopper {
  private readonly stoppingController = new AbortController();
  private readonly itemsController = new AbortController();
  private drainTimer: NodeJS.Timeout | undefined;
  private readonly onJobAbort = () => {
    const reason: unknown = this.jobSignal.reason;
    this.stop(reason);
    if (!(reason instanceof ShutdownError)) return this.abort(reason);
    this.drainTimer = setTimeout(() => this.abort(reason), this.shutdownDrainMs);
  };

  constructor(
    private readonly jobSignal: AbortSignal,
    private readonly shutdownDrainMs: number,
  ) {
    if (jobSignal.aborted) this.onJobAbort();
    else jobSignal.addEventListener('abort', this.onJobAbort, { once: true });
  }

  get stopping(): AbortSignal {
    return this.stoppingController.signal;
  }

  get items(): AbortSignal {
    return this.itemsController.signal;
  }

  private stop(reason: unknown): void {
    if (!this.stoppingController.signal.aborted) this.stoppingController.abort(reason);
  }

  /** Aborts the items' work now (and stops them taking a new try). */
  abort(reason: unknown): void {
    this.stop(reason);
    if (!this.itemsController.signal.aborted) this.itemsController.abort(reason);
  }

  dispose(): void {
    clearTimeout(this.drainTimer);
    this.jobSignal.removeEventListener('abort', this.onJobAbort);
  }
}

export async function runImportLoop({ pool, signal, shutdownDrainMs, item, limiter, progress }: ImportLoopOptions): Promise<void> {
  const stopper = new ItemStopper(signal, shutdownDrainMs);
  const publish = () => {
    progress.annotate({ concurrency: limiter.limit, throttleSignals: limiter.throttleSignals });
    progress.publish('importing');
  };
  const context: ItemImportContext = {
    ...item,
    signal: stopper.items,
    stopSignal: stopper.stopping,
    // Bytes of the files under way count in the progress as they move (the reporter throttles the writes).
    onTransferProgress: (pending, bytes) => {
      progress.transferring(pending.itemNo, bytes);
      publish();
    },
  };
  // When this many files in a row end in a transient failure (S3 down, not one bad file), the attempt stops and the
  // queue retries the run later: the items wait, instead of every remaining file being marked failed.
  const breakerThreshold = Math.max(10, 2 * limiter.max);
  let transientStreak = 0;
  let fatal: unknown;
  const fail = (error: unknown) => {
    fatal ??= error;
    stopper.abort(fatal);
  };
  const inFlight = new Set<Promise<void>>();
  // S3 outage failures are held back, not recorded as failed items; a streak of them stops the attempt (s3-outage-watch.ts).
  const outageWatch = new S3OutageWatch(breakerThreshold, context.bucket);
  /** A failure is logged when it is recorded as the item's: not while it is held back as a possible S3 outage. */
  const logFailure = (outcome: TransferOutcome) => {
    if (outcome.kind !== 'failed') return;
    context.log.warn(
      { file: outcome.item.relativePath, key: outcome.item.objectKey, code: outcome.code, tries: outcome.tries },
      `file failed: ${outcome.message}`,
    );
  };
  const recordReleased = (released: TransferOutcome) => {
    logFailure(released);
    // Held back as a possible S3 outage until now (its bytes still the run's): failed after all.
    if (released.kind === 'failed') context.ceiling.release(released.item);
    const task: Promise<void> = context.outcomes
      .record(released)
      .then((result) => {
        progress.record(result.outcome, result.bytes, result.sizeDelta, released.item.itemNo, result.errorClass);
        publish();
      })
      .catch(fail)
      .finally(() => inFlight.delete(task));
    inFlight.add(task);
  };
  publish();

  try {
    let cursor = -1;
    pages: while (fatal === undefined && !signal.aborted) {
      const page = await nextPendingItems(pool, context.jobId, cursor, PAGE_SIZE);
      if (page.length === 0) break;
      cursor = page[page.length - 1]!.itemNo;
      const existing = await findDocumentsByKeys(pool, context.bucket, context.tenant, page.map((pending) => pending.objectKey));
      // Traces: a span per page, and one file of the page traced in full (worker/tracing/item-batch-span.ts).
      const batchSpan = new ItemBatchSpan(
        'mass-import batch',
        { bucket: context.bucket, files: page.length, bytes: page.reduce((sum, pending) => sum + pending.size, 0), 'item.first': page[0]!.itemNo },
        'mass-import file',
      );
      try {
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
          const found = { own: existing.own.get(pending.objectKey), otherTenant: existing.otherTenants.get(pending.objectKey) };
          const fileAttributes = { bucket: context.bucket, key: pending.objectKey, bytes: pending.size, 'item.no': pending.itemNo };
          const task: Promise<void> = batchSpan.runItem(fileAttributes, (fileSpan) =>
            transferItem(context, pending, found)
              .then((outcome) => {
                fileSpan?.setAttribute('item.transfer', outcome.kind);
                const watched = outageWatch.observe(outcome);
                // A failed file's bytes are not the run's (its ceiling): the next file, opened once the slot is free,
                // may use them. One held back as a possible S3 outage stays the run's until it is released as failed.
                if (outcome.kind === 'failed' && !watched.hold) context.ceiling.release(outcome.item);
                freeSlot();
                watched.release.forEach(recordReleased);
                if (!watched.hold) {
                  logFailure(outcome);
                  return context.outcomes.record(outcome);
                }
                if (outcome.kind === 'failed') {
                  context.log.info(
                    { file: outcome.item.relativePath, code: outcome.code, held: outageWatch.holding },
                    'file held back: S3 may be unavailable; it stays pending unless later files go through',
                  );
                }
                if (outageWatch.tripped && fatal === undefined) {
                  fail(outageWatch.outage(`${outageWatch.holding} files in a row failed after their retries`));
                }
                return undefined;
              })
              .then((result) => {
                if (result === undefined) return;
                fileSpan?.setAttributes({ 'item.outcome': result.outcome, ...(result.code ? { 'error.type': result.code } : {}) });
                progress.record(result.outcome, result.bytes, result.sizeDelta, pending.itemNo, result.errorClass);
                if (result.outcome === 'failed' && result.errorClass === 'transient') transientStreak += 1;
                else if (result.outcome !== 'failed') transientStreak = 0;
                if (transientStreak >= breakerThreshold && fatal === undefined) {
                  fail(
                    new TransientJobError(
                      `S3 failed ${transientStreak} files in a row after retries (last: ${result.code}); the run stops and retries later, ` +
                        'resuming with the files not yet imported',
                      'S3_UNAVAILABLE',
                      { bucket: context.bucket, lastCode: result.code },
                    ),
                  );
                }
                publish();
              })
              .catch((error: unknown) => {
                // An item stopped by the job's signal (shutdown, cancel, lease lost) stays pending; that is no failure.
                if (signal.aborted && error === signal.reason) return;
                fail(error);
              })
              .finally(() => {
                freeSlot();
                // An item stopped before its outcome was recorded no longer moves bytes (recorded ones are settled already).
                progress.settle(pending.itemNo);
                inFlight.delete(task);
              }),
          );
          inFlight.add(task);
        }
      } finally {
        batchSpan.seal();
      }
    }
  } catch (error) {
    fail(error);
  } finally {
    // Until nothing is in flight: a task may add the recording of released failures while others settle.
    while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    if (fatal === undefined && !signal.aborted && outageWatch.holding > 0) {
      // Out of files with S3 failures still held: S3 itself says whether they are an outage or the files' own.
      try {
        const settled = await outageWatch.settle(context.s3, stopper.items, context.requestTimeoutMs);
        if ('outage' in settled) fail(settled.outage);
        else settled.release.forEach(recordReleased);
        while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
      } catch (error) {
        fail(error);
      }
    }
    stopper.dispose();
  }
  if (signal.aborted || fatal !== undefined) await publishStopped(progress, signal);
  if (signal.aborted) throw signal.reason;
  if (fatal !== undefined) throw fatal;
}

/**
 * The figures a stopped run keeps: every file it started has settled, the aborted ones without their in-flight bytes.
 * A cancel or a failure stores the latest published progress with its outcome; a run given back at a shutdown stores
 * none, so it is written now (while the lease still holds; a failed write leaves the last one written).
 */
async function publishStopped(progress: ImportProgress, signal: AbortSignal): Promise<void> {
  progress.publish('importing');
  if (signal.reason instanceof ShutdownError) await progress.flush().catch(() => {});
}
