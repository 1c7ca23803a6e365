// A backfill batch is one transaction holding its rows' locks until it commits, and each of its statements runs under
// the payload's `batchTimeoutMs`. A batch that outlasts it is rolled back by the server and tried again with half the
// rows (same cursor), down to one row; a row that cannot be written within the timeout at all fails the run with
// BACKFILL_BATCH_TIMEOUT and leaves the rows before it written. The slow batches here come from a statement trigger on
// `documents` that sleeps when an UPDATE writes more rows than a threshold (or writes one given row): what the
// batches do is decided by their size, not by this machine's speed. The timeout itself is the only clock.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { BatchSizer, GROW_AFTER_QUICK_BATCHES } from '../worker/backfills/batch-sizer.js';
import { defaultBackfills } from '../worker/backfills/registry.js';
import { undoBackfill, type UndoOutcome, type UndoRetry } from '../worker/backfills/undo.js';
import { backfillHandler } from '../worker/handlers/backfill.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { insertHistoricalDocuments } from './support/historical-documents.js';
import { runCliJson } from './support/cli-runner.js';
import { settledJob, testWorker, waitFor } from './support/in-process-worker.js';
import { recordingLogger, type RecordingLogger } from './support/recording-logger.js';

const env = useTestEnvironment();
let worker: Worker | undefined;
let recorded: RecordingLogger;
const logLines = () => recorded.lines();

/** A statement trigger on documents: an UPDATE for which `slow` (SQL over the transition table `written`) holds sleeps. */
async function slowUpdatesWhen(slow: string): Promise<void> {
  await env.pool.query(`
    CREATE TABLE test_committed_batches (rows integer NOT NULL, first_id bigint);
    CREATE FUNCTION test_slow_batches() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF ${slow} THEN PERFORM pg_sleep(600); END IF;
      INSERT INTO test_committed_batches SELECT count(*), min(id) FROM written;
      RETURN NULL;
    END $$;
    CREATE TRIGGER test_slow_batches AFTER UPDATE ON documents REFERENCING NEW TABLE AS written
      FOR EACH STATEMENT EXECUTE FUNCTION test_slow_batches();`);
}

/** The sizes of the batches that wrote rows and committed, in commit order. */
async function committedBatches(): Promise<number[]> {
  const { rows } = await env.pool.query<{ rows: number }>('SELECT rows FROM test_committed_batches WHERE rows > 0 ORDER BY first_id');
  return rows.map((row) => row.rows);
}

beforeEach(() => {
  recorded = recordingLogger('info');
});
afterEach(async () => {
  await worker?.stop();
  worker = undefined;
  await env.pool.query(`
    DROP TRIGGER IF EXISTS test_slow_batches ON documents;
    DROP FUNCTION IF EXISTS test_slow_batches();
    DROP TABLE IF EXISTS test_committed_batches;
    TRUNCATE documents RESTART IDENTITY; TRUNCATE backfill_before_images; DELETE FROM jobs`);
});

async function runBackfill(payload: Record<string, unknown>) {
  worker = testWorker(env, [backfillHandler], { concurrency: 1 }, recorded.log);
  void worker.start();
  const { job } = await submitJob(env.pool, { kind: 'backfill', payload: { name: 'documents-file-extension', parallelism: 1, ...payload } });
  return settledJob(env.pool, job.id, 120_000);
}

/**
 * A backfill in batches of 4 under a 1 s batch timeout (so a 500 ms lock timeout), while an application transaction
 * holds row `id` FOR UPDATE: the row is let go once the run has logged `lockWaits` lock waits. The run, settled.
 */
async function backfillPastHeldRow(id: number, lockWaits: number): Promise<JobRow> {
  const writer = await env.pool.connect();
  try {
    await writer.query('BEGIN');
    await writer.query('SELECT id FROM documents WHERE id = $1 FOR UPDATE', [id]);
    worker = testWorker(env, [backfillHandler], { concurrency: 1 }, recorded.log);
    void worker.start();
    const { job } = await submitJob(env.pool, {
      kind: 'backfill',
      payload: { name: 'documents-file-extension', parallelism: 1, batchSize: 4, batchTimeoutMs: 1_000 },
    });
    const waited = () => logLines().filter((line) => line.msg === 'backfill batch rolled back; trying it again' && line.sqlstate === '55P03').length;
    await waitFor(async () => waited() >= lockWaits, 30_000, 20);
    await writer.query('COMMIT');
    return await settledJob(env.pool, job.id, 60_000);
  } finally {
    await writer.query('ROLLBACK').catch(() => {});
    writer.release();
  }
}

