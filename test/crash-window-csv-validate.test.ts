// Crash window at the end of CSV validation: the worker process is killed with SIGKILL after the transaction that
// marks the run validated (markValidated: counts, batch ledger, validated_at) committed and before the runner stored
// the run's `review_ready` outcome. A fresh worker must park the run in review with the same summary, without
// validating again (no row error or batch recorded twice), and the parked run must finalize as usual.
// The window is hit with a gate (test/support/statement-gate.ts) on the completion statement of that very run.
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

async function importObject(tenant: string, key: string): Promise<number> {
  const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: tenant, payload: { bucket: env.bucket, key, profile: 'products' } });
  return job.id;
}

/** What validation recorded for a run: its batch ledger and row errors, and whether any of them repeats. */
async function recorded(jobId: number) {
  const { rows } = await env.pool.query<{ batches: number; batch_numbers: number; batch_rows: number; errors: number; error_rows: number }>(
    `SELECT (SELECT count(*)::int FROM csv_import_batches WHERE job_id = $1) AS batches,
            (SELECT count(DISTINCT batch_number)::int FROM csv_import_batches WHERE job_id = $1) AS batch_numbers,
            (SELECT coalesce(sum(row_count), 0)::int FROM csv_import_batches WHERE job_id = $1) AS batch_rows,
            (SELECT count(*)::int FROM csv_import_row_errors WHERE job_id = $1) AS errors,
            (SELECT count(DISTINCT row_number)::int FROM csv_import_row_errors WHERE job_id = $1) AS error_rows`,
    [jobId],
  );
  return rows[0]!;
}

/**
 * Validates `file` as a run of `tenant` whose worker is killed with SIGKILL in the window: the validation committed,
 * the review_ready outcome waiting at the gate. Checks the window, then starts a fresh worker and returns the run as
 * it parks it, with what the first attempt recorded and the summary of the same file validated without a crash.
 */
async function crashAfterValidated(tenant: string, file: ReturnType<typeof plantedFile>) {
  const key = `imports/${tenant}/products.csv`;
  await upload(env.s3, env.bucket, key, file.body);
  await upload(env.s3, env.bucket, `imports/${tenant}-control/products.csv`, file.body);
  const jobId = await importObject(tenant, key);
  // The run's completion as review_ready waits at the gate: the gate is set before any worker runs.
  const gate = await gateUpdates(env, { table: 'jobs', when: `OLD.id = ${jobId} AND OLD.state = 'running' AND NEW.state = 'review_ready'` });
  gates.push(gate);

  const doomed = worker(`${tenant}-doomed`);
  await gate.blocked();
  // In the window: the validation is committed, the outcome is not.
  const marked = (await getCsvImportRun(env.pool, jobId))!;
  expect(marked.validatedAt).toBeInstanceOf(Date);
  expect((await requireJob(env.pool, jobId)).state).toBe('running');
  await doomed.waitForLog((line) => line.msg === 'csv validated' && line.job_id === jobId, 10_000);

  doomed.kill('SIGKILL');
  expect((await doomed.exited).signal).toBe('SIGKILL');
  await gate.open();
  await killedSessionsEnded(env);
  // The dead worker's completion rolled back with its session: the run is still running, under the dead lease.
  expect(await requireJob(env.pool, jobId)).toMatchObject({ state: 'running', leaseOwner: `${tenant}-doomed`, attempts: 1 });
  const atKill = await recorded(jobId);

  const survivor = worker(`${tenant}-survivor`);
  const parked = await until(jobId, ['review_ready', 'succeeded', 'partial', 'failed', 'dead', 'canceled']);
  // The same file validated by a run that was not interrupted: the summary a reviewer would have seen.
  const controlId = await importObject(`${tenant}-control`, `imports/${tenant}-control/products.csv`);
  const control = (await until(controlId, ['review_ready', 'succeeded', 'partial', 'failed', 'dead', 'canceled'])).result!;
  return { jobId, marked, atKill, survivor, parked, control };
}

