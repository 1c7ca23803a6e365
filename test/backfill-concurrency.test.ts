// Backfills against concurrent writers: 200,000 rows filled while writers keep changing some of them; every row ends
// filled and no concurrent write is lost or overwritten. Rows a writer changes between the batch's read and its write
// are retried in a later batch (SQL and TypeScript computes). A compute that fails names the row and loses nothing.
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { BackfillRegistry } from '../worker/backfills/registry.js';
import type { BackfillDefinition } from '../worker/backfills/types.js';
import { createPool, type Pool } from '../worker/db/pool.js';
import { createBackfillHandler } from '../worker/handlers/backfill.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const workers: Worker[] = [];
let writers: Pool;

// name_key is the derived field: lower(btrim(name)). "New code" writes it together with name; "old code" only
// changes name (on rows that do not have the field yet); other writers touch unrelated columns.
const itemsNameKey: BackfillDefinition = {
  name: 'items-name-key',
  description: 'test: items.name_key from name (SQL)',
  table: 'backfill_items',
  key: { column: 'id', type: 'bigint' },
  tenantColumn: 'tenant_id',
  targetColumn: 'name_key',
  sourceColumns: ['name'],
  compute: { language: 'sql', expression: (row) => `lower(btrim(${row}.name))` },
};
const itemsNameKeyTs: BackfillDefinition = {
  ...itemsNameKey,
  name: 'items-name-key-ts',
  description: 'test: items.name_key from name (TypeScript)',
  compute: { language: 'typescript', valueType: 'text', compute: (row) => String(row.name).trim().toLowerCase() },
};
const itemsFailing: BackfillDefinition = {
  ...itemsNameKey,
  name: 'items-failing',
  description: 'test: refuses names containing "poison"',
  compute: {
    language: 'typescript',
    valueType: 'text',
    compute: (row) => {
      if (String(row.name).includes('poison')) throw new Error('cannot derive a key from a poisoned name');
      return String(row.name).trim().toLowerCase();
    },
  },
};
// A compute that writes (nextval): the dry run's read-only batches refuse it.
const itemsWriting: BackfillDefinition = {
  ...itemsNameKey,
  name: 'items-writing',
  description: 'test: a compute that takes a sequence value',
  compute: { language: 'sql', expression: () => `nextval('backfill_items_seq')::text` },
};
const handler = createBackfillHandler(new BackfillRegistry([itemsNameKey, itemsNameKeyTs, itemsFailing, itemsWriting]));

beforeAll(async () => {
  await env.pool.query(`CREATE TABLE backfill_items (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id text    NOT NULL,
    name      text    NOT NULL,
    name_key  text,
    touches   integer NOT NULL DEFAULT 0
  )`);
  await env.pool.query('CREATE SEQUENCE backfill_items_seq');
  writers = createPool(env.databaseUrl, { max: 6, applicationName: 'backfill-test-writers' });
});
afterEach(async () => {
  await Promise.all(workers.splice(0).map((worker) => worker.stop()));
  await env.pool.query('TRUNCATE backfill_items RESTART IDENTITY; DELETE FROM jobs');
});
afterAll(async () => {
  await writers?.end();
});

async function insertItems(count: number): Promise<void> {
  await env.pool.query(
    `INSERT INTO backfill_items (tenant_id, name)
     SELECT 'tenant-' || (g % 3), '  Item ' || g || ' ' || (ARRAY['Alpha', 'BETA', 'gamma'])[1 + g % 3] || '  '
     FROM generate_series(1, $1::int) AS g`,
    [count],
  );
  await env.pool.query('ANALYZE backfill_items');
}

function startWorker(): void {
  const worker = testWorker(env, [handler], { concurrency: 2, leaseMs: 10_000, heartbeatMs: 1_000 });
  workers.push(worker);
  void worker.start();
}

async function runToEnd(payload: Record<string, unknown>): Promise<JobRow> {
  const { job } = await enqueueJob(env.pool, { kind: 'backfill', payload });
  return finished(job.id);
}

function finished(jobId: number, timeoutMs = 120_000): Promise<JobRow> {
  return waitFor(async () => {
    const job = await requireJob(env.pool, jobId);
    return ['succeeded', 'partial', 'failed', 'dead', 'canceled'].includes(job.state) ? job : undefined;
  }, timeoutMs, 100);
}

