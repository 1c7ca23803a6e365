// The rehearsal and the rules: a dry run writes nothing and reports the right count with before/after samples; the
// documents.file_extension rule and its trigger; payload validation and dedupe keys of the backfill kind.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { backfillHandler } from '../worker/handlers/backfill.js';
import { PermanentJobError } from '../worker/queue/errors.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import { testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
const workers: Worker[] = [];
const HISTORICAL = 12_000;
const ALREADY_FILLED = 300;

beforeEach(async () => {
  // Historical rows (the trigger off, as before the column existed), then rows imported since (the trigger fills them).
  await env.pool.query('ALTER TABLE documents DISABLE TRIGGER documents_file_extension_on_write');
  await insertDocuments(1, HISTORICAL);
  await env.pool.query('ALTER TABLE documents ENABLE TRIGGER documents_file_extension_on_write');
  await insertDocuments(HISTORICAL + 1, HISTORICAL + ALREADY_FILLED);
});
afterEach(async () => {
  await Promise.all(workers.splice(0).map((worker) => worker.stop()));
  await env.pool.query('TRUNCATE documents RESTART IDENTITY; DELETE FROM jobs');
});

async function insertDocuments(from: number, to: number): Promise<void> {
  await env.pool.query(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
     SELECT 'tenant-' || (g % 3), 'inbox/' || g || (ARRAY['.Pdf', '.png', '', '.tar.gz'])[1 + g % 4], repeat('a', 64), g,
            'application/octet-stream', 'bucket', 'documents/' || g
     FROM generate_series($1::int, $2::int) AS g`,
    [from, to],
  );
}

/** A fingerprint of every row version: any write (even of the same value) changes some xmin. */
async function tableFingerprint(): Promise<string> {
  const { rows } = await env.pool.query(
    `SELECT md5(string_agg(id || ':' || xmin::text || ':' || coalesce(file_extension, '-'), ',' ORDER BY id)) AS f FROM documents`,
  );
  return rows[0].f;
}

async function run(payload: Record<string, unknown>, tenantId: string | null = null): Promise<JobRow> {
  if (workers.length === 0) {
    const worker = testWorker(env, [backfillHandler], { concurrency: 2 });
    workers.push(worker);
    void worker.start();
  }
  const { job } = await submitJob(env.pool, { kind: 'backfill', payload, tenantId });
  return waitFor(async () => {
    const current = await requireJob(env.pool, job.id);
    return ['succeeded', 'partial', 'failed', 'dead', 'canceled'].includes(current.state) ? current : undefined;
  }, 60_000, 50);
}

interface DryRunResult {
  dryRun: true;
  wouldChange: number;
  remaining: number;
  rowsInScope: number;
  sample: Array<{ key: number; before: { file_extension: string | null; source_path: string }; after: string }>;
}

describe('backfill dry run', () => {
  it('writes nothing, counts the rows that would change and samples before/after values', async () => {
    const before = await tableFingerprint();
    const job = await run({ name: 'documents-file-extension', dryRun: true, batchSize: 1_000, sampleSize: 4 });

    expect(job.state).toBe('succeeded');
    const result = job.result as unknown as DryRunResult;
    expect(result).toMatchObject({ dryRun: true, wouldChange: HISTORICAL, remaining: HISTORICAL, rowsInScope: HISTORICAL + ALREADY_FILLED });
    expect(result.sample).toEqual([
      { key: 1, before: { file_extension: null, source_path: 'inbox/1.png' }, after: 'png' },
      { key: 2, before: { file_extension: null, source_path: 'inbox/2' }, after: '' },
      { key: 3, before: { file_extension: null, source_path: 'inbox/3.tar.gz' }, after: 'gz' },
      { key: 4, before: { file_extension: null, source_path: 'inbox/4.Pdf' }, after: 'pdf' },
    ]);
    expect(job.progress).toMatchObject({ mode: 'dry-run', done: HISTORICAL, total: HISTORICAL });
    expect(await tableFingerprint()).toBe(before);
    const missing = await env.pool.query('SELECT count(*)::int AS n FROM documents WHERE file_extension IS NULL');
    expect(missing.rows[0].n).toBe(HISTORICAL);
  });

  it("with a tenant and maxRows: counts only that tenant's rows, at most maxRows", async () => {
    const before = await tableFingerprint();
    const tenantRows = (await env.pool.query("SELECT count(*)::int AS n FROM documents WHERE tenant_id = 'tenant-1' AND file_extension IS NULL")).rows[0].n;
    const all = await run({ name: 'documents-file-extension', dryRun: true, tenant: 'tenant-1', batchSize: 700, sampleSize: 2 });
    expect(all.result).toMatchObject({ tenant: 'tenant-1', wouldChange: tenantRows, remaining: tenantRows });
    expect((all.result as unknown as DryRunResult).sample.map((row) => row.key)).toEqual([1, 4]);

    const capped = await run({ name: 'documents-file-extension', dryRun: true, maxRows: 1_500, batchSize: 700 }, 'tenant-2');
    expect(capped.result).toMatchObject({ tenant: 'tenant-2', wouldChange: 1_500 });
    expect(await tableFingerprint()).toBe(before);
  });

  it('the real run after the rehearsal writes exactly the rows the dry run counted, maxRows first', async () => {
    const rehearsal = await run({ name: 'documents-file-extension', dryRun: true });
    const wouldChange = (rehearsal.result as unknown as DryRunResult).wouldChange;
    const firstSlice = await run({ name: 'documents-file-extension', maxRows: 5_000, batchSize: 1_000 });
    expect(firstSlice).toMatchObject({ state: 'succeeded', result: { stoppedBy: 'maxRows', rowsWritten: 5_000, remaining: wouldChange - 5_000, complete: false } });
    const rest = await run({ name: 'documents-file-extension', batchSize: 1_000 });
    expect(rest).toMatchObject({ state: 'succeeded', result: { stoppedBy: 'end', rowsWritten: wouldChange - 5_000, remaining: 0, complete: true } });
    expect(rest.progress).toMatchObject({ phase: 'done', done: wouldChange - 5_000 });
  });
});

describe('documents.file_extension', () => {
  it('one rule for the backfill and the trigger: lowercase extension of the file name, "" when none', async () => {
    const cases: Array<[string | null, string]> = [
      ['scans/2019/Invoice.PDF', 'pdf'],
      ['archive.tar.gz', 'gz'],
      ['photos/IMG 0001.JPeG', 'jpeg'],
      ['config/.env', ''],
      ['.bashrc', ''],
      ['releases.v2/README', ''],
      ['trailing-dot.', ''],
      ['notes.text with spaces', ''],
      ['data.ÄBC', ''],
      ['x.abcdefghijklmnopq', ''],
      ['x.abcdefghijklmnop', 'abcdefghijklmnop'],
      ['', ''],
      [null, ''],
    ];
    const { rows } = await env.pool.query('SELECT documents_file_extension(path) AS ext FROM unnest($1::text[]) WITH ORDINALITY AS c(path, n) ORDER BY n', [
      cases.map(([path]) => path),
    ]);
    expect(rows.map((row) => row.ext)).toEqual(cases.map(([, ext]) => ext));
  });

  it('new documents get it from the insert trigger, and a renamed one gets it recomputed', async () => {
    const { rows } = await env.pool.query(
      `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
       VALUES ('t', 'new/Report.DOCX', repeat('b', 64), 1, 'application/octet-stream', 'bucket', 'new-1') RETURNING id, file_extension`,
    );
    expect(rows[0].file_extension).toBe('docx');
    const renamed = await env.pool.query("UPDATE documents SET source_path = 'new/Report.odt' WHERE id = $1 RETURNING file_extension", [rows[0].id]);
    expect(renamed.rows[0].file_extension).toBe('odt');
  });
});

describe('backfill payloads and CLI', () => {
  it('refuses unknown backfills and fields with a clear error, before anything is enqueued', async () => {
    await expect(submitJob(env.pool, { kind: 'backfill', payload: { name: 'no-such-backfill' } })).rejects.toThrow(
      /unknown backfill "no-such-backfill"; known backfills: documents-file-extension/,
    );
    await expect(submitJob(env.pool, { kind: 'backfill', payload: { name: 'documents-file-extension', batchsize: 10 } })).rejects.toThrow(
      /unknown field\(s\) batchsize/,
    );
    await expect(submitJob(env.pool, { kind: 'backfill', payload: { name: 'documents-file-extension', batchSize: 0 } })).rejects.toBeInstanceOf(
      PermanentJobError,
    );
    expect((await env.pool.query('SELECT count(*)::int AS n FROM jobs')).rows[0].n).toBe(0);
  });

  it('the same backfill for the same tenant runs once at a time; a dry run never reuses the real run', async () => {
    const payload = { name: 'documents-file-extension' };
    const first = await submitJob(env.pool, { kind: 'backfill', payload, tenantId: 'tenant-1' });
    const again = await submitJob(env.pool, { kind: 'backfill', payload: { ...payload, batchSize: 50 }, tenantId: 'tenant-1' });
    const otherTenant = await submitJob(env.pool, { kind: 'backfill', payload, tenantId: 'tenant-2' });
    const dry = await submitJob(env.pool, { kind: 'backfill', payload: { ...payload, dryRun: true }, tenantId: 'tenant-1' });
    expect(again).toMatchObject({ reused: true, job: { id: first.job.id } });
    expect(first.job.dedupeKey).toBe('backfill:documents-file-extension:tenant-1');
    expect(otherTenant.reused).toBe(false);
    expect(dry).toMatchObject({ reused: false, job: { dedupeKey: 'backfill:documents-file-extension:tenant-1:dry-run' } });
  });

  it('backfill list and status print what an operator needs', async () => {
    const list = await runCli(env, ['backfill', 'list', '--json']);
    expect(list.code, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual([
      expect.objectContaining({ name: 'documents-file-extension', table: 'documents', column: 'file_extension', from: ['source_path'], compute: 'sql' }),
    ]);
    const status = await runCli(env, ['backfill', 'status', 'documents-file-extension', '--tenant', 'tenant-0']);
    expect(status.code, status.stderr).toBe(0);
    const tenantMissing = (await env.pool.query("SELECT count(*)::int AS n FROM documents WHERE tenant_id = 'tenant-0' AND file_extension IS NULL")).rows[0].n;
    expect(status.stdout).toContain(`missing    ${tenantMissing} (`);
    const check = await runCli(env, ['backfill', 'status', 'documents-file-extension', '--check']);
    expect(check.code).toBe(1);
    expect(check.stderr).toContain(`${HISTORICAL} row(s) of documents still lack file_extension`);
    const unknown = await runCli(env, ['backfill', 'status', 'nope']);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('unknown backfill "nope"');
  });
});
