// Crash window at the end of CSV finalize: the worker process is killed with SIGKILL after the transaction that marks
// the run finalized (markFinalized: finalized_at, once every batch is marked written) committed and before the runner
// stored the run's outcome (`partial` here: the file has invalid rows). A fresh worker must end the run with the
// outcome and counts of the batches the first attempt wrote, writing no product and marking no batch again.
// The window is hit with a gate (test/support/statement-gate.ts) on the completion statement of that very run.
// (SIGKILL in the middle of finalize, between batches: csv-finalize-crash.test.ts.)
import { afterEach, describe, expect, it } from 'vitest';
import { finalizeImport, submitJob } from '../worker/api.js';
import { getCsvImportRun } from '../worker/imports/csv/run-record.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { plantedFile, upload } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { jobInState } from './support/in-process-worker.js';
import { gateUpdates, type StatementGate } from './support/statement-gate.js';
import { killAll, killedSessionsEnded, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
const gates: StatementGate[] = [];
const FAST = {
  WORKER_LEASE_MS: '3000',
  WORKER_HEARTBEAT_MS: '500',
  WORKER_RESCUE_INTERVAL_MS: '500',
  WORKER_POLL_INTERVAL_MS: '200',
  CSV_FINALIZE_CHUNK_SIZE: '100',
};
const ENDED = ['succeeded', 'partial', 'failed', 'dead', 'canceled'];

function worker(id: string): WorkerProcess {
  const process = spawnWorker(env, { env: { ...FAST, WORKER_ID: id } });
  spawned.push(process);
  return process;
}

afterEach(async () => {
  await killAll(spawned.splice(0));
  for (const gate of gates.splice(0)) await gate.open();
});

const until = (jobId: number, states: string[], timeoutMs?: number): Promise<JobRow> => jobInState(env.pool, jobId, states, timeoutMs);

/**
 * The written state of a tenant's import: its products (with the transaction that last wrote each: a product written
 * again changes it), the run's batch marks and the references it created.
 */
async function writtenState(jobId: number, tenant: string) {
  const { rows } = await env.pool.query(
    `SELECT (SELECT count(*)::int FROM products WHERE tenant_id = $2) AS products,
            (SELECT count(DISTINCT sku)::int FROM products WHERE tenant_id = $2) AS skus,
            (SELECT md5(string_agg(sku || ':' || xmin::text, ',' ORDER BY sku)) FROM products WHERE tenant_id = $2) AS versions,
            (SELECT count(*)::int FROM categories WHERE tenant_id = $2) AS categories,
            (SELECT count(*)::int FROM suppliers WHERE tenant_id = $2) AS suppliers,
            (SELECT md5(string_agg(batch_number || ':' || finalized_at::text || ':' || rows_inserted || '/' || rows_updated || '/' ||
                        rows_unchanged || '/' || rows_failed, ',' ORDER BY batch_number))
             FROM csv_import_batches WHERE job_id = $1) AS batch_marks,
            (SELECT count(*)::int FROM csv_import_batches WHERE job_id = $1 AND finalized_at IS NOT NULL) AS batches_marked,
            (SELECT count(*)::int FROM csv_import_row_errors WHERE job_id = $1) AS row_errors`,
    [jobId, tenant],
  );
  return rows[0] as Record<string, unknown>;
}

/**
 * Validates and approves `file` as a run of `tenant`, then finalizes it on a worker killed with SIGKILL in the window:
 * the run marked finalized, its outcome waiting at the gate. Checks the window, starts a fresh worker and returns the
 * run as that worker ends it, with the written state at the kill.
 */
async function crashAfterFinalized(tenant: string, file: ReturnType<typeof plantedFile>) {
  const key = `imports/${tenant}/products.csv`;
  await upload(env.s3, env.bucket, key, file.body);
  const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: tenant, payload: { bucket: env.bucket, key, profile: 'products' } });
  const jobId = job.id;
  const doomed = worker(`${tenant}-doomed`);
  expect(await until(jobId, ['review_ready', ...ENDED])).toMatchObject({ state: 'review_ready' });

  // The run's completion as succeeded or partial waits at the gate.
  const gate = await gateUpdates(env, {
    table: 'jobs',
    when: `OLD.id = ${jobId} AND OLD.state = 'running' AND NEW.state IN ('succeeded', 'partial')`,
  });
  gates.push(gate);
  await finalizeImport(env.pool, jobId);
  await gate.blocked();
  // In the window: the run is marked finalized, the outcome is not stored.
  const marked = (await getCsvImportRun(env.pool, jobId))!;
  expect(marked.finalizedAt).toBeInstanceOf(Date);
  expect(marked.finalizedBatches).toBe(marked.batches);
  const running = await requireJob(env.pool, jobId);
  expect(running).toMatchObject({ state: 'running', kind: 'csv-finalize', leaseOwner: `${tenant}-doomed` });
  await doomed.waitForLog((line) => line.msg === 'csv import finalized' && line.job_id === jobId, 10_000);

  doomed.kill('SIGKILL');
  expect((await doomed.exited).signal).toBe('SIGKILL');
  await gate.open();
  await killedSessionsEnded(env);
  // The dead worker's completion rolled back with its session: the run is still running, under the dead lease.
  expect(await requireJob(env.pool, jobId)).toMatchObject({ state: 'running', kind: 'csv-finalize', leaseOwner: `${tenant}-doomed`, attempts: running.attempts });
  const atKill = await writtenState(jobId, tenant);

  const survivor = worker(`${tenant}-survivor`);
  const ended = await until(jobId, ENDED);
  return { jobId, marked, attemptAtKill: running.attempts, atKill, survivor, ended };
}

