// Bounds on what the worker stores and logs about a failure. An error's message and context come from whatever the
// failing input held — a CSV header of 100,000 names, a 50 MB payload field echoed back — and were once stored whole
// in `jobs.last_error`, printed by `jobs --json` and written as one multi-megabyte log line. Every error record
// (queue/errors.ts) and every logged error (logger.ts) goes through these helpers, which cut text and say so.

/** Characters kept of an error message (the rest is replaced by a note saying how much was cut). */
export const MAX_ERROR_MESSAGE_CHARS = 4_096;
/** Characters kept of an error's stack. */
export const MAX_ERROR_STACK_CHARS = 4_096;
/** Characters of an error's context (or any logged object) as JSON, after the per-value bounds below. */
export const MAX_ERROR_CONTEXT_CHARS = 8_192;
/** Per value of a context: characters of a string, items of an array, keys of an object, levels of nesting. */
const VALUE_BOUNDS = { stringChars: 1_024, arrayItems: 20, objectKeys: 50, depth: 6 };

/** Where to cut `text` (longer than `max`) to keep at most `max` characters without splitting a surrogate pair. */
export function safeCutIndex(text: string, max: number): number {
  const last = text.charCodeAt(max - 1);
  return last >= 0xd800 && last <= 0xdbff ? max - 1 : max;
}

/**
 * `text` if it has at most `max` characters; else its first `max` characters and a note saying how many were cut.
 * Never splits a surrogate pair.
 */
export function truncateText(text: string, max: number): string {
  if (text.length <= max) return text;
  const end = safeCutIndex(text, max);
  return `${text.slice(0, end)}… [truncated: ${text.length - end} of ${text.length} characters cut]`;
}

/**
 * A copy of `value` small enough to store and log: strings, arrays and objects cut to the bounds above (each cut
 * marked in place), and, if the whole is still over `maxChars` as JSON, a note with the start of that JSON.
 */
export function boundValue(value: unknown, maxChars = MAX_ERROR_CONTEXT_CHARS): unknown {
  const bounded = boundInner(value, 0, new Set());
  let json: string | undefined;
  try {
    json = JSON.stringify(bounded);
  } catch {
    return '[not serializable]';
  }
  if (json === undefined || json.length <= maxChars) return bounded;
  return { truncated: `${json.length} characters of JSON cut to ${maxChars}`, start: truncateText(json, maxChars) };
}

function boundInner(value: unknown, depth: number, seen: Set<object>): unknown {
  if (typeof value === 'string') return truncateText(value, VALUE_BOUNDS.stringChars);
  if (typeof value === 'bigint') return value.toString();
  if (value === null || typeof value !== 'object') return value;
  if (value instanceof Date) return value;
  if (Buffer.isBuffer(value)) return `[${value.length} bytes]`;
  if (seen.has(value)) return '[circular]';
  if (depth >= VALUE_BOUNDS.depth) return Array.isArray(value) ? `[array of ${value.length}, nested too deep]` : '[object, nested too deep]';
  seen.add(value);
  try {
    if (Array.isArray(value)) {
      const kept = value.slice(0, VALUE_BOUNDS.arrayItems).map((item) => boundInner(item, depth + 1, seen));
      if (value.length > VALUE_BOUNDS.arrayItems) kept.push(`… [truncated: ${value.length - VALUE_BOUNDS.arrayItems} more of ${value.length} items]`);
      return kept;
    }
    const entries = Object.entries(value);
    const out: Record<string, unknown> = {};
    for (const [key, item] of entries.slice(0, VALUE_BOUNDS.objectKeys)) out[truncateText(key, 200)] = boundInner(item, depth + 1, seen);
    if (entries.length > VALUE_BOUNDS.objectKeys) out['…'] = `[truncated: ${entries.length - VALUE_BOUNDS.objectKeys} more of ${entries.length} keys]`;
    return out;
  } finally {
    seen.delete(value);
  }
}

/** A serialized error (pino's `err` serializer output): message and stack cut, every other field bounded. */
export function boundedError<T extends Record<string, unknown>>(serialized: T): T {
  const out: Record<string, unknown> = {};
  for (const [key, item] of Object.entries(serialized)) {
    if (key === 'message' && typeof item === 'string') out[key] = truncateText(item, MAX_ERROR_MESSAGE_CHARS);
    else if (key === 'stack' && typeof item === 'string') out[key] = truncateText(item, MAX_ERROR_STACK_CHARS);
    else out[key] = boundValue(item);
  }
  return out as T;
}