interface WriterLog {
  /** Last name_key a "new code" writer stored, per id. */
  markers: Map<number, string>;
  /** Increments of `touches`, per id. */
  touches: Map<number, number>;
  writes: number;
  sourceOnlyWrites: number;
}

/**
 * Writers that run until `stop` resolves. Writer k owns the ids ≡ k (mod count), so each row's writes happen one
 * after another and the log knows the last value written.
 */
async function runWriters(count: number, maxId: number, stop: Promise<void>): Promise<WriterLog> {
  const log: WriterLog = { markers: new Map(), touches: new Map(), writes: 0, sourceOnlyWrites: 0 };
  let stopped = false;
  void stop.then(() => {
    stopped = true;
  });
  await Promise.all(
    Array.from({ length: count }, async (_, writer) => {
      let seq = 0;
      while (!stopped) {
        seq += 1;
        const id = 1 + writer + count * Math.floor((Math.random() * maxId) / count);
        if (id > maxId) continue;
        const kind = seq % 3;
        if (kind === 0) {
          const marker = `writer-${writer}-${seq}`;
          await writers.query('UPDATE backfill_items SET name = $2, name_key = $3 WHERE id = $1', [id, `Written ${seq}`, marker]);
          log.markers.set(id, marker);
        } else if (kind === 1) {
          const { rowCount } = await writers.query(
            'UPDATE backfill_items SET name = $2 WHERE id = $1 AND name_key IS NULL',
            [id, `  Renamed ${writer}-${seq} MIXED Case `],
          );
          log.sourceOnlyWrites += rowCount ?? 0;
        } else {
          await writers.query('UPDATE backfill_items SET touches = touches + 1 WHERE id = $1', [id]);
          log.touches.set(id, (log.touches.get(id) ?? 0) + 1);
        }
        log.writes += 1;
      }
    }),
  );
  return log;
}

async function expectEveryRowFilledAndNoWriteLost(log: WriterLog): Promise<void> {
  const { rows } = await env.pool.query<{ id: number; name: string; name_key: string | null; touches: number }>(
    'SELECT id, name, name_key, touches FROM backfill_items ORDER BY id',
  );
  const problems: string[] = [];
  for (const row of rows) {
    const marker = log.markers.get(row.id);
    const expected = marker ?? row.name.trim().toLowerCase();
    if (row.name_key !== expected) problems.push(`row ${row.id}: name_key ${JSON.stringify(row.name_key)}, expected ${JSON.stringify(expected)}`);
    if (row.touches !== (log.touches.get(row.id) ?? 0)) problems.push(`row ${row.id}: touches ${row.touches}, expected ${log.touches.get(row.id) ?? 0}`);
  }
  expect(problems.slice(0, 10)).toEqual([]);
}

