// A logger (the worker's own, JSON lines) whose output a test reads back.
import { Writable } from 'node:stream';
import { createLogger, type Logger } from '../../worker/logger.js';

export interface RecordingLogger {
  log: Logger;
  /** Everything written so far. */
  text(): string;
  /** The lines written so far, parsed. */
  lines(): Array<Record<string, unknown>>;
}

export function recordingLogger(level: 'debug' | 'info' = 'debug'): RecordingLogger {
  const written: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      written.push(chunk.toString());
      done();
    },
  });
  const text = () => written.join('');
  return {
    log: createLogger({ level, format: 'json', destination }),
    text,
    lines: () => text().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}