describe('crash window: run marked finalized, outcome not stored', () => {
  it('SIGKILL between markFinalized and the outcome: a fresh worker ends the run partial with the counts written, no product or batch written again', async () => {
    // 1,500 rows, every 100th bad: 15 invalid rows, 1,485 valid in 15 batches of 100.
    const file = plantedFile(1_500, 100, 'CF');
    const valid = file.valid.length;
    const { jobId, marked, attemptAtKill, atKill, survivor, ended } = await crashAfterFinalized('crashed', file);
    expect(marked).toMatchObject({ rowsRead: 1_500, rowsValid: valid, rowsInvalid: 15, batches: 15, rowsInserted: valid, rowsUpdated: 0, rowsUnchanged: 0, rowsFailed: 0 });
    expect(atKill).toMatchObject({ products: valid, skus: valid, batches_marked: 15, row_errors: 15 });

    expect(ended).toMatchObject({ state: 'partial', kind: 'csv-finalize', attempts: attemptAtKill + 1, leaseOwner: null });
    expect(ended.finishedAt).toBeInstanceOf(Date);
    expect(ended.lastError).toMatchObject({ code: 'LEASE_EXPIRED', worker: 'crashed-doomed' });
    await survivor.waitForLog((line) => line.msg === 'finalize was completed by an earlier attempt' && line.job_id === jobId, 10_000);
    expect(ended.result).toMatchObject({
      profile: 'products',
      tenant: 'crashed',
      rows: 1_500,
      valid,
      invalid: 15,
      inserted: valid,
      updated: 0,
      unchanged: 0, // a batch written again would be counted here
      failedAtWrite: 0,
      referencesCreated: marked.referencesCreated,
    });

    // Nothing written or marked again: every product row is the version the first attempt wrote, every batch mark too.
    expect(await writtenState(jobId, 'crashed')).toEqual(atKill);
    const run = (await getCsvImportRun(env.pool, jobId))!;
    expect(run.finalizedAt!.getTime()).toBe(marked.finalizedAt!.getTime());
    expect(run).toMatchObject({ finalizedBatches: 15, rowsInserted: valid, rowsUpdated: 0, rowsUnchanged: 0, rowsFailed: 0 });
  });

  it('the result of the run ended after that crash says its batches were written by an earlier attempt (RUNBOOK: `batchesWrittenByEarlierAttempts` after a crash)', async () => {
    const file = plantedFile(1_500, 100, 'CB');
    const { ended } = await crashAfterFinalized('earlier', file);
    expect(ended.state).toBe('partial');
    // Every one of the 15 batches was written by the attempt that was killed.
    expect(ended.result).toMatchObject({ batchesWrittenByEarlierAttempts: 15 });
  });
});
