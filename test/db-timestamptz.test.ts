// timestamptz values read by position (worker/db/timestamptz.ts) must be the very Dates pg's own parser makes, for
// whatever Postgres writes: every session time zone (offsets in hours, half hours, quarter hours and the seconds of
// local mean time), microseconds, BC dates, years before 100 and after 9999, infinity.
import { describe, expect, it } from 'vitest';
import { parsePlain, parseTimestamptz } from '../worker/db/timestamptz.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();
const ZONES = ['UTC', 'Asia/Kolkata', 'America/St_Johns', 'Asia/Kathmandu', 'Africa/Monrovia', 'Europe/Amsterdam', 'Pacific/Kiritimati', 'America/Los_Angeles'];

describe('timestamptz parsing', () => {
  it('gives the same instant as Postgres for every value it writes, in every session time zone', async () => {
    const client = await env.pool.connect();
    try {
      let plain = 0;
      let total = 0;
      for (const zone of ZONES) {
        await client.query(`SET TimeZone = '${zone}'`);
        // Values from year 1 to 12000, with 0 to 6 fractional digits; plus BC, infinity, and local-mean-time years.
        const { rows } = await client.query<{ text: string; epoch_ms: string | null; finite: boolean }>(
          `WITH values AS (
             SELECT timestamptz '0001-01-01 00:00:00+00' + (random() * interval '4380000 days') AS at FROM generate_series(1, 300)
             UNION ALL SELECT date_trunc('second', now()) + (g * interval '123456 microseconds') FROM generate_series(0, 20) g
             UNION ALL SELECT timestamptz '1900-01-01 12:00:00+00' + (g * interval '37 days 1 hour 0.5 seconds') FROM generate_series(0, 40) g
             UNION ALL SELECT timestamptz '0044-03-15 12:00:00 BC'
             UNION ALL SELECT timestamptz '0099-12-31 23:59:59.999999+00'
             UNION ALL SELECT timestamptz 'infinity' UNION ALL SELECT timestamptz '-infinity'
           )
           SELECT at::text AS text, CASE WHEN isfinite(at) THEN floor(extract(epoch FROM at) * 1000)::text END AS epoch_ms, isfinite(at) AS finite
           FROM values`,
        );
        for (const row of rows) {
          total += 1;
          const parsed = parseTimestamptz(row.text);
          if (!row.finite) {
            expect(parsed, row.text).toBe(row.text.startsWith('-') ? -Infinity : Infinity);
            continue;
          }
          expect(parsed, `${zone}: ${row.text}`).toBeInstanceOf(Date);
          expect((parsed as Date).getTime(), `${zone}: ${row.text}`).toBe(Number(row.epoch_ms));
          if (parsePlain(row.text) !== undefined) plain += 1;
        }
      }
      // The fast path is what reads almost all of them (not everything falling back would pass too).
      expect(plain).toBeGreaterThan(total * 0.8);
    } finally {
      await client.query('RESET TimeZone');
      client.release();
    }
  });

  it('is what the pool returns for timestamptz columns', async () => {
    const { rows } = await env.pool.query<{ at: Date }>(`SELECT timestamptz '2026-12-05 15:59:18.123456+05:30' AS at`);
    expect(rows[0]!.at.toISOString()).toBe('2026-12-05T10:29:18.123Z');
  });

  it('leaves what is not the plain form to pg', () => {
    for (const text of ['2026-12-05 15:59:18+00 BC', '0099-01-01 00:00:00+00', '12026-01-01 00:00:00+00', '2026-12-05T15:59:18Z', '2026-12-05 15:59:18.+00', '2026-12-05 15:59:18+0a']) {
      expect(parsePlain(text), text).toBeUndefined();
    }
  });
});
