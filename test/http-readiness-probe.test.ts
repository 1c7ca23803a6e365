// The readiness probe behind GET /readyz: one check at a time, its answer reused for a moment, a failure logged once.
import { describe, expect, it } from 'vitest';
import { ReadinessProbe } from '../worker/http/readiness-probe.js';

/** A check the test settles by hand, and a clock it moves by hand. */
function controlled() {
  let clock = 0;
  const pending: Array<{ resolve: () => void; reject: (error: Error) => void }> = [];
  const failures: unknown[] = [];
  const probe = new ReadinessProbe({
    check: () => new Promise<void>((resolve, reject) => pending.push({ resolve, reject })),
    reuseMs: 1_000,
    onFailure: (error) => failures.push(error),
    now: () => clock,
  });
  return { probe, pending, failures, advance: (ms: number) => (clock += ms) };
}

describe('ReadinessProbe', () => {
  it('shares a check under way, reuses its answer within the window, and checks again after it', async () => {
    const { probe, pending, advance } = controlled();
    const first = [probe.ready(), probe.ready(), probe.ready()];
    expect(pending).toHaveLength(1);
    pending[0]!.resolve();
    await Promise.all(first);
    advance(999);
    await probe.ready();
    expect(probe.checksRun).toBe(1);
    advance(1);
    const again = probe.ready();
    expect(pending).toHaveLength(2);
    pending[1]!.resolve();
    await again;
    expect({ asked: probe.asked, checksRun: probe.checksRun }).toEqual({ asked: 5, checksRun: 2 });
  });

  it('gives every waiting request the failure, reports it once, and reuses it until the window ends', async () => {
    const { probe, pending, failures, advance } = controlled();
    const waiting = [probe.ready(), probe.ready()];
    pending[0]!.reject(new Error('connection refused'));
    for (const answer of waiting) await expect(answer).rejects.toThrow('connection refused');
    await expect(probe.ready()).rejects.toThrow('connection refused');
    expect(failures).toHaveLength(1);
    expect(pending).toHaveLength(1);
    advance(1_000);
    const recovered = probe.ready();
    pending[1]!.resolve();
    await expect(recovered).resolves.toBeUndefined();
  });
});
