// CSV finalize with real worker processes: killed with SIGKILL mid-finalize and resumed by another worker, two
// imports creating the same references at the same time, and validation and finalize in separate pools. (A reference
// deleted mid-finalize: csv-batch-writer.test.ts.)
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { finalizeImport, submitJob } from '../worker/api.js';
import { getCsvImportRun } from '../worker/imports/csv/run-record.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { csvLine, HEADER, rowFields, upload, validRow, type ProductRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';
import { killAll, killedSessionsEnded, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
// Leases long enough that a worker starved for a few seconds keeps its own (the attempt counts below are exact); the
// kill test waits out one of them.
const FAST = {
  WORKER_LEASE_MS: '5000',
  WORKER_HEARTBEAT_MS: '800',
  WORKER_RESCUE_INTERVAL_MS: '500',
  WORKER_POLL_INTERVAL_MS: '200',
  CSV_FINALIZE_CHUNK_SIZE: '50',
};
function worker(extra: Record<string, string> = {}): WorkerProcess {
  const process = spawnWorker(env, { env: { ...FAST, ...extra } });
  spawned.push(process);
  return process;
}
const started = (line: { msg: string }) => line.msg === 'worker started';

afterEach(async () => {
  await killAll(spawned.splice(0));
});
afterAll(async () => killAll(spawned));

function fileOf(rows: ProductRow[]): string {
  return [csvLine(HEADER), ...rows.map((row) => csvLine(rowFields(row)))].join('');
}

async function importObject(key: string, tenant: string): Promise<number> {
  const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: tenant, payload: { bucket: env.bucket, key, profile: 'products' } });
  return job.id;
}

async function until(jobId: number, states: string[], timeoutMs = 60_000): Promise<JobRow> {
  return waitFor(async () => {
    const job = await requireJob(env.pool, jobId);
    return states.includes(job.state) ? job : undefined;
  }, timeoutMs, 20);
}

/**
 * A 40,000-row file (800 batches of 50) of `tenant` validated and approved by a worker of its own, its finalize under
 * way: at least `batches` batches committed.
 */
async function finalizeUnderWay(tenant: string, skuPrefix: string, workerId: string, batches: number) {
  const rows = Array.from({ length: 40_000 }, (_, i) => validRow(i + 1, skuPrefix));
  const key = `imports/${tenant}/products.csv`;
  await upload(env.s3, env.bucket, key, fileOf(rows));
  const process = worker({ WORKER_ID: workerId });
  await process.waitForLog(started);
  const jobId = await importObject(key, tenant);
  expect((await until(jobId, ['review_ready'])).result).toMatchObject({ valid: 40_000, batches: 800 });
  await finalizeImport(env.pool, jobId);
  const run = await waitFor(async () => {
    const current = await getCsvImportRun(env.pool, jobId);
    return current && current.finalizedBatches >= batches ? current : undefined;
  }, 30_000, 10);
  return { rows, jobId, process, run };
}

