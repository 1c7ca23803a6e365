// A run moves between the partitions of jobs (migration 20261206063000) when the archiver files it away and when an
// operator requeues an archived run. A statement that waited on the row's lock while it moved, or that locks the row
// after the move committed but saw it before, fails with SQLSTATE 40001 ("tuple to be locked was already moved to
// another partition due to concurrent update"), even with SKIP LOCKED: the row it found is gone from that partition,
// and Postgres will not guess. The statement did nothing, so the transaction can run again, and then finds the run
// where it now is. In READ COMMITTED (every transaction of ours that reaches here) 40001 has no other cause.
import { setTimeout as sleep } from 'node:timers/promises';

export const ROW_MOVED_SQLSTATE = '40001';

export const isRowMoved = (error: unknown): boolean => (error as { code?: unknown } | null)?.code === ROW_MOVED_SQLSTATE;

/**
 * Runs `work` (a whole transaction, or one statement outside any), again when a run moved under it: at most `tries`
 * times, after a short random pause that grows with each try, so that two bulk statements over the same runs (an
 * archiver round and a replay of every dead run) stop meeting.
 */
export async function retryWhenRowMoved<T>(work: () => Promise<T>, tries = 5): Promise<T> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await work();
    } catch (error) {
      if (!isRowMoved(error) || attempt >= tries) throw error;
      await sleep(Math.random() * 20 * attempt);
    }
  }
}
