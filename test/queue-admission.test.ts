// Admission control: a submit over a queue limit is refused before anything is written (typed error, CLI exit code,
// HTTP 429 with Retry-After), dedupe still wins, and 50 processes submitting at once never overshoot a limit.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { loadConfig, type QueueConfig } from '../worker/config.js';
import { EXIT_QUEUE_LIMIT } from '../worker/cli/commands/enqueue.js';
import { describeError } from '../worker/http/errors.js';
import { NO_ADMISSION_LIMITS, NO_LIMITS, QueueLimitError } from '../worker/queue/admission.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJobs } from '../worker/queue/enqueue.js';
import { EQUAL_SHARES, PLAIN_ORDER, type FairSharePolicy } from '../worker/queue/fair-share.js';
import { PermanentJobError } from '../worker/queue/errors.js';
import { useTestEnvironment } from './harness.js';
import { call, makeKey, startTestApi } from './support/api-server.js';
import { runCli } from './support/cli-runner.js';
import { compiledFixture } from './support/worker-processes.js';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const SUBMITTER = compiledFixture('submit-at-signal');

const withLimits = (admission: Partial<QueueConfig['admission']>): QueueConfig => ({
  ...loadConfig({}).queue,
  admission: { ...NO_ADMISSION_LIMITS, ...admission },
});

