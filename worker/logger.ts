// pino, writing JSON lines (what CloudWatch Logs ingests) unless LOG_FORMAT=pretty or, with the default `auto`,
// stdout is a terminal and pino-pretty is installed (it is a devDependency, absent from the production image).
import { createRequire } from 'node:module';
import { isSpanContextValid, trace } from '@opentelemetry/api';
import { pino, stdSerializers, type DestinationStream, type Logger } from 'pino';
import { boundedError, boundValue } from './bounds.js';
import type { LogFormat, LogLevel } from './config.js';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  name?: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to read them back. */
  destination?: DestinationStream;
}

// Errors and their context are logged bounded (bounds.ts): an error message holding a whole CSV header or payload
// field would otherwise make one log line of megabytes. The keys are the ones failures are logged under.
function serializeError(value: unknown): unknown {
  return value instanceof Error ? boundedError(stdSerializers.err(value) as unknown as Record<string, unknown>) : boundValue(value);
}
const SERIALIZERS = { err: serializeError, error: serializeError, cause: serializeError, context: (value: unknown) => boundValue(value) };

/**
 * Fields that can carry a credential if some code path ever logs a configuration, a connection's settings or an
 * environment: their values are replaced before the line is written. (Messages built by this project never include a
 * secret; this is the net under that rule.)
 */
export const REDACTED_PATHS = [
  'databaseUrl', '*.databaseUrl', 'connectionString', '*.connectionString', 'password', '*.password',
  'DATABASE_URL', '*.DATABASE_URL', 'AWS_SECRET_ACCESS_KEY', '*.AWS_SECRET_ACCESS_KEY', 'secretAccessKey',
  '*.secretAccessKey', 'sessionToken', '*.sessionToken', 'credentials', '*.credentials', 'env', '*.env',
  'headers.authorization', '*.headers.authorization', 'token', '*.token',
];

/**
 * trace_id and span_id of the active span on every line written inside one (a run's attempt, an API request), so a
 * line leads to its trace and back. Nothing when tracing is off: the API then has no active span.
 */
function traceFields(): Record<string, string> {
  const span = trace.getActiveSpan();
  if (!span) return {};
  const { traceId, spanId, traceFlags } = span.spanContext();
  return isSpanContextValid(span.spanContext()) ? { trace_id: traceId, span_id: spanId, trace_flags: `0${traceFlags.toString(16)}` } : {};
}

export function createLogger(options: LoggerOptions): Logger {
  const base = {
    level: options.level,
    name: options.name ?? 'bulk-import-worker',
    mixin: traceFields,
    serializers: SERIALIZERS,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
  };
  if (options.destination) return pino(base, options.destination);
  const pretty = wantsPretty(options.format) ? loadPretty() : undefined;
  return pretty ? pino(base, pretty) : pino(base);
}

function wantsPretty(format: LogFormat): boolean {
  return format === 'pretty' || (format === 'auto' && process.stdout.isTTY === true);
}

function loadPretty(): DestinationStream | undefined {
  try {
    const require = createRequire(import.meta.url);
    const pretty = require('pino-pretty') as (options: object) => DestinationStream;
    return pretty({ colorize: process.stdout.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
  } catch {
    return undefined;
  }
}