/** An undo of every run's before-images in batches of 4 under `batchTimeoutMs`, and the retries it reports. */
function undoInProcess(batchTimeoutMs: number): { undo: Promise<UndoOutcome>; retries: UndoRetry[] } {
  const retries: UndoRetry[] = [];
  const undo = undoBackfill(env.pool, defaultBackfills().require('documents-file-extension'), {
    tenantId: null,
    jobId: null,
    batchSize: 4,
    batchTimeoutMs,
    onRetry: (retry) => retries.push(retry),
  });
  return { undo, retries };
}

describe('backfill batches under a statement timeout', () => {
  it('halves a batch that outlasts the timeout and fills every row once, in batches that fit', async () => {
    await insertHistoricalDocuments(env.pool, 1_000);
    // A batch of more than 100 rows never ends by itself.
    await slowUpdatesWhen('(SELECT count(*) FROM written) > 100');
    const job = await runBackfill({ batchSize: 400, batchTimeoutMs: 1_500 });

    expect(job.lastError).toBeNull();
    expect(job).toMatchObject({ state: 'succeeded', attempts: 1 });
    expect(job.result).toMatchObject({ complete: true, remaining: 0, rowsWritten: 1_000 });
    // 400 and 200 timed out (a 100-row batch on a stalled machine may have too: then it went on at 50).
    expect(Number(job.result!.batchTimeouts)).toBeGreaterThanOrEqual(2);
    expect(job.progress).toMatchObject({ phase: 'done', done: 1_000 });
    // Every committed batch fit; together they wrote each row once (a rolled-back batch wrote nothing).
    const batches = await committedBatches();
    expect(Math.max(...batches)).toBeLessThanOrEqual(100);
    expect(batches.reduce((sum, rows) => sum + rows, 0)).toBe(1_000);
    const { rows: missing } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM documents WHERE file_extension IS NULL');
    expect(missing[0]!.n).toBe(0);
    // The operator sees why in the log: the rows asked for, then the half tried next.
    const halved = logLines().filter((line) => String(line.msg).includes('outlasted its statement timeout'));
    expect(halved.slice(0, 2).map((line) => [line.rows, line.next_rows])).toEqual([
      [400, 200],
      [200, 100],
    ]);
    expect(halved[0]).toMatchObject({ level: 40, batch_timeout_ms: 1_500, after: null, limit: 400 });
  });

  it('a row that no batch can write within the timeout fails the run, naming where, and the rows before it stay written', async () => {
    await insertHistoricalDocuments(env.pool, 20);
    await slowUpdatesWhen('EXISTS (SELECT 1 FROM written WHERE id = 6)');
    const job = await runBackfill({ batchSize: 4, batchTimeoutMs: 300 });

    expect(job.state).toBe('failed');
    expect(job.lastError).toMatchObject({
      code: 'BACKFILL_BATCH_TIMEOUT',
      class: 'permanent',
      // The one row after id 5: the cursor the run stopped at.
      context: { backfill: 'documents-file-extension', table: 'documents', batchTimeoutMs: 300, tries: 5, after: 5, limit: 1 },
    });
    expect(job.lastError!.message).toContain('batchTimeoutMs');
    // 1–4 in the first batch; 5 alone after 5–8 and 5–6 timed out; nothing of 6 and after.
    expect(await committedBatches()).toEqual([4, 1]);
    const { rows } = await env.pool.query<{ id: string }>('SELECT id FROM documents WHERE file_extension IS NOT NULL ORDER BY id');
    expect(rows.map((row) => Number(row.id))).toEqual([1, 2, 3, 4, 5]);
  });

  it("each stream sizes its own batches: a fast key range's quick batches do not grow back a slow range's", async () => {
    // Two streams: ids 1–10,000 and 10,001–20,000. In 10,001–10,300 an UPDATE of more than 100 of those rows never
    // ends, and one of up to 100 takes a second: slow (over a quarter of the timeout), so it never counts toward
    // growing. The first range's batches take 50 ms: quick. Sharing one size, the fast range's quick batches doubled it
    // back while the slow range worked through its rows at 100, and the slow range met 200 again, batch after batch.
    await insertHistoricalDocuments(env.pool, 20_000);
    await slowUpdatesWhen(`(SELECT count(*) FROM written WHERE id BETWEEN 10001 AND 10300) > 100
      OR (EXISTS (SELECT 1 FROM written WHERE id BETWEEN 10001 AND 10300) AND pg_sleep(1) IS NULL)
      OR (EXISTS (SELECT 1 FROM written WHERE id <= 10000) AND pg_sleep(0.05) IS NULL)`);
    const job = await runBackfill({ batchSize: 200, batchTimeoutMs: 2_000, parallelism: 2 });
    expect(job.lastError).toBeNull();
    expect(job.result).toMatchObject({ complete: true, rowsWritten: 20_000, partitions: 2, batchTimeouts: 1 });
    // The slow rows went in batches of 100 after the one timeout.
    const { rows } = await env.pool.query<{ rows: number }>('SELECT rows FROM test_committed_batches WHERE first_id BETWEEN 10001 AND 10300 ORDER BY first_id');
    expect(rows.map((row) => row.rows)).toEqual([100, 100, 100]);
  });

  it('lock waits do not use up the tries of a one-row batch that outlasts the timeout', async () => {
    await insertHistoricalDocuments(env.pool, 20);
    // Row 5's write never ends; row 7 is held by an application transaction first.
    await slowUpdatesWhen('EXISTS (SELECT 1 FROM written WHERE id = 5)');
    const failed = await backfillPastHeldRow(7, 2);
    expect(failed.lastError).toMatchObject({ code: 'BACKFILL_BATCH_TIMEOUT', context: { tries: 5, after: 4, limit: 1 } });
    // Five tries of the one row: four logged as tried again, the fifth failed the run.
    expect(logLines().filter((line) => line.msg === 'backfill batch of one row outlasted its statement timeout; trying it again')).toHaveLength(4);
  });

  it('a row a writer holds is a lock wait, tried again at the same size, never a batch to halve', async () => {
    await insertHistoricalDocuments(env.pool, 20);
    await slowUpdatesWhen('false');
    const done = await backfillPastHeldRow(6, 1);
    expect(done.lastError).toBeNull();
    expect(done.result).toMatchObject({ complete: true, rowsWritten: 20, batchTimeouts: 0, finalBatchSize: 4 });
    expect(await committedBatches()).toEqual([4, 4, 4, 4, 4]);
    expect(logLines().some((line) => String(line.msg).includes('outlasted its statement timeout'))).toBe(false);
  });

  it('`backfill undo` halves its batches the same way and restores every row once', async () => {
    await insertHistoricalDocuments(env.pool, 1_000);
    const job = await runBackfill({ batchSize: 1_000, saveBeforeImage: true });
    expect(job.result).toMatchObject({ complete: true, rowsWritten: 1_000, batchTimeouts: 0, finalBatchSize: 1_000 });
    await slowUpdatesWhen('(SELECT count(*) FROM written) > 100');
    const undo = await runCliJson<Record<string, unknown>>(env, [
      'backfill', 'undo', 'documents-file-extension', '--batch-size', '400', '--batch-timeout-ms', '1500',
    ]);
    expect(undo).toMatchObject({ restored: 1_000, skipped: 0 });
    expect(Number(undo.batchTimeouts)).toBeGreaterThanOrEqual(2);
    // 100, or 200 when its ten batches of 100 were quick enough to double it for the (empty) last one.
    expect(Number(undo.finalBatchSize)).toBeLessThan(400);
    const batches = await committedBatches();
    expect(Math.max(...batches)).toBeLessThanOrEqual(100);
    expect(batches.reduce((sum, rows) => sum + rows, 0)).toBe(1_000);
    const { rows } = await env.pool.query<{ filled: number; images: number }>(
      `SELECT (SELECT count(*)::int FROM documents WHERE file_extension IS NOT NULL) AS filled,
              (SELECT count(*)::int FROM backfill_before_images) AS images`,
    );
    expect(rows[0]).toEqual({ filled: 0, images: 0 });
  });

  it('`backfill undo` tries a batch again past a row a writer holds, and restores every row', async () => {
    await insertHistoricalDocuments(env.pool, 20);
    const job = await runBackfill({ batchSize: 20, saveBeforeImage: true });
    expect(job.result).toMatchObject({ complete: true, rowsWritten: 20 });
    const writer = await env.pool.connect();
    try {
      await writer.query('BEGIN');
      await writer.query('SELECT id FROM documents WHERE id = 6 FOR UPDATE');
      const { undo, retries } = undoInProcess(2_000);
      // Two lock waits past the lock timeout (1 s: half the batch timeout), then the writer commits without changing
      // the row. (A batch timeout of 2 s leaves a stalled machine room: a batch over it would count as a timeout.)
      await waitFor(async () => retries.length >= 2, 30_000, 20);
      await writer.query('COMMIT');
      expect(await undo).toMatchObject({ restored: 20, skipped: 0, batchTimeouts: 0 });
      expect(retries.slice(0, 2)).toEqual([
        // Before-images are walked in the text order of their keys: 6 comes after "5".
        { reason: 'lock', sqlstate: '55P03', try: 1, afterKey: '5' },
        { reason: 'lock', sqlstate: '55P03', try: 2, afterKey: '5' },
      ]);
    } finally {
      await writer.query('ROLLBACK').catch(() => {});
      writer.release();
    }
    const { rows } = await env.pool.query<{ filled: number }>('SELECT count(*)::int AS filled FROM documents WHERE file_extension IS NOT NULL');
    expect(rows[0]!.filled).toBe(0);
  });

  it('`backfill undo` tries a one-row batch that outlasts the timeout five times, then stops with the key before it', async () => {
    await insertHistoricalDocuments(env.pool, 12);
    const job = await runBackfill({ batchSize: 12, saveBeforeImage: true });
    expect(job.result).toMatchObject({ complete: true, rowsWritten: 12 });
    // Restoring row 5 never ends.
    await slowUpdatesWhen('EXISTS (SELECT 1 FROM written WHERE id = 5)');
    // 1 s, not less: every batch must commit within it, the quick ones too, on a busy machine.
    const { undo, retries } = undoInProcess(1_000);
    await expect(undo).rejects.toThrow(
      'backfill undo documents-file-extension: the before-images after key "4" could not be restored within the batch timeout of 1000 ms in 5 tries',
    );
    // Keys in text order: 1, 10, 11, 12 restored; 2–5 timed out, 2–3 restored; 4–5 timed out, 4 restored; then row 5
    // alone five times (no try counted for the halvings): four tried again, the fifth stopped the undo.
    expect(retries).toEqual([1, 2, 3, 4].map((n) => ({ reason: 'timeout', sqlstate: '57014', try: n, afterKey: '4' })));
    expect(await committedBatches()).toEqual([4, 2, 1]);
    const { rows } = await env.pool.query<{ id: string }>('SELECT id FROM documents WHERE file_extension IS NULL ORDER BY id');
    expect(rows.map((row) => Number(row.id))).toEqual([1, 2, 3, 4, 10, 11, 12]);
  });

  it('refuses a batch timeout out of range before the run is queued', async () => {
    await expect(submitJob(env.pool, { kind: 'backfill', payload: { name: 'documents-file-extension', batchTimeoutMs: 50 } })).rejects.toThrow(/batchTimeoutMs/);
  });
});

