// Traces end to end, with the real parts: `bulk-import serve` and `bulk-import worker` as processes exporting OTLP/HTTP
// (JSON) to a real receiver. A CSV submitted through the API, validated, finalized through the API is one trace rooted
// in the submit request, every span chained up to it, with the pg and S3 spans beneath the steps; a retried run
// enqueued by the CLI is one trace with a claim and a run span per attempt; the worker's log lines carry the ids.
import { spawn } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { rm } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { requireJob } from '../worker/queue/operator.js';
import { plantedFile, upload } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { makeKey } from './support/api-server.js';
import { runCli } from './support/cli-runner.js';
import { waitFor } from './support/in-process-worker.js';
import { makeTree } from './support/mass-import-tree.js';
import { startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './support/otlp-receiver.js';
import { CLI_ENTRY, killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
let receiver: OtlpReceiver;
let apiUrl: string;
let tenantKey: string;
let operatorKey: string;
let worker: WorkerProcess;
let stopApi: () => Promise<void>;
let root: string;
const FILES = 40;
const workers: WorkerProcess[] = [];
/** The log lines of the `serve` process. */
const apiLogs: Array<Record<string, unknown>> = [];

const SERVER = 2;

function tracingEnv(service: string): Record<string, string> {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_BSP_SCHEDULE_DELAY: '100',
    OTEL_SERVICE_NAME: service,
  };
}

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  root = await makeTree(Array.from({ length: FILES }, (_, i) => ({ path: `docs/file-${i}.txt`, size: 500 + i })));
  tenantKey = await makeKey(env, 'backend', 'tenant', 'shop');
  operatorKey = await makeKey(env, 'ops', 'operator');
  const child = spawn(process.execPath, [CLI_ENTRY, 'serve', '--port', '0', '--host', '127.0.0.1'], {
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      ...env.processEnv,
      LOG_LEVEL: 'info',
      ...tracingEnv('bulk-import-api'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  stopApi = async () => {
    if (child.exitCode === null) child.kill('SIGTERM');
    await exited;
  };
  apiUrl = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      const parsed = JSON.parse(line) as { msg: string; address?: string };
      apiLogs.push(parsed);
      if (parsed.msg === 'API listening') resolve(parsed.address!);
    });
    void exited.then(() => reject(new Error('serve exited before listening')));
  });
  worker = spawnWorker(env, {
    env: {
      ...tracingEnv('bulk-import-worker'),
      CSV_FINALIZE_CHUNK_SIZE: '100',
      RETRY_BACKOFF_BASE_MS: '10',
      RETRY_BACKOFF_MAX_MS: '20',
      WORKER_POLL_INTERVAL_MS: '100',
      IMPORT_ROOT: root,
      IMPORT_ROOT_REQUIRE_MOUNT: 'false',
    },
  });
  workers.push(worker);
  await worker.waitForLog((line) => line.msg === 'worker started');
});
afterAll(async () => {
  await killAll(workers);
  await stopApi?.();
  await receiver?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

async function post(path: string, body: unknown, key = tenantKey): Promise<{ status: number; body: { job?: { id: number }; state?: string } }> {
  const response = await fetch(`${apiUrl}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as { job?: { id: number } } };
}

const waitForState = (id: number, states: string[], timeoutMs = 30_000) =>
  waitFor(async () => states.includes((await requireJob(env.pool, id)).state), timeoutMs);

const spansOfJob = (id: number, name: string) => receiver.spans().filter((span) => span.name === name && span.attributes['job.id'] === id);

/** The one span of the trace with this name and parent (fails when there is none or more than one). */
function childOf(trace: ReceivedSpan[], parent: ReceivedSpan, name: string | RegExp): ReceivedSpan {
  const found = trace.filter((span) => span.parentSpanId === parent.spanId && (typeof name === 'string' ? span.name === name : name.test(span.name)));
  expect(found.map((span) => span.name), `children "${String(name)}" of ${parent.name}`).toHaveLength(1);
  return found[0]!;
}

/** Every span of the trace chains up, parent by parent, to `root`. */
function expectConnected(trace: ReceivedSpan[], root: ReceivedSpan): void {
  const byId = new Map(trace.map((span) => [span.spanId, span]));
  for (const span of trace) {
    let at = span;
    for (let depth = 0; at.spanId !== root.spanId; depth += 1) {
      const parent = byId.get(at.parentSpanId);
      expect(parent, `parent of ${at.name} (from ${span.name})`).toBeDefined();
      expect(depth).toBeLessThan(50);
      at = parent!;
    }
  }
}

describe('traces', () => {
  it('a CSV submitted through the API, validated and finalized is one trace rooted in the submit request', async () => {
    const planted = plantedFile(350, 100, 'TRC');
    const key = 'imports/shop/traced.csv';
    await upload(env.s3, env.bucket, key, planted.body);
    const submitted = await post('/v1/jobs', { kind: 'csv-import', payload: { bucket: env.bucket, key, profile: 'products' } });
    expect(submitted.status).toBe(201);
    const jobId = submitted.body.job!.id;
    await waitForState(jobId, ['review_ready']);
    expect((await post(`/v1/jobs/${jobId}/finalize`, {})).status).toBe(200);
    await waitForState(jobId, ['partial']);
    await waitFor(async () => spansOfJob(jobId, 'run csv-finalize').length === 1 && receiver.spans().filter((s) => s.name === 'csv finalize').length === 1, 15_000);

    const enqueue = spansOfJob(jobId, 'enqueue')[0]!;
    const trace = receiver.spans().filter((span) => span.traceId === enqueue.traceId);
    const root = trace.find((span) => span.spanId === enqueue.parentSpanId)!;
    expect(root).toMatchObject({ name: 'POST /v1/jobs', parentSpanId: '', kind: SERVER, service: 'bulk-import-api' });
    expect(root.attributes).toMatchObject({ 'http.route': '/v1/jobs', 'http.response.status_code': 201 });
    expect(enqueue.attributes).toMatchObject({ 'job.kind': 'csv-import', tenant: 'shop', 'job.reused': false });
    expectConnected(trace, root);

    // enqueue → claim → run <kind>, one claim and one run per attempt: validation, then finalize.
    const claims = trace.filter((span) => span.name === 'claim');
    expect(claims.map((claim) => claim.parentSpanId)).toEqual([enqueue.spanId, enqueue.spanId]);
    const validateRun = childOf(trace, claims.find((claim) => claim.attributes['job.kind'] === 'csv-import')!, 'run csv-import');
    const finalizeRun = childOf(trace, claims.find((claim) => claim.attributes['job.kind'] === 'csv-finalize')!, 'run csv-finalize');
    expect(validateRun).toMatchObject({ service: 'bulk-import-worker', statusCode: 1 });
    expect(validateRun.attributes).toMatchObject({ 'job.id': jobId, tenant: 'shop', attempt: 1, 'job.outcome': 'review_ready', 'job.rows': 350 });
    expect(finalizeRun.attributes).toMatchObject({ 'job.id': jobId, 'job.kind': 'csv-finalize', 'job.outcome': 'partial' });

    // The steps, with the S3 and pg spans of the official instrumentations beneath them.
    const validate = childOf(trace, validateRun, 'csv validate');
    expect(validate.attributes).toMatchObject({ bucket: env.bucket, key, rows: 350, 'rows.invalid': 3, bytes: planted.body.length });
    const read = childOf(trace, validate, 'csv read');
    expect(read.attributes).toMatchObject({ bucket: env.bucket, key, bytes: planted.body.length });
    expect(childOf(trace, read, /GetObject/).attributes).toMatchObject({ 'rpc.service': 'S3', 'aws.s3.bucket': env.bucket });
    const isPg = (span: ReceivedSpan) => Object.keys(span.attributes).some((name) => name.startsWith('db.'));
    expect(trace.filter((span) => span.parentSpanId === validate.spanId && isPg(span)).length).toBeGreaterThan(0);
    const finalize = childOf(trace, finalizeRun, 'csv finalize');
    const batches = trace.filter((span) => span.parentSpanId === finalize.spanId && span.name === 'csv finalize batch');
    expect(batches.map((batch) => batch.attributes['batch.number']).sort()).toEqual([1, 2, 3, 4]);
    expect(batches.reduce((sum, batch) => sum + Number(batch.attributes['rows.inserted']), 0)).toBe(347);
    for (const batch of batches) expect(trace.some((span) => span.parentSpanId === batch.spanId && isPg(span)), `pg under batch`).toBe(true);

    // The worker's log lines of each attempt carry the trace and the run span.
    const finished = (kind: string) => worker.logs.find((line) => line.job_id === jobId && line.kind === kind && line.msg === 'job finished');
    expect(finished('csv-import')).toMatchObject({ trace_id: root.traceId, span_id: validateRun.spanId });
    expect(finished('csv-finalize')).toMatchObject({ trace_id: root.traceId, span_id: finalizeRun.spanId });
    expect(worker.logs.find((line) => line.job_id === jobId && line.msg === 'csv validated')).toMatchObject({ trace_id: root.traceId });
  });

  it('a retried run enqueued by the CLI is one trace: a claim and a failed run span per attempt', async () => {
    const enqueued = await runCli(
      env,
      ['enqueue', 'noop', '--payload', '{"fail":"transient"}', '--max-attempts', '2', '--no-dedupe', '--json'],
      tracingEnv('bulk-import-cli'),
    );
    expect(enqueued.code, enqueued.stderr).toBe(0);
    const jobId = (JSON.parse(enqueued.stdout) as { id: number }).id;
    await waitForState(jobId, ['dead']);
    await waitFor(async () => spansOfJob(jobId, 'run noop').length === 2, 15_000);

    // The CLI exported its enqueue span before exiting: it is the trace's root.
    const enqueue = spansOfJob(jobId, 'enqueue')[0]!;
    expect(enqueue).toMatchObject({ parentSpanId: '', service: 'bulk-import-cli' });
    const trace = receiver.spans().filter((span) => span.traceId === enqueue.traceId);
    expectConnected(trace, enqueue);
    const claims = trace.filter((span) => span.name === 'claim').sort((a, b) => Number(a.attributes.attempt) - Number(b.attributes.attempt));
    expect(claims.map((claim) => [claim.attributes.attempt, claim.parentSpanId])).toEqual([[1, enqueue.spanId], [2, enqueue.spanId]]);
    const runs = claims.map((claim) => childOf(trace, claim, 'run noop'));
    expect(runs.map((run) => [run.attributes.attempt, run.attributes['job.outcome'], run.statusCode])).toEqual([[1, 'queued', 2], [2, 'dead', 2]]);
    for (const run of runs) expect(run.events).toContain('exception');
    expect(trace.filter((span) => span.name === 'run noop')).toHaveLength(2);
  });

  it('a mass import makes one span per batch of files and traces one file of the batch in full, not one per file', async () => {
    const submitted = await post('/v1/jobs', { kind: 'mass-import', tenant: 'shop', payload: { source: 'docs' } }, operatorKey);
    expect(submitted.status).toBe(201);
    const jobId = submitted.body.job!.id;
    await waitForState(jobId, ['succeeded']);
    await waitFor(async () => spansOfJob(jobId, 'run mass-import').length === 1, 15_000);
    const run = spansOfJob(jobId, 'run mass-import')[0]!;
    const trace = receiver.spans().filter((span) => span.traceId === run.traceId);
    expect(run.attributes).toMatchObject({ 'job.outcome': 'succeeded', 'job.files': FILES, 'job.filesimported': FILES });
    expect(childOf(trace, run, 'mass-import plan').attributes).toMatchObject({ files: FILES });
    // All 40 files fit one page: one batch span, one file traced with its upload beneath; 40 objects were uploaded.
    const batch = childOf(trace, run, 'mass-import batch');
    expect(batch.attributes).toMatchObject({ files: FILES, 'items.started': FILES });
    const file = childOf(trace, batch, 'mass-import file');
    expect(file.attributes).toMatchObject({ bucket: env.bucket, 'item.outcome': 'done', bytes: 500 });
    expect(childOf(trace, file, /PutObject/).attributes).toMatchObject({ 'rpc.service': 'S3' });
    expect(trace.filter((span) => /PutObject/.test(span.name))).toHaveLength(1);
    expect(trace.filter((span) => span.name === 'mass-import file')).toHaveLength(1);
  });

  it("a backend's own traceparent passed to submitJob is kept, and the worker's spans join that trace", async () => {
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const parentSpanId = '00f067aa0ba902b7';
    // This (test) process runs no tracing SDK: the traceparent is stored as given.
    const { job } = await submitJob(env.pool, { kind: 'noop', payload: {}, traceparent: `00-${traceId}-${parentSpanId}-01` });
    expect((await env.pool.query('SELECT traceparent FROM jobs WHERE id = $1', [job.id])).rows[0].traceparent).toBe(`00-${traceId}-${parentSpanId}-01`);
    await waitFor(async () => spansOfJob(job.id, 'run noop').length === 1, 15_000);
    const claim = spansOfJob(job.id, 'claim')[0]!;
    expect(claim).toMatchObject({ traceId, parentSpanId });
    expect(spansOfJob(job.id, 'run noop')[0]).toMatchObject({ traceId, parentSpanId: claim.spanId });
    await expect(submitJob(env.pool, { kind: 'noop', traceparent: 'not-a-trace' })).rejects.toThrow(/traceparent must be a W3C trace context/);
  });

  it("the API's line for a refused request carries the request span's trace, as a route's own lines do", async () => {
    const response = await fetch(`${apiUrl}/v1/jobs/1`, { headers: { authorization: 'Bearer not-a-key', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' } });
    expect(response.status).toBe(401);
    await waitFor(async () => receiver.spans().some((span) => span.traceId === '0af7651916cd43dd8448eb211c80319c'), 15_000);
    const span = receiver.spans().find((candidate) => candidate.traceId === '0af7651916cd43dd8448eb211c80319c')!;
    expect(span).toMatchObject({ name: 'GET /v1/jobs/:id', parentSpanId: 'b7ad6b7169203331' });
    expect(span.attributes['http.response.status_code']).toBe(401);
    const refused = apiLogs.filter((line) => line.msg === 'request refused' && line.code === 'UNAUTHENTICATED' && line.trace_id === span.traceId);
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ span_id: span.spanId, status: 401 });
  });

  it('a collector that is down at exit costs the last spans only: the command keeps its exit code and says so', async () => {
    // A port nothing listens on: the exporter's connection is refused, and its retries outlast the flush deadline.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const { port } = closed.address() as AddressInfo;
    await new Promise<void>((resolve) => closed.close(() => resolve()));

    const result = await runCli(env, ['enqueue', 'noop', '--no-dedupe', '--json'], {
      ...tracingEnv('bulk-import-cli'),
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
    });
    expect(result.code, result.stderr).toBe(0);
    const jobId = (JSON.parse(result.stdout) as { id: number }).id;
    expect((await requireJob(env.pool, jobId)).kind).toBe('noop');
    expect(result.stderr).toMatch(/^traces: the last spans were not exported (within 5000 ms of exit; left behind|at exit: .*ECONNREFUSED)/m);
    expect(result.stderr).not.toMatch(/\bat .*\.js:\d+/);
  });
});
