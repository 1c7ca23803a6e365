// pino, writing JSON lines (what CloudWatch Logs ingests) unless LOG_FORMAT=pretty or, with the default `auto`,
// stdout is a terminal and pino-pretty is installed (it is a devDependency, absent from the production image).
import { once, type EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { isSpanContextValid, trace } from '@opentelemetry/api';
import { pino, stdSerializers, type DestinationStream, type Logger } from 'pino';
import { boundedError, boundValue } from './bounds.js';
import type { LogFormat, LogLevel } from './config.js';
import { censorSecrets, censorSerialized } from './log-redaction.js';
import { countChunkBytes } from './log-stream.js';

export type { Logger } from 'pino';

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  name?: string;
  /** Where lines go; defaults to stdout. Tests pass a stream to read them back. */
  destination?: DestinationStream;
}

// Errors and their context are logged bounded (bounds.ts): an error message holding a whole CSV header or payload
// field would otherwise make one log line of megabytes. The keys are the ones failures are logged under. What they
// return is censored like the line itself (log-redaction.ts): serializers run after the line's formatter.
function serializeError(value: unknown): unknown {
  return censorSerialized(value instanceof Error ? boundedError(stdSerializers.err(value) as unknown as Record<string, unknown>) : boundValue(value));
}
const SERIALIZERS = { err: serializeError, error: serializeError, cause: serializeError, context: (value: unknown) => censorSerialized(boundValue(value)) };

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
    formatters: { log: censorSecrets },
  };
  const destination = options.destination ?? (wantsPretty(options.format) ? loadPretty() : undefined);
  const logger = destination ? pino(base, destination) : pino(base);
  // A sonic-boom destination (pino's own on stdout) counts its pending bytes (log-stream.ts); other streams stay as they are.
  countChunkBytes(streamOf(logger));
  return censoringChildBindings(logger);
}

/** The stream a pino logger writes to. */
export function streamOf(log: Logger): unknown {
  return (log as unknown as Record<symbol, unknown>)[pino.symbols.streamSym];
}

/**
 * Resolves once the lines the logger wrote are out of the process (or after `timeoutMs`). pino writes to stdout
 * asynchronously, one write in flight at a time, and at exit writes the rest synchronously: a process that exits
 * while a write is in flight has its last lines reordered (seen: "worker stopped" before the line logged just before
 * it) or lost. pino's own flush() returns without waiting for the write in flight.
 */
export async function logsWritten(log: Logger, timeoutMs = 2_000): Promise<void> {
  const stream = streamOf(log) as (EventEmitter & { _writing?: boolean }) | undefined;
  // `_writing` is SonicBoom's (pino's destination) own flag; a destination without it is written synchronously.
  if (stream?._writing !== true) return;
  await once(stream, 'drain', { signal: AbortSignal.timeout(timeoutMs) }).catch(() => {});
}

/**
 * pino applies no formatter to a child's bindings, so they are censored on their way in. Children inherit from their
 * parent, so the children of children (and Fastify's request loggers) go through this too.
 */
function censoringChildBindings(logger: Logger): Logger {
  const pinoChild = logger.child;
  logger.child = function child(this: Logger, bindings: Record<string, unknown>, childOptions?: object) {
    return pinoChild.call(this, censorSecrets(bindings), childOptions);
  } as Logger['child'];
  return logger;
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
