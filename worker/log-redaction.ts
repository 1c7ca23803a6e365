// The net under the rule that no secret reaches a log line: fields that can carry a credential if some code path ever
// logs a configuration, a connection's settings, an environment or request headers are censored — at the top of a
// line and one level down (`password` and `connection.password`), in child-logger bindings and in what the error
// serializers return. Messages built by this project never include a secret; this only catches a mistake.
//
// It replaces pino's `redact` option on purpose: that option's wildcard paths (`*.password`) run its redaction over
// every value of every line, which cost a fifth of a busy worker's CPU (bench:queue, black box). This checks a fixed
// set of names on the line's plain objects and copies only the objects it censors; the caller's objects are never
// changed.

/** The field names censored wherever they appear (top level, or inside a top-level object). */
export const SECRET_FIELDS: ReadonlySet<string> = new Set([
  'databaseUrl', 'connectionString', 'password', 'DATABASE_URL', 'AWS_SECRET_ACCESS_KEY', 'secretAccessKey',
  'sessionToken', 'credentials', 'env', 'token',
]);

export const CENSOR = '[redacted]';

/** Objects written as they are (an object literal, JSON): not class instances, whose copy would lose their shape. */
function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

/** `object` with its own secret fields (and `headers.authorization`) censored: a copy if any, else `object` itself. */
function censorFields(object: Record<string, unknown>): Record<string, unknown> {
  let copy: Record<string, unknown> | undefined;
  for (const name of SECRET_FIELDS) {
    if (Object.hasOwn(object, name) && object[name] !== undefined) (copy ??= { ...object })[name] = CENSOR;
  }
  const headers = object.headers;
  if (isPlainObject(headers) && Object.hasOwn(headers, 'authorization')) (copy ??= { ...object }).headers = { ...headers, authorization: CENSOR };
  return copy ?? object;
}

/** A log line's object (or bindings) with every secret field censored, at the top level and one level down. */
export function censorSecrets<T extends Record<string, unknown>>(object: T): T {
  let line = censorFields(object);
  for (const key in line) {
    const value = line[key];
    if (!isPlainObject(value)) continue;
    const censored = censorFields(value);
    if (censored === value) continue;
    if (line === object) line = { ...object };
    line[key] = censored;
  }
  return line as T;
}

/** What a serializer returns, censored the same way (an error's own fields, a context object). */
export function censorSerialized(value: unknown): unknown {
  return isPlainObject(value) ? censorSecrets(value) : value;
}
