// Credentials that are away for a while are an S3 outage, not a reason to fail a campaign: when the SDK cannot get
// credentials (the task role's endpoint did not answer a refresh: CredentialsProviderError) the run waits for S3
// without spending its attempt and finishes once credentials come back; an ExpiredToken answer (a request signed just
// before a refresh) is retried like any transient S3 error. A worker that never had credentials (no task role: the SDK
// throws the same CredentialsProviderError) fails the run at once instead of waiting out the outage budget. The real SDK, a real worker in this process (it takes the
// test's S3 client: its credential provider is the test's), the real S3 server behind a small front for ExpiredToken.
import { rm } from 'node:fs/promises';
import { HeadBucketCommand, type S3Client } from '@aws-sdk/client-s3';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { massImportHandler } from '../worker/handlers/mass-import.js';
import { objectKeyFor } from '../worker/imports/object-key.js';
import { requireJob } from '../worker/queue/operator.js';
import type { Worker } from '../worker/runner/worker.js';
import { createS3Client } from '../worker/storage/s3-client.js';
import { useTestEnvironment } from './harness.js';
import { startFaultyS3Proxy } from './support/faulty-s3-proxy.js';
import { silentLog, testWorker, waitFor } from './support/in-process-worker.js';
import { contentOf, documentsOf, itemsOf, makeTree, objectBytes, waitForTerminal, type TreeFile } from './support/mass-import-tree.js';

const env = useTestEnvironment();
const TENANT = 'creds';
const files: TreeFile[] = [
  { path: 'a.pdf', size: 1_200 },
  { path: 'b/c.txt', size: 300 },
  { path: 'b/d.bin', size: 4_000 },
];
let root: string;
const running: Worker[] = [];
const clients: S3Client[] = [];

