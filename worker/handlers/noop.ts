// `noop`: sleeps and succeeds. Operators enqueue it as a smoke test after a deploy; benchmarks use it too.
import { setTimeout as sleep } from 'node:timers/promises';
import { PermanentJobError, TransientJobError } from '../queue/errors.js';
import { NOOP_KIND } from './kinds.js';
import { PayloadReader } from './payload.js';
import type { JobHandler } from './types.js';

export interface NoopPayload {
  sleepMs: number;
  /** For tests of the failure paths: fail with this class of error instead of succeeding. */
  fail?: 'transient' | 'permanent' | undefined;
}

export const noopHandler: JobHandler<NoopPayload> = {
  kind: NOOP_KIND,
  description: 'does nothing for sleepMs milliseconds; a smoke test after a deploy',
  parsePayload(raw) {
    const read = new PayloadReader(NOOP_KIND, raw);
    read.onlyKnown(['sleepMs', 'fail', 'seq']);
    const fail = read.optionalString('fail', /^(transient|permanent)$/, '"transient" or "permanent"');
    return { sleepMs: read.optionalInteger('sleepMs', 0, 3_600_000) ?? 0, fail: fail as NoopPayload['fail'] };
  },
  async run({ payload, signal, log }) {
    if (payload.sleepMs > 0) await sleep(payload.sleepMs, undefined, { signal });
    if (payload.fail) {
      const ErrorClass = payload.fail === 'permanent' ? PermanentJobError : TransientJobError;
      throw new ErrorClass(`noop asked to fail (${payload.fail})`, `NOOP_${payload.fail.toUpperCase()}`, { sleepMs: payload.sleepMs });
    }
    log.debug({ sleptMs: payload.sleepMs }, 'noop done');
    return { result: { sleptMs: payload.sleepMs } };
  },
};
