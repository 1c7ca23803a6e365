// The API's fast ISO formatter (worker/http/iso-time.ts) must write what Date.prototype.toISOString writes, for every
// Date: random instants from year -270,000 to +270,000 (outside 0000–9999 it hands over to toISOString), every
// millisecond edge of a day, leap days of the Gregorian rules (1900 is not a leap year, 2000 is), the ends of its
// fast range, and consecutive calls on different days (its one-entry day cache must not carry a date over).
import { describe, expect, it } from 'vitest';
import { isoTime } from '../worker/http/iso-time.js';

const same = (ms: number) => expect(isoTime(new Date(ms)), `epoch ms ${ms}`).toBe(new Date(ms).toISOString());

describe('isoTime', () => {
  it('is toISOString for random instants, inside the fast range and outside it', () => {
    for (let i = 0; i < 20_000; i += 1) same(Math.round((Math.random() - 0.5) * 2 * 253_402_300_800_000 * 1.2));
    for (let i = 0; i < 2_000; i += 1) same(Math.round((Math.random() - 0.5) * 2 * 8.64e15));
  });

  it('is toISOString at the edges of days, leap days and the ends of the fast range', () => {
    const edges = [
      '0000-01-01T00:00:00.000Z', '0000-02-29T12:00:00.000Z', '0001-01-01T00:00:00.000Z', '0099-12-31T23:59:59.999Z',
      '1900-02-28T23:59:59.999Z', '1900-03-01T00:00:00.000Z', '1969-12-31T23:59:59.999Z', '1970-01-01T00:00:00.000Z',
      '2000-02-29T00:00:00.000Z', '2000-03-01T00:00:00.000Z', '2024-02-29T23:59:59.999Z', '2026-12-31T23:59:59.999Z',
      '9999-12-31T23:59:59.999Z', '+010000-01-01T00:00:00.000Z', '-000001-12-31T23:59:59.999Z',
    ].map((text) => Date.parse(text));
    for (const ms of edges) for (const delta of [-1, 0, 1, 999, 1000, 59_999, 60_000, 3_599_999, 86_399_999]) same(ms + delta);
  });

  it('does not carry a day over between calls', () => {
    const day = Date.parse('2026-12-05T00:00:00.000Z');
    for (const ms of [day + 5, day - 5, day + 86_400_000 - 1, day + 86_400_000, day + 5, day - 86_400_000 * 366]) same(ms);
  });

  it('throws for an invalid Date as toISOString does', () => {
    expect(() => isoTime(new Date(Number.NaN))).toThrow(RangeError);
  });
});