describe('crash window: validation marked, review_ready not stored', () => {
  it('SIGKILL between markValidated and the review_ready outcome: a fresh worker parks the run with the same summary, nothing recorded twice', async () => {
    // 1,500 rows, every 100th bad: 15 invalid rows of 15 kinds (one of them a duplicate key), 1,485 valid in 15 batches.
    const file = plantedFile(1_500, 100, 'CV');
    const { jobId, marked, atKill, survivor, parked, control } = await crashAfterValidated('crashed', file);
    expect(marked).toMatchObject({ rowsRead: 1_500, rowsValid: file.valid.length, rowsInvalid: 15, batches: 15 });
    expect(atKill).toEqual({ batches: 15, batch_numbers: 15, batch_rows: file.valid.length, errors: 15, error_rows: 15 });

    expect(parked).toMatchObject({ state: 'review_ready', kind: 'csv-import', attempts: 2, leaseOwner: null, finishedAt: null });
    expect(parked.lastError).toMatchObject({ code: 'LEASE_EXPIRED', worker: 'crashed-doomed' });
    await survivor.waitForLog((line) => line.msg === 'validation was completed by an earlier attempt' && line.job_id === jobId, 10_000);
    expect(survivor.logs.some((line) => line.msg === 'csv validated' && line.job_id === jobId)).toBe(false);

    const result = parked.result!;
    expect(result).toMatchObject({
      profile: 'products',
      tenant: 'crashed',
      key: 'imports/crashed/products.csv',
      rows: 1_500,
      valid: file.valid.length,
      invalid: 15,
      batches: 15,
      // The validation of the first attempt, not a new one: an approval naming it is accepted.
      validatedAt: marked.validatedAt!.toISOString(),
      next: `bulk-import finalize ${jobId} | bulk-import reject ${jobId} | bulk-import errors ${jobId}`,
    });
    for (const field of ['rows', 'valid', 'invalid', 'batches', 'columns', 'firstErrors']) expect(result[field], field).toEqual(control[field]);

    // Nothing recorded twice, nothing recorded again: the ledger and row errors are the first attempt's.
    expect(await recorded(jobId)).toEqual(atKill);
    expect((await getCsvImportRun(env.pool, jobId))!.validatedAt!.getTime()).toBe(marked.validatedAt!.getTime());
    const written = await env.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM products WHERE tenant_id = 'crashed'");
    expect(written.rows[0]!.n).toBe(0);

    // The parked run is an ordinary one: approved as reviewed, it writes every valid row once.
    await finalizeImport(env.pool, jobId, { validatedAt: result.validatedAt as string });
    const done = await until(jobId, ['succeeded', 'partial', 'failed', 'dead', 'canceled']);
    expect(done).toMatchObject({ state: 'partial', kind: 'csv-finalize' });
    expect(done.result).toMatchObject({ valid: file.valid.length, invalid: 15, inserted: file.valid.length, updated: 0, unchanged: 0, failedAtWrite: 0 });
    const products = await env.pool.query<{ n: number; skus: number }>(
      "SELECT count(*)::int AS n, count(DISTINCT sku)::int AS skus FROM products WHERE tenant_id = 'crashed'",
    );
    expect(products.rows[0]).toEqual({ n: file.valid.length, skus: file.valid.length });
  });

  it('the summary parked after that crash still says how many rows are duplicates and which references finalize creates', async () => {
    const file = plantedFile(1_500, 100, 'CD');
    const { parked, control } = await crashAfterValidated('dupes', file);
    expect(parked.state).toBe('review_ready');
    // The file holds one row repeating an earlier row's sku: the uninterrupted validation reports it.
    expect(control.duplicates).toBe(1);
    expect(parked.result!.duplicates).toBe(control.duplicates);
    // The names finalize will create, which the reviewer approves (the review page lists them).
    expect(Object.keys(control.referencesToCreate as Record<string, number>).length).toBeGreaterThan(0);
    expect(parked.result!.referencesToCreate).toEqual(control.referencesToCreate);
  });
});
