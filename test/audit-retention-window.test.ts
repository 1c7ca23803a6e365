// The audit and its repair against a CSV run that retention has begun deleting: the run is marked
// (jobs.retention_started_at) and its child rows go one table at a time — batches, row errors, then the run — each
// its own transaction, so for seconds (an hour after a round that died half-way) the run is listed with no batches
// and no row errors while products still carry its id. Neither reader may take that half for the run: the audit
// skips it (no csv-run-count finding from its missing batches), and the repair answers "no longer on record" (no
// name from a line the run did not write). A retention round is held inside the deletion of the run's row.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditHandler } from '../worker/handlers/audit.js';
import { csvFinalizeHandler } from '../worker/handlers/csv-finalize.js';
import { csvValidateHandler } from '../worker/handlers/csv-validate.js';
import { deleteExpiredJobs } from '../worker/queue/maintenance.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { importProductRows, validRow, type ProductRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { runCliJson } from './support/cli-runner.js';
import { settledJob, testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
let worker: Worker;

beforeAll(async () => {
  worker = testWorker(env, [csvValidateHandler, csvFinalizeHandler, auditHandler], { leaseMs: 30_000, heartbeatMs: 1_000 });
  await worker.start();
});
afterAll(async () => worker?.stop());

const settled = (jobId: number): Promise<JobRow> => settledJob(env.pool, jobId, 60_000);

const importRows = (tenant: string, name: string, rows: ProductRow[], state: 'succeeded' | 'partial'): Promise<number> =>
  importProductRows(env, tenant, name, rows, state);

async function count(sql: string, params: unknown[]): Promise<number> {
  return (await env.pool.query<{ n: number }>(sql, params)).rows[0]!.n;
}

interface Findings {
  byCheck: Record<string, number>;
  findings: Array<{ id: number; check: string; subjectId: number | null; repairedAt: string | null; details: Record<string, unknown> }>;
}

interface Repair {
  applied: boolean;
  entries: Array<{ finding: number; action: string; name?: string; newId?: number; reason?: string }>;
}

describe('audit while retention deletes a CSV run', () => {
  it('skips the run (no csv-run-count finding), and the repair reports it no longer on record and writes nothing', async () => {
    const runId = await importRows('acme', 'retained', [
      { ...validRow(1, 'RET'), category: 'Shed', price: '-1.00' }, // line 2: invalid (a row error), not written
      { ...validRow(1, 'RET'), category: 'Tools' }, // line 3: written (the first valid row of its sku)
      { ...validRow(2, 'RET'), category: 'Tools' }, // line 4: written
    ], 'partial');
    expect(await count(`SELECT count(*)::int AS n FROM csv_import_row_errors WHERE job_id = $1`, [runId])).toBe(1);
    // The backend deletes "Tools": both products keep its id.
    const { rows: deleted } = await env.pool.query<{ id: string }>(`DELETE FROM categories WHERE tenant_id = 'acme' AND name = 'Tools' RETURNING id`);
    const toolsId = Number(deleted[0]!.id);
    await env.pool.query(`UPDATE jobs SET finished_at = now() - interval '40 days' WHERE id = $1`, [runId]);

    // Retention is held inside the deletion of the run's own row (a trigger that waits on an advisory lock the test
    // holds): its mark is committed, its batches and row errors are gone.
    await env.pool.query(`
      CREATE FUNCTION retention_window_gate() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN PERFORM pg_advisory_xact_lock(525252); RETURN OLD; END $$;
      CREATE TRIGGER retention_window_gate BEFORE DELETE ON csv_import_runs FOR EACH ROW EXECUTE FUNCTION retention_window_gate();`);
    const gate = await env.pool.connect();
    try {
      await gate.query('BEGIN; SELECT pg_advisory_xact_lock(525252)');
      const retention = deleteExpiredJobs(env.pool, 30, 10);
      await waitFor(async () => {
        const { rows } = await env.pool.query(
          `SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM csv_import_runs%'`,
        );
        return rows.length > 0 || undefined;
      });
      const { rows: window } = await env.pool.query(
        `SELECT (SELECT retention_started_at IS NOT NULL FROM jobs WHERE id = $1) AS marked,
                (SELECT count(*)::int FROM csv_import_runs WHERE job_id = $1) AS runs,
                (SELECT count(*)::int FROM csv_import_batches WHERE job_id = $1) AS batches,
                (SELECT count(*)::int FROM csv_import_row_errors WHERE job_id = $1) AS row_errors,
                (SELECT count(*)::int FROM products WHERE last_import_job_id = $1) AS products`,
        [runId],
      );
      expect(window[0]).toEqual({ marked: true, runs: 1, batches: 0, row_errors: 0, products: 2 });

      // The audit: the products are counted in the walk, the run is not compared with them.
      const audit = await runCliJson<{ id: number }>(env, ['audit', 'start', '--tenant', 'acme', '--checks', 'references,csv-runs']);
      const done = await settled(audit.id);
      expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
      expect(done.result).toMatchObject({ productsScanned: 2, csvRunsChecked: 0 });
      const listed = await runCliJson<Findings>(env, ['audit', 'findings', String(audit.id), '--limit', '1000']);
      expect(listed.findings.filter((finding) => finding.check === 'csv-run-count')).toEqual([]);
      expect(listed.byCheck).toEqual({ 'missing-reference': 2 });

      // The repair: without the run's row errors, line 2 ("Shed") would name the reference of RET-0000001.
      const dry = await runCliJson<Repair>(env, ['audit', 'repair', String(audit.id)]);
      expect(dry.entries.map((entry) => entry.action)).toEqual(['reported', 'reported']);
      const applied = await runCliJson<Repair>(env, ['audit', 'repair', String(audit.id), '--apply']);
      expect(applied.entries).toHaveLength(2);
      for (const entry of applied.entries) {
        expect(entry).toMatchObject({ action: 'reported', reason: `import run ${runId} is no longer on record (retention): recreate the reference by hand` });
      }
      expect(await count(`SELECT count(*)::int AS n FROM products WHERE tenant_id = 'acme' AND category_id = $1`, [toolsId])).toBe(2);
      expect(await count(`SELECT count(*)::int AS n FROM categories WHERE tenant_id = 'acme' AND name IN ('Shed', 'Tools')`, [])).toBe(0);
      const { rows: records } = await env.pool.query(`SELECT repair FROM audit_findings WHERE job_id = $1`, [audit.id]);
      expect(records.map((row) => row.repair.action)).toEqual(['reported', 'reported']);

      await gate.query('COMMIT');
      expect(await retention).toBe(1);
      expect(await count(`SELECT count(*)::int AS n FROM csv_import_runs WHERE job_id = $1`, [runId])).toBe(0);
    } finally {
      await gate.query('ROLLBACK').catch(() => {});
      gate.release();
      await env.pool.query('DROP TRIGGER retention_window_gate ON csv_import_runs; DROP FUNCTION retention_window_gate()');
    }
  });
});
