/* eslint-disable @typescript-eslint/no-explicit-any -- response bodies are read field by field */
// The API's routes end to end, against real Postgres and S3 with a real worker process: a CSV uploaded through a
// presigned URL, validated, followed over server-sent events to review_ready, its errors read as JSON pages and as
// CSV (the same bytes as `bulk-import errors --csv`), finalized and followed — across a reconnect with Last-Event-ID —
// to partial; a mass import followed to the end with its items; a dead run replayed, resolved with a note (in the
// history of the API and of `bulk-import show`), and purged.
import { rm, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readQueueGauges } from '../worker/queue/gauges.js';
import { csvLine, HEADER, plantedFile, rowFields, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { call, makeKey, startTestApi, type ApiResponse, type TestApi } from './support/api-server.js';
import { runCli } from './support/cli-runner.js';
import { makeTree } from './support/mass-import-tree.js';
import { openEvents, type ServerSentEvent } from './support/sse-client.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
let api: TestApi;
let operator: string;
let backend: string;
let otherTenant: string;
let root: string;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  api = await startTestApi(env);
  operator = await makeKey(env, 'ops', 'operator');
  backend = await makeKey(env, 'backend', 'tenant', 'shop');
  otherTenant = await makeKey(env, 'intruder', 'tenant', 'other');
  root = await makeTree(Array.from({ length: 25 }, (_, i) => ({ path: `docs/file-${i}.txt`, size: 1_000 + i * 37 })));
  await symlink('/etc/hostname', join(root, 'docs', 'escape'));
  workers.push(spawnWorker(env, { env: { IMPORT_ROOT: root, IMPORT_ROOT_REQUIRE_MOUNT: 'false', LOG_LEVEL: 'warn' } }));
});
afterAll(async () => {
  await killAll(workers);
  await api?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

const isState = (state: string) => (event: ServerSentEvent) => event.event !== 'progress' && event.data.state === state;

describe('a CSV import through the API', () => {
  let jobId: number;
  const planted = plantedFile(3_000, 100, 'API');
  // One more bad row whose name a spreadsheet would run as a formula: the CSV export must escape it.
  const formulaRow = { ...validRow(9_999_999, 'API'), name: "=cmd|' /C calc'!A0", price: '-1' };
  const body = Buffer.concat([planted.body, Buffer.from(csvLine(rowFields(formulaRow), '\r\n'))]);
  // The formula row's line: one after the planted file's last (header = line 1; some descriptions span two lines).
  const formulaLine = planted.body.toString('utf8').split('\n').length;
  const badLines = [...planted.bad.keys(), formulaLine].sort((a, b) => a - b);

  it('uploads through a presigned PUT, submits, and follows the run over SSE to review_ready', async () => {
    const presigned = await call(api, 'POST', '/v1/uploads', { key: backend, body: { contentLength: body.length } });
    expect(presigned.status).toBe(201);
    expect(presigned.body).toMatchObject({ bucket: env.bucket, method: 'PUT', key: expect.stringMatching(/^imports\/shop\/[0-9a-f-]{36}\.csv$/) });
    // The length and type are signed (S3 refuses a PUT of another size); s3rver does not check SigV4 signatures, so
    // the binding is checked on the URL here.
    const signed = new URL(presigned.body.url).searchParams;
    expect(signed.get('X-Amz-SignedHeaders')).toBe('content-length;content-type;host');
    expect(signed.get('X-Amz-Expires')).toBe('300');
    expect([...signed.keys()].filter((name) => /checksum/i.test(name))).toEqual([]);
    const put = await fetch(presigned.body.url, { method: 'PUT', headers: presigned.body.headers, body });
    expect(put.status, await put.text()).toBe(200);

    const submitted = await call(api, 'POST', '/v1/jobs', {
      key: backend,
      body: { kind: 'csv-import', payload: { bucket: presigned.body.bucket, key: presigned.body.key, profile: 'products' } },
    });
    expect(submitted.status).toBe(201);
    jobId = submitted.body.job.id;
    const stream = await openEvents(api, jobId, backend);
    expect(stream.status).toBe(200);
    expect(stream.events[0] ?? (await stream.waitFor((event) => event.event === 'snapshot'))).toMatchObject({ event: 'snapshot', data: { id: jobId } });
    await stream.waitFor(isState('review_ready'));
    stream.close();
    const detail = await call(api, 'GET', `/v1/jobs/${jobId}`, { key: backend });
    expect(detail.body).toMatchObject({ state: 'review_ready', tenant: 'shop', startedBy: 'backend', result: expect.any(Object) });
  });

  it('reads the failed rows as JSON pages (keyset cursor) and as CSV, the same bytes the CLI writes', async () => {
    const rows: number[] = [];
    let next: string | null = null;
    let pages = 0;
    do {
      const page: ApiResponse<any> = await call(api, 'GET', `/v1/jobs/${jobId}/errors?limit=7${next ? `&cursor=${next}` : ''}`, { key: backend });
      expect(page.status).toBe(200);
      expect(page.body.header).toEqual(HEADER);
      rows.push(...page.body.errors.map((error: { row: number; issues: unknown[] }) => error.row));
      next = page.body.next;
      pages += 1;
    } while (next);
    expect(rows).toEqual(badLines);
    expect(pages).toBe(Math.ceil(badLines.length / 7) + (badLines.length % 7 === 0 ? 1 : 0));

    const csv = await fetch(`${api.url}/v1/jobs/${jobId}/errors?format=csv`, { headers: { authorization: `Bearer ${backend}` } });
    expect(csv.status).toBe(200);
    expect(csv.headers.get('content-type')).toContain('text/csv');
    const text = await csv.text();
    const cli = await runCli(env, ['errors', String(jobId), '--csv']);
    expect(cli.code).toBe(0);
    expect(text).toBe(cli.stdout);
    const records = parse(text, { relax_column_count: true }) as string[][];
    expect(records[0]).toEqual(['_row', '_errors', ...HEADER]);
    expect(records.slice(1).map((record) => Number(record[0]))).toEqual(badLines);
    expect(records.at(-1)![3]).toBe(`'=cmd|' /C calc'!A0`);
  });

  it("another tenant's key gets 404 for the run, its errors, its events and every action, and nothing changes", async () => {
    const before = (await call(api, 'GET', `/v1/jobs/${jobId}`, { key: operator })).body;
    for (const [method, path] of [
      ['GET', `/v1/jobs/${jobId}`],
      ['GET', `/v1/jobs/${jobId}/errors`],
      ['GET', `/v1/jobs/${jobId}/errors?format=csv`],
      ['GET', `/v1/jobs/${jobId}/items`],
      ['GET', `/v1/jobs/${jobId}/events`],
      ['POST', `/v1/jobs/${jobId}/finalize`],
      ['POST', `/v1/jobs/${jobId}/reject`],
      ['POST', `/v1/jobs/${jobId}/cancel`],
      ['POST', `/v1/jobs/${jobId}/requeue`],
      ['POST', `/v1/jobs/${jobId}/resolve`],
    ] as const) {
      const response = await call(api, method, path, { key: otherTenant, ...(method === 'POST' ? { body: { note: 'mine now' } } : {}) });
      expect(response.status, `${method} ${path}`).toBe(404);
      expect(response.body, `${method} ${path}`).toEqual({ error: { code: 'JOB_NOT_FOUND', message: `job ${jobId} does not exist` } });
    }
    const after = (await call(api, 'GET', `/v1/jobs/${jobId}`, { key: operator })).body;
    expect(after).toEqual(before);
    // Its own tenant may not cancel (operators do): 403, after the run was found.
    expect((await call(api, 'POST', `/v1/jobs/${jobId}/cancel`, { key: backend, body: {} })).status).toBe(403);
  });

  it('finalizes; a client that drops and reconnects with Last-Event-ID gets every event it missed, then partial', async () => {
    // A witness stays connected throughout: what the dropped client missed is what the witness saw after its last event.
    const witness = await openEvents(api, jobId, operator);
    await witness.waitFor((event) => event.event === 'snapshot');
    const stream = await openEvents(api, jobId, backend);
    const snapshot = await stream.waitFor((event) => event.event === 'snapshot');
    const finalized = await call(api, 'POST', `/v1/jobs/${jobId}/finalize`, { key: backend, body: { note: 'looks right' } });
    expect(finalized.status).toBe(200);
    // The run is queued by the action; a worker may already have claimed it when the answer reads it back.
    expect(finalized.body).toMatchObject({ kind: 'csv-finalize' });
    expect(['queued', 'running']).toContain((finalized.body as { state: string }).state);
    const queued = await stream.waitFor(isState('queued'));
    stream.close();
    await stream.closed;

    // While nobody follows, the worker runs the finalize to its end.
    const done = await openEvents(api, jobId, operator);
    await done.waitFor((event) => event.data.state === 'partial');
    done.close();

    const resumed = await openEvents(api, jobId, backend, queued.id);
    await resumed.waitFor(isState('partial'));
    resumed.close();
    await witness.waitFor(isState('partial'));
    witness.close();
    expect(resumed.events[0]!.event).not.toBe('snapshot');
    // Exactly the witness's events after the one the client had last (ids, types, data), up to the end.
    const seen = witness.events.slice(witness.events.findIndex((event) => event.id === queued.id) + 1);
    expect(seen.length).toBeGreaterThan(0);
    expect(resumed.events.slice(0, seen.length)).toEqual(seen);
    const states = resumed.events.filter((event) => event.event === 'state').map((event) => event.data.state);
    expect(states[0]).toBe('running');
    expect(states.at(-1)).toBe('partial');
    // A retried attempt (running, queued, running) is allowed but said, with the worker's warnings: CI met one once.
    if (states.length !== 2) console.warn('finalize was retried:', states, workers.flatMap((worker) => worker.logs.filter((line) => line.level >= 40)));
    const ids = resumed.events.map((event) => Number(event.id!.split('.')[1]));
    expect(ids[0]).toBeGreaterThan(Number(queued.id!.split('.')[1]));
    expect(Number(queued.id!.split('.')[1])).toBeGreaterThan(Number(snapshot.id!.split('.')[1]));

    const detail = (await call(api, 'GET', `/v1/jobs/${jobId}`, { key: backend })).body;
    expect(detail).toMatchObject({ state: 'partial', startedBy: 'backend', finishedAt: expect.any(String) });
    expect(detail.actions.map((action: { action: string; actor: string; note: string | null }) => [action.action, action.actor, action.note])).toEqual([
      ['submitted', 'backend', null],
      ['finalized', 'backend', 'looks right'],
    ]);
  });
});

describe('a mass import through the API', () => {
  it('is followed to its end, with its items paged and its failed item among the errors', async () => {
    const submitted = await call(api, 'POST', '/v1/jobs', { key: operator, body: { kind: 'mass-import', tenant: 'shop', payload: { source: 'docs' } } });
    expect(submitted.status).toBe(201);
    const jobId = submitted.body.job.id as number;
    const stream = await openEvents(api, jobId, operator);
    const end = await stream.waitFor((event) => ['partial', 'succeeded', 'failed', 'dead'].includes(String(event.data.state)) && event.event !== 'progress');
    stream.close();
    expect(end.data.state).toBe('partial');

    const items: Array<{ itemNo: number; path: string; state: string }> = [];
    let next: string | null = null;
    do {
      const page: ApiResponse<any> = await call(api, 'GET', `/v1/jobs/${jobId}/items?limit=10${next ? `&cursor=${next}` : ''}`, { key: operator });
      expect(page.status).toBe(200);
      items.push(...page.body.items);
      next = page.body.next;
    } while (next);
    expect(items).toHaveLength(26);
    expect(items.map((item) => item.itemNo)).toEqual([...items.map((item) => item.itemNo)].sort((a, b) => a - b));
    expect(items.filter((item) => item.state === 'done')).toHaveLength(25);
    const errors = await call(api, 'GET', `/v1/jobs/${jobId}/errors`, { key: operator });
    expect(errors.body.errors).toEqual([expect.objectContaining({ path: 'docs/escape', state: 'failed', errorCode: 'SYMLINK_OUTSIDE_ROOT' })]);
    const failedOnly = await call(api, 'GET', `/v1/jobs/${jobId}/items?state=failed`, { key: operator });
    expect(failedOnly.body.items.map((item: { path: string }) => item.path)).toEqual(['docs/escape']);
    const detail = (await call(api, 'GET', `/v1/jobs/${jobId}`, { key: operator })).body;
    expect(detail.progress).toMatchObject({ done: expect.any(Number), total: expect.any(Number), percent: expect.any(Number) });
    expect(detail.result).toMatchObject({ failed: 1 });
  });
});

describe('dead runs: replay, resolve, purge', () => {
  async function deadNoop(): Promise<number> {
    const submitted = await call(api, 'POST', '/v1/jobs', { key: operator, body: { kind: 'noop', payload: { fail: 'transient' }, maxAttempts: 1, dedupeKey: null } });
    const jobId = submitted.body.job.id as number;
    const stream = await openEvents(api, jobId, operator);
    await stream.waitFor(isState('dead'));
    stream.close();
    return jobId;
  }

  it('a dead run is listed, replayed (and dies again), then resolved with a note that shows in every history', async () => {
    const jobId = await deadNoop();
    const dead = await call(api, 'GET', '/v1/dead', { key: operator });
    expect(dead.body.jobs.map((job: { id: number }) => job.id)).toContain(jobId);
    expect(dead.body.jobs[0].lastError).toMatchObject({ code: 'NOOP_TRANSIENT' });

    const stream = await openEvents(api, jobId, operator);
    await stream.waitFor((event) => event.event === 'snapshot');
    const replayed = await call(api, 'POST', '/v1/dead/replay', { key: operator, body: { ids: [jobId], note: 'retry after the fix' } });
    expect(replayed.status).toBe(200);
    expect(replayed.body.replayed).toEqual([expect.objectContaining({ id: jobId, state: 'queued' })]);
    await stream.waitFor(isState('running'));
    await stream.waitFor((event) => event.event === 'state' && event.data.state === 'dead' && event.data.attempts === 2);
    stream.close();
    expect((await call(api, 'POST', '/v1/dead/replay', { key: operator, body: { ids: [jobId, 999_999_997] } })).body.error.code).toBe('JOB_NOT_FOUND');

    expect((await call(api, 'POST', `/v1/jobs/${jobId}/resolve`, { key: operator, body: {} })).body.error).toMatchObject({ code: 'INVALID_REQUEST', field: 'note' });
    const deadBefore = (await readQueueGauges(env.pool, ['noop'])).find((gauge) => gauge.kind === 'noop')!.dead;
    const resolved = await call(api, 'POST', `/v1/jobs/${jobId}/resolve`, { key: operator, body: { note: 'upstream bug, data re-sent by hand' } });
    expect(resolved.status).toBe(200);
    expect(resolved.body).toMatchObject({ state: 'dead', resolution: { by: 'ops', note: 'upstream bug, data re-sent by hand' } });
    expect(resolved.body.actions.map((action: { action: string; actor: string }) => `${action.action}:${action.actor}`)).toEqual([
      'submitted:ops', 'replayed:ops', 'resolved:ops',
    ]);
    expect((await readQueueGauges(env.pool, ['noop'])).find((gauge) => gauge.kind === 'noop')!.dead).toBe(deadBefore - 1);
    expect((await call(api, 'GET', '/v1/dead', { key: operator })).body.jobs.map((job: { id: number }) => job.id)).not.toContain(jobId);
    expect((await call(api, 'POST', `/v1/jobs/${jobId}/resolve`, { key: operator, body: { note: 'again' } })).body.error.code).toBe('INVALID_TRANSITION');
    // Still in the listings, with its state: history stays true.
    expect((await call(api, 'GET', '/v1/jobs?state=dead&kind=noop', { key: operator })).body.jobs.map((job: { id: number }) => job.id)).toContain(jobId);

    const show = await runCli(env, ['show', String(jobId)]);
    expect(show.stdout).toMatch(/resolved\s+\S+ by ops: upstream bug, data re-sent by hand/);
    expect(show.stdout).toMatch(/replayed\s+ops\s+queued\s+retry after the fix/);
  });

  it('bulk-import resolve records the CLI user; purge deletes dead runs and keeps a purged entry in their history', async () => {
    const jobId = await deadNoop();
    const cli = await runCli(env, ['resolve', String(jobId), '--note', 'known bad input']);
    expect(cli.code, cli.stderr).toBe(0);
    expect(cli.stdout).toMatch(new RegExp(`Job ${jobId} \\(dead\\) resolved by cli:\\S+: known bad input`));
    const detail = (await call(api, 'GET', `/v1/jobs/${jobId}`, { key: operator })).body;
    expect(detail.resolution).toMatchObject({ by: expect.stringMatching(/^cli:/), note: 'known bad input' });
    expect((await runCli(env, ['resolve', String(jobId)])).stderr).toContain("required option '--note <text>'");

    const dryRun = await call(api, 'POST', '/v1/dead/purge', { key: operator, body: { olderThan: '0s', kind: ['noop'], dryRun: true } });
    expect(dryRun.body).toMatchObject({ dryRun: true });
    expect(dryRun.body.jobs.map((job: { id: number }) => job.id)).toContain(jobId);
    expect((await call(api, 'GET', `/v1/jobs/${jobId}`, { key: operator })).status).toBe(200);
    const purged = await call(api, 'POST', '/v1/dead/purge', { key: operator, body: { olderThan: '0s', kind: ['noop'], note: 'spring cleaning' } });
    expect(purged.body.count).toBe(dryRun.body.count);
    expect((await call(api, 'GET', `/v1/jobs/${jobId}`, { key: operator })).status).toBe(404);
    const { rows } = await env.pool.query(`SELECT action, actor, note FROM job_actions WHERE job_id = $1 ORDER BY id`, [jobId]);
    expect(rows.at(-1)).toEqual({ action: 'purged', actor: 'ops', note: 'spring cleaning' });
    expect((await call(api, 'POST', '/v1/dead/purge', { key: operator, body: { olderThan: 'soon' } })).body.error).toMatchObject({ code: 'INVALID_REQUEST', field: 'olderThan' });
  });

  it('stats counts runs per kind and state', async () => {
    const stats = await call(api, 'GET', '/v1/stats?window=1h', { key: operator });
    expect(stats.status).toBe(200);
    expect(stats.body.windowMs).toBe(3_600_000);
    expect(stats.body.counts).toEqual(expect.arrayContaining([expect.objectContaining({ kind: 'csv-finalize', state: 'partial', count: 1 })]));
  });
});