describe('admission control on submit', () => {
  const env = useTestEnvironment();
  const queued = async (tenant: string) =>
    (await env.pool.query(`SELECT count(*)::int AS n FROM jobs WHERE tenant_id = $1 AND state = 'queued'`, [tenant])).rows[0].n as number;

  it('refuses the run over a tenant limit with a typed error that names limit, value and retry; writes nothing', async () => {
    const queue = withLimits({ tenant: { ...NO_LIMITS, runs: 3 } });
    for (let i = 0; i < 3; i += 1) await submitJob(env.pool, { kind: 'noop', tenantId: 'lim', payload: { seq: i } }, { queue });
    const refused = submitJob(env.pool, { kind: 'noop', tenantId: 'lim', payload: { seq: 9 } }, { queue });
    await expect(refused).rejects.toBeInstanceOf(QueueLimitError);
    const error = (await refused.catch((e: unknown) => e)) as QueueLimitError;
    expect(error.code).toBe('QUEUE_LIMIT');
    expect(error.breach).toMatchObject({ scope: 'tenant', measure: 'runs', kind: 'noop', tenantId: 'lim', max: 3, current: 3, setting: 'ADMISSION_TENANT_QUEUED_RUNS' });
    expect(error.breach.retryAfterSeconds).toBeGreaterThanOrEqual(1);
    expect(error.message).toMatch(/3 queued runs, limit 3 queued runs \(ADMISSION_TENANT_QUEUED_RUNS\); nothing was submitted; retry in \d+ s/);
    expect(await queued('lim')).toBe(3);
    // Another tenant is not held back by this one's limit.
    await submitJob(env.pool, { kind: 'noop', tenantId: 'other', payload: {} }, { queue });
  });

  it('dedupe wins: a submit that reuses an active run is never refused', async () => {
    const queue = withLimits({ tenant: { ...NO_LIMITS, runs: 1 } });
    const first = await submitJob(env.pool, { kind: 'noop', tenantId: 'dd', payload: {}, dedupeKey: 'same' }, { queue });
    const again = await submitJob(env.pool, { kind: 'noop', tenantId: 'dd', payload: {}, dedupeKey: 'same' }, { queue });
    expect(again).toMatchObject({ reused: true, job: { id: first.job.id } });
    await expect(submitJob(env.pool, { kind: 'noop', tenantId: 'dd', payload: {}, dedupeKey: 'other' }, { queue })).rejects.toBeInstanceOf(QueueLimitError);
  });

  it('total, per-kind, bytes and oldest-queued limits', async () => {
    await env.pool.query('DELETE FROM jobs');
    const total = withLimits({ total: { ...NO_LIMITS, runs: 2 } });
    await submitJob(env.pool, { kind: 'noop', tenantId: 't1', payload: {} }, { queue: total });
    await submitJob(env.pool, { kind: 'noop', tenantId: 't2', payload: {} }, { queue: total });
    await expect(submitJob(env.pool, { kind: 'noop', tenantId: 't3', payload: {} }, { queue: total })).rejects.toMatchObject({
      breach: { scope: 'total', measure: 'runs', current: 2, max: 2 },
    });
    // A per-kind value replaces the general one for that kind only.
    const perKind = withLimits({ total: { ...NO_LIMITS, runs: 2 }, totalRunsByKind: { noop: 5 } });
    await submitJob(env.pool, { kind: 'noop', tenantId: 't3', payload: {} }, { queue: perKind });

    const bytes = withLimits({ tenant: { ...NO_LIMITS, bytes: 1_000 } });
    await submitJob(env.pool, { kind: 'noop', tenantId: 'b', payload: {}, sizeBytes: 600 }, { queue: bytes });
    await expect(submitJob(env.pool, { kind: 'noop', tenantId: 'b', payload: {}, sizeBytes: 600 }, { queue: bytes })).rejects.toMatchObject({
      breach: { measure: 'bytes', current: 600, max: 1_000, setting: 'ADMISSION_TENANT_QUEUED_BYTES' },
    });
    await submitJob(env.pool, { kind: 'noop', tenantId: 'b', payload: {}, sizeBytes: 400 }, { queue: bytes });
    // A run without a tenant under tenant-only limits is counted in the no-tenant scope (the statement of that case
    // once left its tenant parameter unused, which Postgres refuses).
    await submitJob(env.pool, { kind: 'noop', payload: {}, sizeBytes: 900 }, { queue: bytes });
    await expect(submitJob(env.pool, { kind: 'noop', payload: {}, sizeBytes: 200 }, { queue: bytes })).rejects.toMatchObject({
      breach: { measure: 'bytes', current: 900, tenantId: null },
    });
    // A run over the limit on its own could never be admitted, however empty the queue: a permanent refusal, no retry.
    const before = await queued('huge');
    for (const queue of [bytes, withLimits({ total: { ...NO_LIMITS, bytes: 1_000 } })]) {
      const oversized = submitJob(env.pool, { kind: 'noop', tenantId: 'huge', payload: {}, sizeBytes: 1_001 }, { queue });
      await expect(oversized).rejects.toBeInstanceOf(PermanentJobError);
      await expect(oversized).rejects.toMatchObject({ code: 'RUN_TOO_LARGE', context: { field: 'sizeBytes', max: 1_000, sizeBytes: 1_001 } });
    }
    expect(await queued('huge')).toBe(before);
    expect(describeError(new PermanentJobError('x', 'RUN_TOO_LARGE', { field: 'sizeBytes' }))).toMatchObject({ status: 413, body: { error: { code: 'RUN_TOO_LARGE', field: 'sizeBytes' } } });

    const age = withLimits({ tenant: { ...NO_LIMITS, oldestQueuedMs: 60_000 } });
    await submitJob(env.pool, { kind: 'noop', tenantId: 'old', payload: {}, runAt: new Date(Date.now() - 120_000) }, { queue: age });
    await expect(submitJob(env.pool, { kind: 'noop', tenantId: 'old', payload: {} }, { queue: age })).rejects.toMatchObject({
      breach: { measure: 'oldestQueuedMs', max: 60_000 },
    });
  });

  it("an oldest-queued breach says to retry when every run over the age has started, at the measured rate", async () => {
    await env.pool.query('DELETE FROM jobs');
    // The kind's rate, from its history: 11 runs finished a second apart, 1 run/s.
    await env.pool.query(
      `INSERT INTO jobs (kind, state, attempts, started_at, claimed_at, finished_at)
       SELECT 'noop', 'succeeded', 1, t - interval '100 milliseconds', t - interval '100 milliseconds', t
       FROM (SELECT now() - interval '30 seconds' + n * interval '1 second' AS t FROM generate_series(0, 10) AS n) AS finished`,
    );
    // 30 due runs of the tenant queued for two minutes, over a one-minute limit.
    await env.pool.query("INSERT INTO jobs (kind, tenant_id, run_at) SELECT 'noop', 'aged', now() - interval '2 minutes' FROM generate_series(1, 30)");
    const age = withLimits({ tenant: { ...NO_LIMITS, oldestQueuedMs: 60_000 } });
    const refused = submitJob(env.pool, { kind: 'noop', tenantId: 'aged', payload: {} }, { queue: age });
    await expect(refused).rejects.toBeInstanceOf(QueueLimitError);
    const { breach } = (await refused.catch((error: unknown) => error)) as QueueLimitError;
    expect(breach).toMatchObject({ measure: 'oldestQueuedMs', max: 60_000 });
    // 30 runs at 1 run/s; counting only the oldest said 1 s.
    expect(breach.retryAfterSeconds).toBeGreaterThanOrEqual(29);
    expect(breach.retryAfterSeconds).toBeLessThanOrEqual(31);
  });

  it("a tenant's breach says to retry when its excess will have started, counting the other tenants' turns", async () => {
    const tenantsRuns = async (policy: FairSharePolicy) => {
      await env.pool.query('DELETE FROM jobs');
      // The kind's rate, from its history: 1 run/s.
      await env.pool.query(
        `INSERT INTO jobs (kind, state, attempts, started_at, claimed_at, finished_at)
         SELECT 'noop', 'succeeded', 1, t - interval '100 milliseconds', t - interval '100 milliseconds', t
         FROM (SELECT now() - interval '30 seconds' + n * interval '1 second' AS t FROM generate_series(0, 10) AS n) AS finished`,
      );
      // The tenant holds 20 queued runs against a limit of 10: 11 must start before its next submit fits. Two other
      // tenants wait with 20 runs each.
      for (const tenantId of ['busy', 'calm', 'quiet']) {
        await enqueueJobs(env.pool, 'noop', Array.from({ length: 20 }, () => ({})), { tenantId, fairShare: policy });
      }
    };
    const limits = withLimits({ tenant: { ...NO_LIMITS, runs: 10 } });
    /** Retry-After of busy's next submit, and the claims it really takes until 11 of busy's runs have started. */
    const check = async (policy: FairSharePolicy) => {
      await tenantsRuns(policy);
      const refused = await submitJob(env.pool, { kind: 'noop', tenantId: 'busy', payload: {} }, { queue: { ...limits, fairShare: policy } }).catch((error: unknown) => error);
      expect(refused).toBeInstanceOf(QueueLimitError);
      let claims = 0;
      for (let started = 0; started < 11; claims += 1) {
        const [job] = await claimJobs(env.pool, { workerId: 'counter', limit: 1, leaseMs: 60_000, kinds: ['noop'] });
        if (job!.tenantId === 'busy') started += 1;
      }
      return { retryAfter: (refused as QueueLimitError).breach.retryAfterSeconds, claims };
    };
    // At 1 run/s, Retry-After is the claims until then. Fair share: the others take their turns meanwhile (the whole
    // rate said 11 s); weight 2: busy gets two turns for their one; plain order: busy submitted first.
    for (const policy of [EQUAL_SHARES, { enabled: true, tenantWeights: { busy: 2 } }, PLAIN_ORDER]) {
      const { retryAfter, claims } = await check(policy);
      expect(retryAfter, JSON.stringify(policy)).toBe(claims);
    }
    expect((await check(EQUAL_SHARES)).claims).toBeGreaterThan(30);
    expect((await check(PLAIN_ORDER)).claims).toBe(11);
  });

  it('the API answers 429 with Retry-After and shows the estimate; the CLI exits 75 naming the limit', async () => {
    const error = new QueueLimitError({
      scope: 'tenant', measure: 'runs', kind: 'noop', tenantId: 'x', max: 1, current: 1, setting: 'ADMISSION_TENANT_QUEUED_RUNS', retryAfterSeconds: 42,
    });
    const described = describeError(error);
    expect(described.status).toBe(429);
    expect(described.headers['retry-after']).toBe('42');
    expect(described.body.error.code).toBe('QUEUE_LIMIT');

    await env.pool.query('DELETE FROM jobs');
    const api = await startTestApi(env, {}, { ADMISSION_TENANT_QUEUED_RUNS: '1' });
    try {
      const key = await makeKey(env, 'admission-ops', 'operator');
      const first = await call(api, 'POST', '/v1/jobs', { key, body: { kind: 'noop', tenant: 'http', dedupeKey: null, sizeBytes: 10 } });
      expect(first.status).toBe(201);
      expect(first.body.job.estimate).toMatchObject({ ahead: 0, basis: expect.any(String) });
      const detail = await call(api, 'GET', `/v1/jobs/${first.body.job.id}`, { key });
      expect(detail.body.estimate).toMatchObject({ ahead: 0 });
      const refusedHttp = await call(api, 'POST', '/v1/jobs', { key, body: { kind: 'noop', tenant: 'http', dedupeKey: null } });
      expect(refusedHttp.status).toBe(429);
      expect(Number(refusedHttp.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(refusedHttp.body.error).toMatchObject({ code: 'QUEUE_LIMIT', message: expect.stringMatching(/limit 1 queued run/) });
      expect(await queued('http')).toBe(1);
    } finally {
      await api.close();
    }

    const limit = { ADMISSION_TENANT_QUEUED_RUNS: '1' };
    expect((await runCli(env, ['enqueue', 'noop', '--tenant', 'cli', '--no-dedupe'], limit)).code).toBe(0);
    const refused = await runCli(env, ['enqueue', 'noop', '--tenant', 'cli', '--no-dedupe'], limit);
    expect(refused.code).toBe(EXIT_QUEUE_LIMIT);
    expect(refused.stderr).toMatch(/queue limit reached for noop runs of tenant cli: 1 queued run, limit 1 queued run \(ADMISSION_TENANT_QUEUED_RUNS\).*retry in \d+ s/);
    expect(await queued('cli')).toBe(1);
  });

  it('50 processes submitting at once never overshoot: tenant and total limits hold exactly', async () => {
    await env.pool.query('DELETE FROM jobs');
    // Another tenant's backlog counts toward the total limit.
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 10 }, () => ({})), { tenantId: 'bystander' });
    const channel = `admission_go_${Date.now()}`;
    const limits = { ADMISSION_TENANT_QUEUED_RUNS: '25', ADMISSION_TOTAL_QUEUED_RUNS: '55' };
    // 40 processes for tenant "race" (2 runs each: 80 asked, 25 fit) and 10 for 10 other tenants (3 each).
    const specs = Array.from({ length: 50 }, (_, i) => (i < 40 ? { tenant: 'race', count: 2 } : { tenant: `solo${i}`, count: 3 }));
    const processes = specs.map(({ tenant, count }) => {
      const child = spawn(process.execPath, [SUBMITTER, channel, tenant, String(count)], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env.processEnv, ...limits },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const lines = createInterface({ input: child.stdout! });
      const ready = new Promise<void>((resolve) => lines.on('line', (line) => line === 'ready' && resolve()));
      const result = new Promise<{ admitted: number; refused: string[] }>((resolve, reject) => {
        lines.on('line', (line) => line.startsWith('{') && resolve(JSON.parse(line)));
        child.on('exit', (code) => code !== 0 && reject(new Error(`submitter exited ${code}`)));
      });
      return { ready, result };
    });
    await Promise.all(processes.map((p) => p.ready));
    await env.pool.query(`NOTIFY ${channel}`);
    const results = await Promise.all(processes.map((p) => p.result));
    const admitted = results.reduce((sum, r) => sum + r.admitted, 0);
    expect(new Set(results.flatMap((r) => r.refused))).toEqual(new Set(['QUEUE_LIMIT']));
    expect(await queued('race')).toBe(results.slice(0, 40).reduce((sum, r) => sum + r.admitted, 0));
    expect(await queued('race')).toBeLessThanOrEqual(25);
    const { rows } = await env.pool.query(`SELECT count(*)::int AS n FROM jobs WHERE state = 'queued'`);
    expect(rows[0].n).toBe(55);
    expect(admitted).toBe(45);
  }, 180_000);
});
