// The worker's view of the database (worker/db/database-status.ts): one line when an outage begins and one when it
// ends, however many sessions see it. A restart terminates backends one at a time, so for a moment a statement on a
// connection not yet reached still succeeds: that must not count as recovery (it would log "back" and then a second
// outage for one restart, as a loaded CI run showed). Time is the fake clock of vitest, so nothing here waits.
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BACK_PROOF_DELAY_MS, DatabaseStatus } from '../worker/db/database-status.js';
import { createLogger } from '../worker/logger.js';

const terminated = Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' });

function statusWithLines() {
  const lines: string[] = [];
  const log = createLogger({
    level: 'info',
    format: 'json',
    destination: new Writable({ write: (chunk, _encoding, done) => (lines.push((JSON.parse(String(chunk)) as { msg: string }).msg), done()) }),
  });
  return { status: new DatabaseStatus(log), lines };
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['Date'] });
  vi.setSystemTime(new Date('2026-12-05T12:00:00Z'));
});
afterEach(() => {
  vi.useRealTimers();
});

describe('DatabaseStatus', () => {
  it('a restart seen by several sessions is one outage and one recovery, even when a doomed connection answers once', () => {
    const { status, lines } = statusWithLines();
    expect(status.reportFailure(terminated, 'pool')).toBe(true);
    // 19 ms later a statement begun after the first failure still succeeds on a connection not yet terminated ...
    vi.advanceTimersByTime(19);
    status.reportSuccess(Date.now());
    expect(status.health.state).toBe('unavailable');
    // ... and then that connection is terminated too.
    vi.advanceTimersByTime(11);
    expect(status.reportFailure(terminated, 'pool')).toBe(true);
    // The server is back: the next claim, begun after the proof delay, succeeds.
    vi.advanceTimersByTime(BACK_PROOF_DELAY_MS);
    status.reportSuccess(Date.now());
    expect(status.health.state).toBe('ok');
    expect(lines).toEqual(['database unavailable; jobs wait and every session reconnects with backoff', 'database is back']);
  });

  it('a success that began before the outage was noticed says nothing; a later outage is reported again', () => {
    const { status, lines } = statusWithLines();
    const claimStarted = Date.now();
    vi.advanceTimersByTime(5);
    status.reportFailure(terminated, 'claim');
    vi.advanceTimersByTime(2 * BACK_PROOF_DELAY_MS);
    status.reportSuccess(claimStarted);
    expect(status.health.state).toBe('unavailable');
    status.reportSuccess(Date.now() - 1);
    expect(status.health.state).toBe('ok');
    vi.advanceTimersByTime(60_000);
    status.reportFailure(terminated, 'pool', Date.now());
    expect(lines.filter((line) => line.startsWith('database unavailable'))).toHaveLength(2);
  });
});