describe('BatchSizer', () => {
  it('halves down to one row, and doubles back to the configured size after quick full batches in a row', () => {
    const sizer = new BatchSizer(1_000, 10_000);
    expect(sizer.current).toBe(1_000);
    expect(sizer.timedOut(1_000)).toBe(500);
    expect(sizer.timedOut(500)).toBe(250);
    // A stream that asked for 1,000 before another's timeout: that says nothing about the 250 now in use.
    expect(sizer.timedOut(1_000)).toBe(250);
    for (let i = 0; i < 7; i += 1) sizer.timedOut(sizer.current);
    expect(sizer.current).toBe(1);
    expect(sizer.timedOut(1)).toBe(1);
    expect(sizer.timeouts).toBe(11);

    // Quick (under a quarter of the timeout), full batches: every tenth doubles the size.
    const grow = () => {
      let grew = false;
      for (let i = 0; i < GROW_AFTER_QUICK_BATCHES; i += 1) grew = sizer.committed(sizer.current, 100);
      return grew;
    };
    expect(grow()).toBe(true);
    expect(sizer.current).toBe(2);
    // A short batch (the end of a range) or a slow one does not count, and a slow one starts the count again.
    for (let i = 0; i < GROW_AFTER_QUICK_BATCHES - 1; i += 1) sizer.committed(2, 100);
    expect(sizer.committed(1, 100)).toBe(false);
    expect(sizer.committed(2, 2_500)).toBe(false);
    for (let i = 0; i < GROW_AFTER_QUICK_BATCHES - 1; i += 1) expect(sizer.committed(2, 100)).toBe(false);
    expect(sizer.committed(2, 100)).toBe(true);
    expect(sizer.current).toBe(4);
    while (sizer.current < 1_000) grow();
    expect(sizer.current).toBe(1_000);
    expect(grow()).toBe(false);
  });

  it('a resumed run starts at the size its earlier attempt came down to, never above the configured one', () => {
    expect(new BatchSizer(1_000, 10_000, 125).current).toBe(125);
    expect(new BatchSizer(100, 10_000, 125).current).toBe(100);
    expect(new BatchSizer(100, 10_000, 'x').current).toBe(100);
    expect(new BatchSizer(100, 10_000, 0).current).toBe(100);
  });
});