describe('backfill with concurrent writers', () => {
  it('200,000 rows: every row ends filled, no concurrent write is overwritten or lost', async () => {
    const total = 200_000;
    await insertItems(total);
    startWorker();
    let stopWriters!: () => void;
    const writing = runWriters(4, total, new Promise<void>((resolve) => (stopWriters = resolve)));
    const job = await runToEnd({ name: 'items-name-key', batchSize: 2_000, parallelism: 2 });
    stopWriters();
    const log = await writing;

    expect(job.state).toBe('succeeded');
    expect(job.result).toMatchObject({ complete: true, remaining: 0, rowsInScope: total, unresolvedConflicts: 0 });
    // The writers were busy while the job ran: source changes and writes of the field itself raced the batches.
    expect(log.writes).toBeGreaterThan(500);
    expect(log.markers.size).toBeGreaterThan(100);
    // Rows written by "new code" were never touched by the backfill; every other row was.
    expect((job.result as { rowsWritten: number }).rowsWritten).toBeLessThanOrEqual(total);
    expect((job.result as { rowsWritten: number }).rowsWritten).toBeGreaterThanOrEqual(total - log.markers.size);
    expect(job.progress).toMatchObject({ done: (job.result as { rowsWritten: number }).rowsWritten, phase: 'done' });
    await expectEveryRowFilledAndNoWriteLost(log);
  });

  it('TypeScript compute, 20,000 rows with writers: same guarantees through the row-version check', async () => {
    const total = 20_000;
    await insertItems(total);
    startWorker();
    let stopWriters!: () => void;
    const writing = runWriters(3, total, new Promise<void>((resolve) => (stopWriters = resolve)));
    const job = await runToEnd({ name: 'items-name-key-ts', batchSize: 500, parallelism: 2 });
    stopWriters();
    const log = await writing;

    expect(job.state).toBe('succeeded');
    expect(job.result).toMatchObject({ complete: true, remaining: 0 });
    expect(log.writes).toBeGreaterThan(100);
    await expectEveryRowFilledAndNoWriteLost(log);
  });

  for (const name of ['items-name-key', 'items-name-key-ts']) {
    it(`${name}: a row changed between read and write is not overwritten; it is retried and filled from the new value`, async () => {
      await insertItems(5_000);
      // A writer holds two rows the first batch will read: it renames row 10 (old code) and writes row 20 in full
      // (new code), and commits only once the batch waits for its locks.
      const writer = new pg.Client({ connectionString: env.databaseUrl });
      await writer.connect();
      try {
        await writer.query('BEGIN');
        await writer.query("UPDATE backfill_items SET name = '  Renamed While Read ' WHERE id = 10");
        await writer.query("UPDATE backfill_items SET name = 'Written', name_key = 'written-by-the-app' WHERE id = 20");
        startWorker();
        const { job } = await enqueueJob(env.pool, { kind: 'backfill', payload: { name, batchSize: 1_000, parallelism: 1 } });
        // The batch's own wait, in this file's database: the server is shared with the test files running beside this
        // one, whose lock waits (a row-version lock has no database of its own in pg_locks) once let the writer commit
        // before the batch had read the rows, and the run met no conflict.
        await waitFor(async () => {
          const { rows } = await env.pool.query(
            `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE NOT l.granted AND l.locktype = 'transactionid' AND a.datname = current_database()`,
          );
          return rows[0].n > 0;
        });
        await writer.query('COMMIT');
        const done = await finished(job.id);

        expect(done.state).toBe('succeeded');
        expect(done.result).toMatchObject({ complete: true, remaining: 0, conflicts: 2, rowsWritten: 4_999 });
        const { rows } = await env.pool.query('SELECT id, name_key FROM backfill_items WHERE id IN (10, 20, 30) ORDER BY id');
        expect(rows).toEqual([
          { id: 10, name_key: 'renamed while read' },
          { id: 20, name_key: 'written-by-the-app' },
          { id: 30, name_key: 'item 30 alpha' },
        ]);
      } finally {
        await writer.end();
      }
    });
  }

  it('a compute that fails on a row fails the job naming the row; committed batches stay, the rest stays untouched', async () => {
    await insertItems(3_000);
    await env.pool.query("UPDATE backfill_items SET name = 'poison pill' WHERE id = 2500");
    startWorker();
    const job = await runToEnd({ name: 'items-failing', batchSize: 1_000, parallelism: 1 });

    expect(job.state).toBe('failed');
    expect(job.lastError).toMatchObject({ code: 'BACKFILL_COMPUTE_FAILED', internal: true, context: { backfill: 'items-failing', key: 2500 } });
    expect(job.lastError?.message).toContain('poisoned name');
    const { rows } = await env.pool.query(
      'SELECT count(*) FILTER (WHERE name_key IS NOT NULL)::int AS filled, min(id) FILTER (WHERE name_key IS NULL)::int AS first_missing FROM backfill_items',
    );
    // The two batches before the bad row committed (with their cursor); the failing batch wrote nothing.
    expect(rows[0]).toEqual({ filled: 2_000, first_missing: 2_001 });
    expect(job.progress).toMatchObject({ done: 2_000, partitions: [{ cursor: 2_000, finished: false }] });
  });
});

describe('a dry run of a compute that writes', () => {
  it('fails at once, naming the write: its read-only batch refused it (not a database outage to wait out)', async () => {
    await insertItems(50);
    startWorker();
    const job = await runToEnd({ name: 'items-writing', dryRun: true });
    expect(job.state).toBe('failed');
    expect(job.attempts).toBe(1);
    expect(job.lastError).toMatchObject({ code: 'BACKFILL_DRY_RUN_WRITES', class: 'permanent' });
    expect(job.lastError!.message).toContain('a dry run must not do');
  });
});