beforeAll(async () => {
  root = await makeTree(files);
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((worker) => worker.stop()));
  for (const client of clients.splice(0)) client.destroy();
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

/** A worker in this process that imports `root` through the given S3 client. */
function startWorker(s3: S3Client): Worker {
  const worker = testWorker(
    env,
    [massImportHandler],
    // Outage waits of at most 200 ms instead of minutes: the same semantics, sooner.
    { workerId: `credentials-${process.pid}-${running.length}`, concurrency: 1, outageBackoffMaxMs: 200 },
    silentLog,
    { s3, settings: { IMPORT_ROOT: root, IMPORT_ROOT_REQUIRE_MOUNT: 'false', MASS_IMPORT_CONCURRENCY: '4' } },
  );
  running.push(worker);
  void worker.start();
  return worker;
}

async function expectAllImported(prefix: string, jobId: number): Promise<void> {
  const rows = await documentsOf(env, `${prefix}/${TENANT}/`);
  expect(rows.map((row) => row.source_path)).toEqual(files.map((file) => file.path).sort());
  for (const file of files) {
    expect(rows.find((row) => row.source_path === file.path)).toMatchObject({ import_job_id: jobId });
    expect((await objectBytes(env.s3, env.bucket, objectKeyFor(prefix, TENANT, file.path))).equals(contentOf(file))).toBe(true);
  }
}

describe('credentials away for a while', () => {
  it('CredentialsProviderError: the run waits for S3 without spending its one attempt, then finishes', { timeout: 90_000 }, async () => {
    let available = false;
    let refusals = 0;
    const s3 = createS3Client({
      region: inject('s3Region'),
      endpoint: env.s3Endpoint,
      maxAttempts: 1,
      // What the SDK's default chain throws when the container credentials endpoint does not answer. Credentials that
      // expire within the SDK's refresh window: it asks again for every request, as it does near a role's expiry.
      credentials: () => {
        if (available) return Promise.resolve({ ...inject('s3Credentials'), expiration: new Date(Date.now() + 60_000) });
        refusals += 1;
        return Promise.reject(
          Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError', tryNextLink: false }),
        );
      },
    });
    clients.push(s3);
    // The worker's client had credentials (a worker that ran for hours), then its refresh fails.
    available = true;
    await s3.send(new HeadBucketCommand({ Bucket: env.bucket }));
    available = false;
    const prefix = 'no-credentials';
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix }, maxAttempts: 1 });
    startWorker(s3);

    // Every file fails for want of credentials, and so does the probe of S3: an outage, recorded on the run.
    const waiting = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.outageStartedAt || current.state === 'failed' || current.state === 'dead' || current.state === 'partial' ? current : undefined;
    }, 60_000, 50);
    expect(waiting.state, JSON.stringify(waiting.lastError)).not.toMatch(/^(failed|dead|partial)$/);
    expect(waiting).toMatchObject({ outageDependency: 's3', attempts: 0 });
    expect(waiting.lastError).toMatchObject({ code: 'S3_UNAVAILABLE', class: 'transient', context: { dependency: 's3', attemptCounted: false } });
    expect(refusals).toBeGreaterThan(files.length);
    const items = await itemsOf(env, job.id);
    expect(items.filter((item) => item.state === 'failed')).toEqual([]);

    available = true;
    const done = await waitForTerminal(env, job.id, 60_000);
    expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
    expect(done).toMatchObject({ attempts: 1, outageStartedAt: null });
    expect(done.result).toMatchObject({ files: files.length, imported: files.length, failed: 0 });
    await expectAllImported(prefix, job.id);
  });

  it('a task whose credentials endpoint does not answer at its start: waited out, though the worker never signed', { timeout: 90_000 }, async () => {
    let available = false;
    const s3 = createS3Client({
      region: inject('s3Region'),
      endpoint: env.s3Endpoint,
      maxAttempts: 1,
      // A task role is configured (its endpoint's variable is set): the default chain's error is a hiccup.
      credentialSourceConfigured: true,
      credentials: () =>
        available
          ? Promise.resolve({ ...inject('s3Credentials'), expiration: new Date(Date.now() + 60_000) })
          : Promise.reject(
              Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError', tryNextLink: false }),
            ),
    });
    clients.push(s3);
    const prefix = 'slow-endpoint';
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix }, maxAttempts: 1 });
    startWorker(s3);
    const waiting = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.outageStartedAt || ['failed', 'dead', 'partial'].includes(current.state) ? current : undefined;
    }, 60_000, 50);
    expect(waiting.state, JSON.stringify(waiting.lastError)).not.toMatch(/^(failed|dead|partial)$/);
    expect(waiting).toMatchObject({ outageDependency: 's3', attempts: 0 });
    available = true;
    const done = await waitForTerminal(env, job.id, 60_000);
    expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
    await expectAllImported(prefix, job.id);
  });

  it('never any credentials (no task role): the run fails at once S3_NO_CREDENTIALS, without waiting as an outage', { timeout: 60_000 }, async () => {
    let refusals = 0;
    const s3 = createS3Client({
      region: inject('s3Region'),
      endpoint: env.s3Endpoint,
      maxAttempts: 1,
      // Nothing in the environment gives the default chain credentials (the provider stands in for that chain).
      credentialSourceConfigured: false,
      credentials: () => {
        refusals += 1;
        return Promise.reject(
          Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError', tryNextLink: false }),
        );
      },
    });
    clients.push(s3);
    const prefix = 'never-credentials';
    const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix } });
    startWorker(s3);
    const ended = await waitFor(async () => {
      const current = await requireJob(env.pool, job.id);
      return current.outageStartedAt || ['failed', 'dead', 'partial', 'succeeded'].includes(current.state) ? current : undefined;
    }, 60_000, 50);
    expect(ended.state, JSON.stringify(ended.lastError)).toBe('failed');
    expect(ended).toMatchObject({ attempts: 1, outageStartedAt: null });
    expect(ended.lastError).toMatchObject({ code: 'S3_NO_CREDENTIALS', class: 'permanent', context: { cause: 'CredentialsProviderError' } });
    expect(ended.lastError?.message).toContain('nothing gives this worker any');
    expect(refusals).toBeGreaterThan(0);
    expect((await itemsOf(env, job.id)).filter((item) => item.state !== 'pending')).toEqual([]);
    expect(await documentsOf(env, `${prefix}/${TENANT}/`)).toEqual([]);
  });

  it('ExpiredToken on a write is retried: every file is imported', { timeout: 60_000 }, async () => {
    // The first write of each URL is answered 400 ExpiredToken, as S3 does; the rest reach the S3 server.
    const front = await startFaultyS3Proxy(env.s3Endpoint);
    front.decide = (request) => (request.method === 'PUT' && request.previousTries === 0 ? 'expired-token' : 'pass');
    try {
      const s3 = createS3Client({ region: inject('s3Region'), endpoint: front.endpoint, credentials: inject('s3Credentials'), maxAttempts: 1 });
      clients.push(s3);
      const prefix = 'expired-token';
      const { job } = await submitJob(env.pool, { kind: 'mass-import', tenantId: TENANT, payload: { prefix }, maxAttempts: 1 });
      startWorker(s3);
      const done = await waitForTerminal(env, job.id, 60_000);
      expect(done.state, JSON.stringify(done.lastError)).toBe('succeeded');
      expect(front.stats.faults['expired-token']).toBe(files.length);
      expect((await itemsOf(env, job.id)).map((item) => item.tries)).toEqual(files.map(() => 2));
      await expectAllImported(prefix, job.id);
    } finally {
      await front.close();
    }
  });
});
