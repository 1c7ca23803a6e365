// The scope of the `audit` job kind against real Postgres and S3 (through a proxy that shows and holds the bucket
// listings): CSV runs approved out of job-id order, the documents prefix given by `audit start --documents-prefix`
// (the stack passes its bucketPrefix), a tenant's documents below a multi-segment import prefix, a cancel during the
// documents phase, and which runs publish the AuditFindings metric the nightly alarm reads (full-scope runs only: no
// tenant, every check, a whole import root as the documents prefix).
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { auditHandler } from '../worker/handlers/audit.js';
import { csvFinalizeHandler } from '../worker/handlers/csv-finalize.js';
import { csvValidateHandler } from '../worker/handlers/csv-validate.js';
import { finalizeImport } from '../worker/imports/csv/review.js';
import { jobMetricPoints } from '../worker/ops/metrics.js';
import { cancelJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import type { JobFinishedEvent, Worker } from '../worker/runner/worker.js';
import { createS3Client } from '../worker/storage/s3-client.js';
import { csvLine, HEADER, rowFields, upload, validRow, type ProductRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { runCli, runCliJson } from './support/cli-runner.js';
import { startFaultyS3Proxy, type FaultyS3Proxy, type ProxiedRequest } from './support/faulty-s3-proxy.js';
import { settledJob, testWorker, waitFor } from './support/in-process-worker.js';
import { recordingLogger } from './support/recording-logger.js';

const env = useTestEnvironment();
const logs = recordingLogger('info');
let proxy: FaultyS3Proxy;
let s3: S3Client;
let worker: Worker;
/** The bucket listings (ListObjectsV2 requests) the worker sent, as their URLs. */
const listings: string[] = [];
/** Set by a test to hold the next listing: it gets the request and answers with what the proxy then does. */
let holdListing: ((request: ProxiedRequest) => Promise<'pass'>) | undefined;
const finished = new Map<number, JobFinishedEvent>();
const waiting = new Map<number, (event: JobFinishedEvent) => void>();

beforeAll(async () => {
  proxy = await startFaultyS3Proxy(env.s3Endpoint);
  proxy.decide = (request) => {
    if (request.method !== 'GET' || !request.url.includes('list-type=2')) return 'pass';
    listings.push(request.url);
    const hold = holdListing;
    holdListing = undefined;
    return hold ? hold(request) : 'pass';
  };
  s3 = createS3Client({ region: inject('s3Region'), endpoint: proxy.endpoint, credentials: inject('s3Credentials') });
  worker = testWorker(env, [csvValidateHandler, csvFinalizeHandler, auditHandler], { leaseMs: 30_000 }, logs.log, { s3 });
  worker.on('jobFinished', (event: JobFinishedEvent) => {
    finished.set(event.job.id, event);
    waiting.get(event.job.id)?.(event);
  });
  await worker.start();
});
afterAll(async () => {
  await worker?.stop();
  s3?.destroy();
  await proxy?.close();
});

const settled = (jobId: number): Promise<JobRow> => settledJob(env.pool, jobId, 60_000);

/** The worker's jobFinished event of the run (what its metrics are published from), once it is emitted. */
function finishedEvent(jobId: number): Promise<JobFinishedEvent> {
  const event = finished.get(jobId);
  return event ? Promise.resolve(event) : new Promise((resolve) => waiting.set(jobId, resolve));
}

/** Enqueues an audit with the CLI and waits for the run's end (and its jobFinished event). */
async function audit(args: string[]): Promise<{ run: JobRow; event: JobFinishedEvent }> {
  const { id } = await runCliJson<{ id: number }>(env, ['audit', 'start', ...args]);
  const run = await settled(id);
  expect(run.state, JSON.stringify(run.lastError)).toBe('succeeded');
  return { run, event: await finishedEvent(id) };
}

async function findings(auditId: number): Promise<Array<{ check_name: string; tenant_id: string | null; subject: string }>> {
  const { rows } = await env.pool.query(`SELECT check_name, tenant_id, subject FROM audit_findings WHERE job_id = $1 ORDER BY subject`, [auditId]);
  return rows;
}

async function insertDocument(tenant: string, key: string): Promise<void> {
  await env.pool.query(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
     VALUES ($1, $2, repeat('a', 64), 3, 'application/pdf', $3, $4)`,
    [tenant, key.split('/').pop(), env.bucket, key],
  );
}

async function putObject(key: string): Promise<void> {
  await env.s3.send(new PutObjectCommand({ Bucket: env.bucket, Key: key, Body: 'pdf' }));
}

/** A CSV import of these rows for the tenant, validated and parked for review (not finalized); its job id. */
async function parkedImport(tenant: string, name: string, rows: ProductRow[]): Promise<number> {
  const key = `imports/${tenant}/${name}.csv`;
  await upload(env.s3, env.bucket, key, csvLine(HEADER) + rows.map((row) => csvLine(rowFields(row))).join(''));
  const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: tenant, payload: { bucket: env.bucket, key, profile: 'products' } });
  expect((await settled(job.id)).state).toBe('review_ready');
  return job.id;
}

async function approve(jobId: number): Promise<void> {
  await finalizeImport(env.pool, jobId);
  const done = await settled(jobId);
  expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
}

describe('audit scope', () => {
  it('explains a CSV run whose rows a run with a smaller job id took over, approved after it', async () => {
    // A (smaller id) and B share SKU-0000001 at different prices; B is approved first, then A: the row carries A's id.
    const a = await parkedImport('ooo', 'a', [{ ...validRow(1), price: '1.00' }, validRow(2)]);
    const b = await parkedImport('ooo', 'b', [{ ...validRow(1), price: '2.00' }, validRow(3)]);
    expect(a).toBeLessThan(b);
    await approve(b);
    await approve(a);
    const { rows } = await env.pool.query(`SELECT sku, last_import_job_id::int AS job FROM products WHERE tenant_id = 'ooo' ORDER BY sku`);
    expect(rows).toEqual([{ sku: 'SKU-0000001', job: a }, { sku: 'SKU-0000002', job: a }, { sku: 'SKU-0000003', job: b }]);

    const { run } = await audit(['--tenant', 'ooo', '--checks', 'csv-runs']);
    // B wrote 2 rows and carries 1: A, finalized after B, took SKU-0000001 over.
    expect(run.result).toMatchObject({ csvRunsChecked: 2, csvRunsExplained: 1, findings: 0 });
    expect(await findings(run.id)).toEqual([]);
  });

  it('lists the documents prefix given to audit start --documents-prefix', async () => {
    await insertDocument('acme', 'docs/acme/lost.pdf');
    await putObject('docs/acme/stray.pdf');
    await putObject('imports/globex/not-listed.pdf');
    const before = listings.length;
    const { run } = await audit(['--checks', 'documents', '--documents-prefix', 'docs/']);
    expect(listings.slice(before)).toEqual([expect.stringContaining('prefix=docs%2F')]);
    expect(run.payload).toMatchObject({ documentsPrefix: 'docs/' });
    expect(run.result).toMatchObject({ documents: { objectsListed: 1, documentRows: 1, rowsWithoutObject: 1, orphanObjects: 1 } });
    expect(await findings(run.id)).toEqual([
      { check_name: 'document-without-object', tenant_id: 'acme', subject: expect.stringContaining('docs/acme/lost.pdf') },
      { check_name: 'object-without-document', tenant_id: null, subject: `s3://${env.bucket}/docs/acme/stray.pdf` },
    ]);

    for (const bad of ['', '/docs/', 'docs', 'two words/', `${'d'.repeat(200)}/`]) {
      const refused = await runCli(env, ['audit', 'start', '--documents-prefix', bad]);
      expect(refused.code, bad).not.toBe(0);
      expect(refused.stderr).toMatch(/the documents prefix must/);
    }
    const { rows } = await env.pool.query(`SELECT count(*)::int AS n FROM jobs WHERE kind = 'audit'`);
    expect(rows[0].n).toBe(2);
  });

  it("a tenant's audit covers its documents below a multi-segment import prefix, and publishes no AuditFindings", async () => {
    await insertDocument('acme', 'imports/_2024-q4/acme/x.pdf'); // its object is gone
    await insertDocument('globex', 'imports/_2024-q4/globex/gone.pdf'); // another tenant's: not this audit's
    await putObject('imports/_2024-q4/globex/acme/y.pdf'); // globex's folder "acme": not acme's object
    await insertDocument('acme', 'imports/_2024-q4/acme/kept.pdf');
    await putObject('imports/_2024-q4/acme/kept.pdf');
    const { run, event } = await audit(['--tenant', 'acme', '--checks', 'documents']);
    expect(await findings(run.id)).toEqual([
      { check_name: 'document-without-object', tenant_id: 'acme', subject: expect.stringContaining('imports/_2024-q4/acme/x.pdf') },
    ]);
    // Only acme's objects are counted (and stored): nothing of another tenant's reaches the result.
    expect(run.result).toMatchObject({ findings: 1, documents: { objectsListed: 1, documentRows: 2, rowsWithoutObject: 1, orphanObjects: 0 } });
    // A narrowed run: its count says nothing about the rest, so it must not clear the alarm a full run raised.
    const names = jobMetricPoints(event).map((point) => point.name);
    // The tenant's own folder as the prefix: its objects are found there too (the key's layout anchors at the first
    // segment, not at the prefix).
    const own = await audit(['--tenant', 'acme', '--checks', 'documents', '--documents-prefix', 'imports/_2024-q4/acme/']);
    expect(own.run.result).toMatchObject({ findings: 1, documents: { objectsListed: 1, documentRows: 2, rowsWithoutObject: 1 } });
    expect(names).toContain('AuditRowsScanned');
    expect(names).not.toContain('AuditFindings');
  });

  it('audit findings --csv formula-escapes what a tenant named: a file called a;=1+1.pdf', async () => {
    // Its key is in the finding's subject and details; a spreadsheet in a `;` locale would split the cell there.
    await insertDocument('csvsafe', 'imports/csvsafe/a;=1+1.pdf');
    const { run } = await audit(['--tenant', 'csvsafe', '--checks', 'documents']);
    const csv = await runCli(env, ['audit', 'findings', String(run.id), '--csv']);
    expect(csv.code, csv.stderr).toBe(0);
    expect(csv.stdout).toContain("a;'=1+1.pdf");
    expect(csv.stdout).not.toMatch(/;=1\+1/);
  });

  it('only a full-scope run publishes AuditFindings; a subset of checks or a part of the import root does not', async () => {
    const subset = await audit(['--checks', 'references,csv-runs']);
    expect(jobMetricPoints(subset.event).map((point) => point.name)).not.toContain('AuditFindings');
    // Every check and tenant, but the objects of one tenant's folder only: the other tenants' drift is not in its count.
    const part = await audit(['--documents-prefix', 'imports/acme/']);
    expect(part.run.result).toMatchObject({ fullScope: false });
    expect(jobMetricPoints(part.event).map((point) => point.name)).not.toContain('AuditFindings');
    const full = await audit([]);
    expect(full.run.result).toMatchObject({ fullScope: true });
    const total = (full.run.result!.findings as number) + (full.run.result!.findingsNotStored as number);
    expect(total).toBeGreaterThan(0);
    expect(jobMetricPoints(full.event).filter((point) => point.name === 'AuditFindings')).toEqual([
      { name: 'AuditFindings', value: total, unit: 'Count', dimensions: { Kind: 'audit' } },
    ]);
  });

  it('a cancel during the documents phase ends the run canceled', async () => {
    let jobId = 0;
    let reached!: (url: string) => void;
    const listing = new Promise<string>((resolve) => (reached = resolve));
    // The listing waits until the worker has stopped the run (its "stopping job" line), then goes on.
    holdListing = async (request) => {
      reached(request.url);
      await waitFor(() => Promise.resolve(logs.lines().some((line) => line.msg === 'stopping job' && line.job_id === jobId)), 30_000);
      return 'pass';
    };
    ({ job: { id: jobId } } = await submitJob(env.pool, { kind: 'audit', payload: { checks: ['documents'] } }));
    await listing;
    expect((await cancelJob(env.pool, jobId)).pending).toBe(true);
    const run = await settled(jobId);
    expect(run.state).toBe('canceled');
    expect(await findings(jobId)).toEqual([]);
  });
});
