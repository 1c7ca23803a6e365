// The logger's secret net (worker/log-redaction.ts) on real log lines: every field that can carry a credential is
// censored at the top of a line, one level down, in child bindings, inside serialized errors and contexts, and in
// request headers; other fields pass unchanged, and the caller's own objects are never modified.
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CENSOR, SECRET_FIELDS } from '../worker/log-redaction.js';
import { createLogger } from '../worker/logger.js';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: createLogger({ level: 'info', format: 'json', destination }), lines };
}

const SECRET = 'hunter2-s3cr3t';

describe('log redaction', () => {
  it('censors every secret field at the top level and one level down, and leaves the rest alone', () => {
    const { log, lines } = capture();
    for (const field of SECRET_FIELDS) {
      log.info({ [field]: SECRET, nested: { [field]: SECRET, keep: 'visible' }, count: 3 }, `field ${field}`);
    }
    expect(lines).toHaveLength(SECRET_FIELDS.size);
    for (const line of lines) {
      expect(JSON.stringify(line)).not.toContain(SECRET);
      expect(line).toMatchObject({ nested: { keep: 'visible' }, count: 3 });
    }
    const [first] = lines;
    const field = [...SECRET_FIELDS][0]!;
    expect(first![field]).toBe(CENSOR);
    expect((first!.nested as Record<string, unknown>)[field]).toBe(CENSOR);
  });

  it('censors request headers, bindings of child loggers, serialized errors and contexts', () => {
    const { log, lines } = capture();
    log.info({ headers: { authorization: `Bearer ${SECRET}`, accept: 'text/csv' }, req: { headers: { authorization: SECRET } } }, 'request');
    const child = log.child({ job_id: 7, connection: { password: SECRET } });
    child.info('from a child');
    child.child({ env: { HOME: '/root' }, step: 'grandchild' }).info('from a grandchild');
    const error = Object.assign(new Error('connect failed'), { password: SECRET, code: 'ECONNREFUSED' });
    log.error({ err: error, context: { connectionString: `postgres://u:${SECRET}@h/db`, table: 'jobs' } }, 'failed');
    const text = lines.map((line) => JSON.stringify(line)).join('\n');
    expect(text).not.toContain(SECRET);
    expect(lines[0]).toMatchObject({ headers: { authorization: CENSOR, accept: 'text/csv' }, req: { headers: { authorization: CENSOR } } });
    expect(lines[1]).toMatchObject({ job_id: 7, connection: { password: CENSOR }, msg: 'from a child' });
    expect(lines[2]).toMatchObject({ job_id: 7, env: CENSOR, step: 'grandchild' });
    expect(lines[3]).toMatchObject({ err: { message: 'connect failed', code: 'ECONNREFUSED', password: CENSOR }, context: { connectionString: CENSOR, table: 'jobs' } });
  });

  it('never changes the objects it was given', () => {
    const { log, lines } = capture();
    const settings = { password: SECRET, pool: { connectionString: SECRET, max: 10 } };
    const snapshot = structuredClone(settings);
    log.info(settings, 'settings');
    expect(settings).toEqual(snapshot);
    expect(JSON.stringify(lines[0])).not.toContain(SECRET);
  });
});
