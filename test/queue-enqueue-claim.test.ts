import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJob, enqueueJobs } from '../worker/queue/enqueue.js';
import { completeJobs } from '../worker/queue/finish.js';
import { PermanentJobError } from '../worker/queue/errors.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();

describe('enqueue with an idempotency key', () => {
  it('returns the active run for the same key, and a new run once the first has ended', async () => {
    const first = await enqueueJob(env.pool, { kind: 'noop', dedupeKey: 'tenant-a:noop:x', payload: { n: 1 } });
    const again = await enqueueJob(env.pool, { kind: 'noop', dedupeKey: 'tenant-a:noop:x', payload: { n: 2 } });
    expect(first.reused).toBe(false);
    expect(again.reused).toBe(true);
    expect(again.job.id).toBe(first.job.id);
    expect(again.job.payload).toEqual({ n: 1 });

    const [claimed] = await claimJobs(env.pool, { workerId: 'w1', limit: 1, leaseMs: 10_000, kinds: ['noop'] });
    expect(claimed!.id).toBe(first.job.id);
    const whileRunning = await enqueueJob(env.pool, { kind: 'noop', dedupeKey: 'tenant-a:noop:x' });
    expect(whileRunning).toMatchObject({ reused: true, job: { id: first.job.id, state: 'running' } });

    await completeJobs(env.pool, 'w1', [{ jobId: claimed!.id, attempt: 1, state: 'succeeded' }]);
    const afterEnd = await enqueueJob(env.pool, { kind: 'noop', dedupeKey: 'tenant-a:noop:x' });
    expect(afterEnd.reused).toBe(false);
    expect(afterEnd.job.id).not.toBe(first.job.id);
  });

  it('creates exactly one run when many enqueue the same key at once', async () => {
    const results = await Promise.all(
      Array.from({ length: 20 }, () => enqueueJob(env.pool, { kind: 'noop', dedupeKey: 'race-key' })),
    );
    const ids = new Set(results.map((result) => result.job.id));
    expect(ids.size).toBe(1);
    expect(results.filter((result) => !result.reused)).toHaveLength(1);
    const { rows } = await env.pool.query("SELECT count(*)::int AS n FROM jobs WHERE dedupe_key = 'race-key'");
    expect(rows[0].n).toBe(1);
  });

  it("scopes a key to its tenant: each tenant, and runs without one, hold the same key apart, even racing", async () => {
    const submit = (tenantId: string | null, n: number) => enqueueJob(env.pool, { kind: 'noop', tenantId, dedupeKey: 'shared-key', payload: { n } });
    const results = await Promise.all([
      ...Array.from({ length: 10 }, (_, n) => submit('tenant-a', n)),
      ...Array.from({ length: 10 }, (_, n) => submit('tenant-b', n)),
      ...Array.from({ length: 10 }, (_, n) => submit(null, n)),
    ]);
    const byTenant = new Map<string | null, Set<number>>();
    for (const { job } of results) byTenant.set(job.tenantId, (byTenant.get(job.tenantId) ?? new Set()).add(job.id));
    expect([...byTenant.keys()].sort()).toEqual(['tenant-a', 'tenant-b', null].sort());
    for (const ids of byTenant.values()) expect(ids.size).toBe(1);
    expect(results.filter((result) => !result.reused)).toHaveLength(3);
    // submitJob (the admission path) looks the key up in the submitter's tenant too.
    const viaSubmit = await submitJob(env.pool, { kind: 'noop', tenantId: 'tenant-c', dedupeKey: 'shared-key' });
    expect(viaSubmit).toMatchObject({ reused: false, job: { tenantId: 'tenant-c' } });
    const reusedViaSubmit = await submitJob(env.pool, { kind: 'noop', tenantId: 'tenant-b', dedupeKey: 'shared-key' });
    expect(reusedViaSubmit).toMatchObject({ reused: true, job: { id: [...byTenant.get('tenant-b')!][0] } });
  });

  it("takes a run's tenant from its payload when the request names none, so both ways of naming it share one scope", async () => {
    const payload = { bucket: 'import-bucket', key: 'imports/acme/same.csv', profile: 'products' };
    const viaRequest = await submitJob(env.pool, { kind: 'csv-import', tenantId: 'acme', payload, runAt: new Date(Date.now() + 3_600_000) });
    const viaPayload = await submitJob(env.pool, { kind: 'csv-import', payload: { ...payload, tenant: 'acme' }, runAt: new Date(Date.now() + 3_600_000) });
    expect(viaPayload).toMatchObject({ reused: true, job: { id: viaRequest.job.id, tenantId: 'acme' } });
    await expect(submitJob(env.pool, { kind: 'csv-import', tenantId: 'other', payload: { ...payload, tenant: 'acme' } })).rejects.toMatchObject({
      code: 'TENANT_MISMATCH',
      context: { field: 'payload.tenant' },
    });
  });

  it('validates the payload with the handler before writing anything', async () => {
    const before = await env.pool.query('SELECT count(*)::int AS n FROM jobs');
    await expect(submitJob(env.pool, { kind: 'noop', payload: { sleepMs: -5 } })).rejects.toThrow(
      /invalid noop payload: "sleepMs" must be a whole number from 0 to 3600000/,
    );
    await expect(submitJob(env.pool, { kind: 'no-such-kind' })).rejects.toBeInstanceOf(PermanentJobError);
    const after = await env.pool.query('SELECT count(*)::int AS n FROM jobs');
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('wakes listeners with NOTIFY when a due job is enqueued', async () => {
    const listener = await env.pool.connect();
    try {
      const received: string[] = [];
      listener.on('notification', (message) => received.push(`${message.channel}:${message.payload}`));
      await listener.query('LISTEN bulk_import_jobs_ready');
      await enqueueJob(env.pool, { kind: 'noop' });
      await enqueueJob(env.pool, { kind: 'noop', runAt: new Date(Date.now() + 3_600_000) });
      // A due job of another kind last: notifications arrive in commit order, so once its own has come, the job for
      // later would have been heard before it, had it sent one.
      await enqueueJob(env.pool, { kind: 'noop-marker' });
      await waitFor(async () => received.includes('bulk_import_jobs_ready:noop-marker'));
      expect(received).toEqual(['bulk_import_jobs_ready:noop', 'bulk_import_jobs_ready:noop-marker']);
      await env.pool.query("DELETE FROM jobs WHERE kind = 'noop-marker'");
      await listener.query('UNLISTEN *');
    } finally {
      listener.release();
    }
  });
});

describe('claim', () => {
  it('hands disjoint jobs to concurrent claimers, in priority order, skipping jobs not yet due', async () => {
    await env.pool.query('DELETE FROM jobs');
    const ids = await enqueueJobs(env.pool, 'claim-test', Array.from({ length: 40 }, (_, i) => ({ i })));
    await env.pool.query('UPDATE jobs SET priority = -1 WHERE id = $1', [ids[39]]);
    await env.pool.query("UPDATE jobs SET run_at = now() + interval '1 hour' WHERE id = $1", [ids[0]]);
    const claims = await Promise.all(
      Array.from({ length: 6 }, (_, w) => claimJobs(env.pool, { workerId: `w${w}`, limit: 10, leaseMs: 10_000, kinds: ['claim-test'] })),
    );
    const all = claims.flat().map((job) => job.id);
    expect(new Set(all).size).toBe(all.length);
    expect(all.length).toBe(39);
    expect(all).not.toContain(ids[0]);
    const { rows } = await env.pool.query(
      "SELECT count(*)::int AS n FROM jobs WHERE kind = 'claim-test' AND state = 'running' AND attempts = 1 AND lease_expires_at > now()",
    );
    expect(rows[0].n).toBe(39);
  });

  it('takes the lowest priority number first', async () => {
    await env.pool.query('DELETE FROM jobs');
    const [low, high] = await enqueueJobs(env.pool, 'prio', [{ a: 1 }, { a: 2 }]);
    await env.pool.query('UPDATE jobs SET priority = -5 WHERE id = $1', [high]);
    const [first] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 1000, kinds: ['prio'] });
    expect(first!.id).toBe(high);
    const [second] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 1000, kinds: ['prio'] });
    expect(second!.id).toBe(low);
  });

  it('never re-claims a job the worker still has a handler for', async () => {
    await env.pool.query('DELETE FROM jobs');
    const [unwinding, other] = await enqueueJobs(env.pool, 'exclude', [{}, {}]);
    const claimed = await claimJobs(env.pool, { workerId: 'w', limit: 10, leaseMs: 1000, kinds: ['exclude'], excludeIds: [unwinding!] });
    expect(claimed.map((job) => job.id)).toEqual([other]);
  });

  it('only claims the kinds asked for', async () => {
    await env.pool.query('DELETE FROM jobs');
    await enqueueJobs(env.pool, 'kind-a', [{}]);
    await enqueueJobs(env.pool, 'kind-b', [{}]);
    const claimed = await claimJobs(env.pool, { workerId: 'w', limit: 10, leaseMs: 1000, kinds: ['kind-b'] });
    expect(claimed.map((job) => job.kind)).toEqual(['kind-b']);
  });

  it('claims only the runs named, with or without kinds (bulk-import local runs its own run only)', async () => {
    await env.pool.query('DELETE FROM jobs');
    const [mine, other] = await enqueueJobs(env.pool, 'named', [{}, {}]);
    const [another] = await enqueueJobs(env.pool, 'named-too', [{}]);
    expect(await claimJobs(env.pool, { workerId: 'w', limit: 10, leaseMs: 1000, kinds: ['named', 'named-too'], onlyIds: [another!] })).toMatchObject([
      { id: another },
    ]);
    expect(await claimJobs(env.pool, { workerId: 'w', limit: 10, leaseMs: 1000, onlyIds: [mine!] })).toMatchObject([{ id: mine }]);
    expect(await claimJobs(env.pool, { workerId: 'w', limit: 10, leaseMs: 1000, onlyIds: [mine!, another!] })).toEqual([]);
    const { rows } = await env.pool.query<{ state: string }>('SELECT state FROM jobs WHERE id = $1', [other]);
    expect(rows[0]!.state).toBe('queued');
  });
});
