// What `watch` draws: rate and ETA from progress samples, and live bars on a terminal (a stream that says it is a TTY).
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ProgressRate } from '../worker/cli/progress-rate.js';
import { BarView } from '../worker/cli/watch-views.js';
import type { JobRow } from '../worker/queue/types.js';
import { waitFor } from './support/in-process-worker.js';

function job(overrides: Partial<JobRow>): JobRow {
  const now = new Date();
  return {
    id: 42, kind: 'mass-import', tenantId: 'acme', payload: {}, dedupeKey: null, state: 'running', priority: 0,
    runAt: now, attempts: 1, maxAttempts: 5, leaseOwner: 'w', leaseExpiresAt: now, heartbeatAt: now,
    cancelRequestedAt: null, progress: null, result: null, lastError: null, createdAt: now, startedAt: now,
    finishedAt: null, updatedAt: now, ...overrides,
  };
}

describe('progress rate', () => {
  it('measures the rate over recent samples and derives the ETA from what remains', () => {
    const rate = new ProgressRate(30_000);
    expect(rate.observe({ done: 100, total: 1000 }, 0)).toMatchObject({ percent: 10, ratePerSecond: undefined, etaSeconds: undefined });
    const later = rate.observe({ done: 300, total: 1000, phase: 'importing' }, 10_000);
    expect(later).toMatchObject({ done: 300, total: 1000, percent: 30, ratePerSecond: 20, etaSeconds: 35, phase: 'importing' });
    // Samples older than the window drop out: the rate follows the recent pace.
    rate.observe({ done: 310, total: 1000 }, 40_000);
    expect(rate.observe({ done: 320, total: 1000 }, 50_000).ratePerSecond).toBeCloseTo(1, 5);
  });

  it("prefers the handler's own rate and ETA, reads itemsDone/itemsTotal, and restarts after a counter reset", () => {
    const rate = new ProgressRate();
    expect(rate.observe({ itemsDone: 5, itemsTotal: 10, rate: 2.5, etaSeconds: 9 }, 0)).toMatchObject({ percent: 50, ratePerSecond: 2.5, etaSeconds: 9 });
    rate.observe({ done: 50, total: 100 }, 1_000);
    rate.observe({ done: 60, total: 100 }, 2_000);
    // A resumed run restarting at a lower count does not produce a negative rate.
    expect(rate.observe({ done: 10, total: 100 }, 3_000).ratePerSecond).toBeUndefined();
    expect(rate.observe({ done: 100, total: 100 }, 4_000).etaSeconds).toBe(0);
  });
});

describe('bar view on a terminal', () => {
  it('draws a bar per running job with counter, rate and ETA, and prints the outcome when it ends', async () => {
    const stream = Object.assign(new PassThrough(), { isTTY: true, columns: 160 });
    let output = '';
    stream.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    const view = new BarView(stream);
    const rate = new ProgressRate();
    // One clock for both observations: 20 items in exactly 2 s, however busy the machine is.
    const now = Date.now();
    view.update(job({ progress: { done: 20, total: 80 } }), rate.observe({ done: 20, total: 80 }, now - 2_000));
    view.update(job({ progress: { done: 40, total: 80 } }), rate.observe({ done: 40, total: 80, phase: 'importing' }, now));
    const bar = / {4}42 mass-import {4}running {2}█{15}░{15} 40\/80 \(50%\)\s+10\.0\/s {2}ETA 4\.0s\s+importing/;
    await waitFor(async () => bar.test(output)); // the bars redraw at 5 fps
    expect(output).toMatch(bar);
    view.finish(job({ state: 'succeeded', finishedAt: new Date(Date.now() + 5_000) }));
    view.close();
    expect(output).toContain('job 42 mass-import succeeded after 5.0s');
  });
});
