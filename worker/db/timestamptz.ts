// timestamptz values as Date, read by position. Postgres writes them as `YYYY-MM-DD HH:MM:SS[.ffffff]±HH[:MM[:SS]]`
// (DateStyle ISO, the default); pg's own parser (postgres-date) runs three regular expressions per value, which was
// 7% of the API server's CPU on run listings (a page of 50 runs holds 200 timestamps). Anything else — BC dates,
// infinity, years before 100 or after 9999, another DateStyle — goes to pg's parser, so the result is always the
// same as before: milliseconds truncated, the offset applied.
import pg from 'pg';

type TimestampParser = (text: string) => Date | number | null;

const pgParser = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ) as TimestampParser;

const DASH = 45;
const SPACE = 32;
const COLON = 58;
const DOT = 46;
const PLUS = 43;
/** Seconds in the offset's hours, minutes and seconds. */
const OFFSET_UNITS = [3600, 60, 1] as const;

/** The number written by `count` digits at `start`, or -1 when one of them is not a digit. */
function digits(text: string, start: number, count: number): number {
  let value = 0;
  for (let i = start; i < start + count; i += 1) {
    const digit = text.charCodeAt(i) - 48;
    if (!(digit >= 0 && digit <= 9)) return -1;
    value = value * 10 + digit;
  }
  return value;
}

export function parseTimestamptz(text: string): Date | number | null {
  return parsePlain(text) ?? pgParser(text);
}

/** The plain form only; undefined for anything else (exported for its test). */
export function parsePlain(text: string): Date | undefined {
  const length = text.length;
  if (length < 22 || text.charCodeAt(4) !== DASH || text.charCodeAt(7) !== DASH || text.charCodeAt(10) !== SPACE) return undefined;
  if (text.charCodeAt(13) !== COLON || text.charCodeAt(16) !== COLON) return undefined;
  const year = digits(text, 0, 4);
  const month = digits(text, 5, 2);
  const day = digits(text, 8, 2);
  const hour = digits(text, 11, 2);
  const minute = digits(text, 14, 2);
  const second = digits(text, 17, 2);
  // Date.UTC reads years 0-99 as 1900-1999: pg's parser handles those.
  if (year < 100 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) return undefined;
  let at = 19;
  let ms = 0;
  if (text.charCodeAt(at) === DOT) {
    at += 1;
    let count = 0;
    for (; at < length; at += 1) {
      const digit = text.charCodeAt(at) - 48;
      if (!(digit >= 0 && digit <= 9)) break;
      if (count < 3) ms = ms * 10 + digit;
      count += 1;
    }
    if (count === 0) return undefined;
    if (count === 1) ms *= 100;
    else if (count === 2) ms *= 10;
  }
  const sign = text.charCodeAt(at);
  if (sign !== PLUS && sign !== DASH) return undefined;
  let offsetSeconds = 0;
  for (let part = 0; part < OFFSET_UNITS.length && at < length; part += 1) {
    // ±HH, then :MM and :SS.
    if (part > 0 && text.charCodeAt(at) !== COLON) return undefined;
    const value = digits(text, at + 1, 2);
    if (value < 0) return undefined;
    offsetSeconds += value * OFFSET_UNITS[part]!;
    at += 3;
  }
  if (at !== length) return undefined;
  const utc = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  return new Date(utc - (sign === PLUS ? offsetSeconds : -offsetSeconds) * 1000);
}
