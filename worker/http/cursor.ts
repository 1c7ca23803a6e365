// Keyset cursors: the position after a page's last row, opaque to callers (base64url JSON), checked when read back.
import { ApiError } from './errors.js';

export function encodeCursor(position: Record<string, string | number>): string {
  return Buffer.from(JSON.stringify(position), 'utf8').toString('base64url');
}

/** The position a cursor holds, each named field checked to be of its kind; a bad cursor is a 400 naming `cursor`. */
export function decodeCursor<K extends string>(cursor: string, fields: Record<K, 'integer' | 'timestamp'>): Record<K, number | Date> {
  const refuse = () => new ApiError(400, 'INVALID_CURSOR', 'cursor is not one this API returned (pass `next` of the previous page as it is)', 'cursor');
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw refuse();
  }
  if (parsed === null || typeof parsed !== 'object') throw refuse();
  const out = {} as Record<K, number | Date>;
  for (const [name, type] of Object.entries(fields) as Array<[K, 'integer' | 'timestamp']>) {
    const value = (parsed as Record<string, unknown>)[name];
    if (type === 'integer') {
      if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw refuse();
      out[name] = value;
    } else {
      const date = typeof value === 'string' ? new Date(value) : new Date(Number.NaN);
      if (Number.isNaN(date.getTime())) throw refuse();
      out[name] = date;
    }
  }
  return out;
}
