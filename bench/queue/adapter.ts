// What the benchmark needs from each queue, and the one measurement routine all three go through.
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BenchSettings, QueueBenchResult } from './report.js';

export interface QueueAdapter {
  system: string;
  /** The settings used, printed with the results. */
  describe: string;
  enqueueOne(seq: number): Promise<void>;
  enqueueMany(seqs: number[]): Promise<void>;
  /** Starts processing; `onJob(seq)` must be called when a handler starts. */
  startWorker(onJob: (seq: number) => void): Promise<void>;
  stopWorker(): Promise<void>;
  /** Jobs not yet recorded as complete in the database. */
  unfinished(): Promise<number>;
  /** Deletes every job. */
  reset(): Promise<void>;
  close(): Promise<void>;
}

const BULK_CHUNK = 5_000;

export async function measure(adapter: QueueAdapter, settings: BenchSettings): Promise<QueueBenchResult> {
  await adapter.reset();
  // (1a) single enqueue: one awaited call per job.
  let started = performance.now();
  for (let seq = 0; seq < settings.singleEnqueues; seq += 1) await adapter.enqueueOne(seq);
  const singleEnqueueRate = settings.singleEnqueues / ((performance.now() - started) / 1000);
  await adapter.reset();

  // (1b) bulk enqueue of the throughput set.
  started = performance.now();
  for (let offset = 0; offset < settings.jobs; offset += BULK_CHUNK) {
    const seqs = Array.from({ length: Math.min(BULK_CHUNK, settings.jobs - offset) }, (_, i) => offset + i);
    await adapter.enqueueMany(seqs);
  }
  const bulkEnqueueRate = settings.jobs / ((performance.now() - started) / 1000);

  // (2) throughput: from the first handler call to the last, and until every job is recorded complete.
  const seen = new Uint8Array(settings.jobs);
  let calls = 0;
  let first = 0;
  let last = 0;
  let allCalled!: () => void;
  const done = new Promise<void>((resolve) => (allCalled = resolve));
  const workerStarted = performance.now();
  await adapter.startWorker((seq) => {
    const now = performance.now();
    if (calls === 0) first = now;
    last = now;
    calls += 1;
    seen[seq] = (seen[seq] ?? 0) + 1;
    if (calls === settings.jobs) allCalled();
  });
  await Promise.race([done, sleep(600_000)]);
  let unfinished = await adapter.unfinished();
  while (unfinished > 0 && performance.now() - last < 60_000) {
    await sleep(5);
    unfinished = await adapter.unfinished();
  }
  const completedAt = performance.now();
  await adapter.stopWorker();
  const duplicates = seen.reduce((sum, count) => sum + (count > 1 ? count - 1 : 0), 0);
  const missing = seen.reduce((sum, count) => sum + (count === 0 ? 1 : 0), 0);
  const throughput = settings.jobs / ((last - first) / 1000);
  const throughputToComplete = settings.jobs / ((completedAt - workerStarted) / 1000);

  // (3) pickup latency on an idle worker: enqueue one job, wait for its handler, repeat.
  await adapter.reset();
  const latencies: number[] = [];
  let waiting: { seq: number; resolve: (at: number) => void } | undefined;
  await adapter.startWorker((seq) => {
    if (waiting && waiting.seq === seq) waiting.resolve(performance.now());
  });
  await sleep(1_000);
  for (let sample = 0; sample < settings.latencySamples; sample += 1) {
    const seq = 1_000_000 + sample;
    const handled = new Promise<number>((resolve) => (waiting = { seq, resolve }));
    const enqueuedAt = performance.now();
    await adapter.enqueueOne(seq);
    const handledAt = await Promise.race([handled, sleep(10_000).then(() => Number.NaN)]);
    latencies.push(handledAt - enqueuedAt);
    // Let the worker go idle again (its completion written, its poller asleep).
    await sleep(15);
  }
  await adapter.stopWorker();
  await adapter.close();
  latencies.sort((a, b) => a - b);
  const quantile = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
  return {
    system: adapter.system,
    describe: adapter.describe,
    singleEnqueueRate,
    bulkEnqueueRate,
    throughput,
    throughputToComplete,
    latencyP50: quantile(0.5),
    latencyP99: quantile(0.99),
    duplicates,
    missing,
  };
}