describe('csv finalize with real worker processes', () => {
  it('kill -9 during finalize: the rerun resumes after the last committed batch, no row missing or written twice', async () => {
    const { rows, jobId, process: doomed, run: before } = await finalizeUnderWay('crash', 'K', 'doomed', 100);
    doomed.kill('SIGKILL');
    expect((await doomed.exited).signal).toBe('SIGKILL');
    await killedSessionsEnded(env);

    // What the dead worker left: exactly the committed batches, nothing of the one it was writing.
    const atKill = (await getCsvImportRun(env.pool, jobId))!;
    expect(atKill.finalizedBatches).toBeGreaterThanOrEqual(before.finalizedBatches);
    expect(atKill.finalizedBatches).toBeLessThan(800);
    const { rows: written } = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM products WHERE tenant_id = 'crash'");
    expect(written[0]!.n).toBe(atKill.finalizedBatches * 50);
    expect(atKill.rowsInserted).toBe(atKill.finalizedBatches * 50);

    const survivor = worker({ WORKER_ID: 'survivor' });
    const job = await until(jobId, ['succeeded', 'partial', 'failed', 'dead'], 60_000);
    expect(job).toMatchObject({ state: 'succeeded', kind: 'csv-finalize', leaseOwner: null });
    expect(job.lastError).toMatchObject({ code: 'LEASE_EXPIRED', worker: 'doomed' });
    expect(job.result).toMatchObject({
      valid: 40_000,
      inserted: 40_000,
      updated: 0,
      unchanged: 0, // a batch written twice would show up here
      batchesWrittenByEarlierAttempts: atKill.finalizedBatches,
    });
    const { rows: check } = await env.pool.query(
      `SELECT count(*)::int AS n, count(DISTINCT sku)::int AS skus, sum(quantity)::int AS quantity
       FROM products WHERE tenant_id = 'crash'`,
    );
    expect(check[0]).toEqual({ n: 40_000, skus: 40_000, quantity: rows.reduce((sum, row) => sum + Number(row.quantity), 0) });
    expect(survivor.logs.some((line) => line.msg === 'finalize resumes after the last committed batch')).toBe(true);
  });

  it('SIGTERM during finalize (a deploy, a scale-in): the run stops at a batch boundary, goes back without spending an attempt, and another worker finishes it', async () => {
    const { jobId, process: stopping } = await finalizeUnderWay('drain', 'T', 'stopping', 20);
    stopping.kill('SIGTERM');
    expect(await stopping.exited).toMatchObject({ code: 0 });

    // Released, not failed: back in the queue with its attempt given back and no error; exactly the committed batches written.
    const released = await requireJob(env.pool, jobId);
    expect(released).toMatchObject({ state: 'queued', kind: 'csv-finalize', attempts: 0, lastError: null, leaseOwner: null });
    const atStop = (await getCsvImportRun(env.pool, jobId))!;
    // The stop came early (800 batches to write; it stops within one of the signal): far from the end on any machine.
    expect(atStop.finalizedBatches).toBeLessThan(800);
    const { rows: written } = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM products WHERE tenant_id = 'drain'");
    expect(written[0]!.n).toBe(atStop.finalizedBatches * 50);

    worker({ WORKER_ID: 'next' });
    const job = await until(jobId, ['succeeded', 'partial', 'failed', 'dead'], 60_000);
    expect(job).toMatchObject({ state: 'succeeded', kind: 'csv-finalize', attempts: 1, lastError: null });
    expect(job.result).toMatchObject({ valid: 40_000, inserted: 40_000, unchanged: 0, batchesWrittenByEarlierAttempts: atStop.finalizedBatches });
    const { rows: check } = await env.pool.query("SELECT count(*)::int AS n, count(DISTINCT sku)::int AS skus FROM products WHERE tenant_id = 'drain'");
    expect(check[0]).toEqual({ n: 40_000, skus: 40_000 });
  });

  it('two imports that create the same categories and suppliers at the same time both succeed, without duplicates', async () => {
    // Both files name the same new references throughout (a new category every 25 rows), in opposite orders.
    const make = (prefix: string, n: number) =>
      Array.from({ length: n }, (_, i) => ({ ...validRow(i + 1, prefix), category: `Shared ${Math.floor(i / 25)}`, supplier: `Vendor ${i % 40}` }));
    const a = make('A', 6_000);
    const b = make('B', 6_000).reverse();
    await upload(env.s3, env.bucket, 'imports/shared/a.csv', fileOf(a));
    await upload(env.s3, env.bucket, 'imports/shared/b.csv', fileOf(b));
    // One finalize per worker at a time (a pool of its own is never prefetched): two at once are on both workers.
    const workers = [
      worker({ WORKER_ID: 'w1', WORKER_CONCURRENCY: '2', WORKER_KIND_CONCURRENCY: 'csv-finalize=1' }),
      worker({ WORKER_ID: 'w2', WORKER_CONCURRENCY: '2', WORKER_KIND_CONCURRENCY: 'csv-finalize=1' }),
    ];
    await Promise.all(workers.map((process) => process.waitForLog(started)));
    const jobs = [await importObject('imports/shared/a.csv', 'shared'), await importObject('imports/shared/b.csv', 'shared')];
    for (const id of jobs) await until(id, ['review_ready']);

    // A finalize takes a few hundred ms: a worker slow to wake on a busy machine could find the other one done. Both
    // wait at their first new reference behind this lock until both are claimed, so they run at the same time.
    const gate = await env.pool.connect();
    try {
      await gate.query('BEGIN');
      await gate.query('LOCK TABLE categories IN SHARE ROW EXCLUSIVE MODE');
      await Promise.all(jobs.map((id) => finalizeImport(env.pool, id)));
      const owners = await waitFor(async () => {
        const { rows } = await env.pool.query<{ lease_owner: string }>(
          "SELECT lease_owner FROM jobs WHERE id = ANY($1) AND kind = 'csv-finalize' AND state = 'running'",
          [jobs],
        );
        return rows.length === 2 ? rows.map((row) => row.lease_owner) : undefined;
      });
      // Running at once, one on each worker.
      expect(owners.sort()).toEqual(['w1', 'w2']);
    } finally {
      await gate.query('COMMIT');
      gate.release();
    }
    const done = await Promise.all(jobs.map((id) => until(id, ['succeeded', 'partial', 'failed', 'dead'])));
    expect(done.map((job) => job.state)).toEqual(['succeeded', 'succeeded']);
    // Those were the attempts that finished: each finalize's claim (claimed_at; started_at is the validation's) came
    // before the other finished.
    const [first, second] = done;
    expect(first!.claimedAt!.getTime()).toBeLessThan(second!.finishedAt!.getTime());
    expect(second!.claimedAt!.getTime()).toBeLessThan(first!.finishedAt!.getTime());

    const categories = await env.pool.query<{ n: number; names: number }>(
      "SELECT count(*)::int AS n, count(DISTINCT name)::int AS names FROM categories WHERE tenant_id = 'shared'",
    );
    expect(categories.rows[0]).toEqual({ n: 240, names: 240 });
    const suppliers = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM suppliers WHERE tenant_id = 'shared'");
    expect(suppliers.rows[0]!.n).toBe(40);
    // Each reference was created by exactly one of the two runs.
    const created = done.map((job) => (job.result as { referencesCreated: Record<string, number> }).referencesCreated);
    expect((created[0]!.categories ?? 0) + (created[1]!.categories ?? 0)).toBe(240);
    expect((created[0]!.suppliers ?? 0) + (created[1]!.suppliers ?? 0)).toBe(40);
    // And every product points at the category and supplier its row named.
    const { rows } = await env.pool.query<{ sku: string; category: string; supplier: string }>(
      `SELECT p.sku, c.name AS category, s.name AS supplier FROM products p
       JOIN categories c ON c.id = p.category_id JOIN suppliers s ON s.id = p.supplier_id WHERE p.tenant_id = 'shared'`,
    );
    const expected = new Map([...a, ...b].map((row) => [row.sku, `${row.category}|${row.supplier}`]));
    expect(rows).toHaveLength(12_000);
    for (const row of rows) expect(`${row.category}|${row.supplier}`).toBe(expected.get(row.sku));
  });

  it('two imports of the same new keys at the same time: each key inserted once, by one of them; the other upserts it', async () => {
    // Both runs try the plain insert for new keys; whichever commits a key second meets it (present, or a unique
    // violation when it committed after the statement's snapshot) and writes that batch with the upsert.
    const rows = Array.from({ length: 8_000 }, (_, i) => validRow(i + 1, 'SAME'));
    await upload(env.s3, env.bucket, 'imports/same/a.csv', fileOf(rows));
    await upload(env.s3, env.bucket, 'imports/same/b.csv', fileOf(rows.map((row) => ({ ...row, quantity: String(Number(row.quantity) + 1) }))));
    const workers = [worker({ WORKER_ID: 's1', WORKER_CONCURRENCY: '2' }), worker({ WORKER_ID: 's2', WORKER_CONCURRENCY: '2' })];
    await Promise.all(workers.map((process) => process.waitForLog(started)));
    const jobs = [await importObject('imports/same/a.csv', 'same'), await importObject('imports/same/b.csv', 'same')];
    for (const id of jobs) await until(id, ['review_ready']);

    await Promise.all(jobs.map((id) => finalizeImport(env.pool, id)));
    const done = await Promise.all(jobs.map((id) => until(id, ['succeeded', 'partial', 'failed', 'dead'])));
    expect(done.map((job) => job.state)).toEqual(['succeeded', 'succeeded']);
    const results = done.map((job) => job.result as { inserted: number; updated: number; unchanged: number });
    for (const result of results) expect(result.inserted + result.updated + result.unchanged).toBe(8_000);
    expect(results[0]!.inserted + results[1]!.inserted).toBe(8_000);
    const { rows: check } = await env.pool.query(
      "SELECT count(*)::int AS n, count(DISTINCT sku)::int AS skus FROM products WHERE tenant_id = 'same'",
    );
    expect(check[0]).toEqual({ n: 8_000, skus: 8_000 });
  });

  it('validation and finalize have their own pools: a burst of validations does not hold back a finalize', async () => {
    const rows = Array.from({ length: 20_000 }, (_, i) => validRow(i + 1, 'P'));
    const big = fileOf(rows);
    // Each tenant reads its own uploads only (imports/<tenant>/…).
    for (let i = 0; i < 6; i++) await upload(env.s3, env.bucket, `imports/pools-${i}/big.csv`, big);
    await upload(env.s3, env.bucket, 'imports/pools/small.csv', fileOf(rows.slice(0, 200).map((row) => ({ ...row, sku: `S${row.sku}` }))));
    const pooled = worker({ WORKER_ID: 'pooled', WORKER_CONCURRENCY: '2', WORKER_KIND_CONCURRENCY: 'csv-import=1,csv-finalize=1' });
    await pooled.waitForLog(started);
    const reviewed = await importObject('imports/pools/small.csv', 'pools');
    await until(reviewed, ['review_ready']);
    // Six validations queue up (different tenants: different runs); only one may run at a time.
    const burst: number[] = [];
    for (let i = 0; i < 6; i++) burst.push(await importObject(`imports/pools-${i}/big.csv`, `pools-${i}`));
    // One of them running (the claim's order among the six is not this test's concern). Should it never come, say
    // what the worker and the runs were doing: a CI run once waited 10 s here, which no run alone reproduces.
    const anyRunning = async () =>
      (await env.pool.query("SELECT 1 FROM jobs WHERE id = ANY($1) AND state = 'running'", [burst])).rows.length > 0;
    await waitFor(anyRunning, 30_000, 20).catch(async (error: unknown) => {
      const { rows } = await env.pool.query('SELECT id, state, attempts, run_at, last_error FROM jobs WHERE id = ANY($1) ORDER BY id', [burst]);
      throw new Error(`no validation of the burst ran: ${JSON.stringify(rows)}; worker log: ${JSON.stringify(pooled.logs.slice(-20))}`, { cause: error });
    });
    await finalizeImport(env.pool, reviewed);
    const finalized = await until(reviewed, ['succeeded', 'partial', 'failed']);
    expect(finalized.state).toBe('succeeded');
    // The finalize ended while most of the burst was still waiting or running.
    const states = await Promise.all(burst.map(async (id) => (await requireJob(env.pool, id)).state));
    expect(states.filter((state) => state === 'queued').length).toBeGreaterThanOrEqual(3);
    const running = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM jobs WHERE kind = 'csv-import' AND state = 'running'");
    expect(running.rows[0]!.n).toBeLessThanOrEqual(1);
  });
});
