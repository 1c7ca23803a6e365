// Keyset cursors: the position after a page's last row, opaque to callers (base64url JSON), checked when read back.
import { ApiError } from './errors.js';

export function encodeCursor(position: Record<string, string | number>): string {
  return Buffer.from(JSON.stringify(position), 'utf8').toString('base64url');
}

/**
 * A cursor field: `integer` (a bigint id), `int32` (a row or item number: a Postgres integer) or `timestamp`. Each is
 * checked to be within what its column holds, so a forged cursor is a 400, never a database error.
 */
export type CursorField = 'integer' | 'int32' | 'timestamp';

/** The largest Postgres integer (row and item numbers). */
export const INT32_MAX = 2_147_483_647;
// What a cursor's timestamp can be: a run's time. (JavaScript dates reach 271,821 BC; timestamptz starts at 4713 BC.)
const YEARS = { min: 1970, max: 9999 };

/** The position a cursor holds, each named field checked to be of its kind; a bad cursor is a 400 naming `cursor`. */
export function decodeCursor<K extends string>(cursor: string, fields: Record<K, CursorField>): Record<K, number | Date> {
  const refuse = () => new ApiError(400, 'INVALID_CURSOR', 'cursor is not one this API returned (pass `next` of the previous page as it is)', 'cursor');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw refuse();
  }
  if (parsed === null || typeof parsed !== 'object') throw refuse();
  const out = {} as Record<K, number | Date>;
  for (const [name, type] of Object.entries(fields) as Array<[K, CursorField]>) {
    const value = (parsed as Record<string, unknown>)[name];
    if (type === 'timestamp') {
      const date = typeof value === 'string' ? new Date(value) : new Date(Number.NaN);
      const year = date.getUTCFullYear();
      if (Number.isNaN(date.getTime()) || year < YEARS.min || year > YEARS.max) throw refuse();
      out[name] = date;
    } else {
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw refuse();
      if (type === 'int32' && (value < -1 || value > INT32_MAX)) throw refuse();
      out[name] = value;
    }
  }
  return out;
}
