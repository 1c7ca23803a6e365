// Fair share between tenants: the claim order interleaves tenants within a priority (weighted), tenant ceilings hold
// across concurrent claimers, and a small tenant's runs start within a fixed bound under another tenant's flood.
import { describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { loadConfig } from '../worker/config.js';
import { noopHandler } from '../worker/handlers/noop.js';
import { claimJobs } from '../worker/queue/claim.js';
import { enqueueJob, enqueueJobs } from '../worker/queue/enqueue.js';
import { EQUAL_SHARES, PLAIN_ORDER } from '../worker/queue/fair-share.js';
import { useTestEnvironment } from './harness.js';
import { testWorker, waitFor } from './support/in-process-worker.js';

const claim = (env: ReturnType<typeof useTestEnvironment>, limit: number, extra: Partial<Parameters<typeof claimJobs>[1]> = {}) =>
  claimJobs(env.pool, { workerId: 'fair-test', limit, leaseMs: 60_000, kinds: ['noop'], ...extra });

/** Tenants in claim order: claims one at a time, so the order is the statement's, not the batch's id sort. */
async function claimOrder(env: ReturnType<typeof useTestEnvironment>, count: number): Promise<string[]> {
  const order: string[] = [];
  for (let i = 0; i < count; i += 1) order.push(...(await claim(env, 1)).map((job) => job.tenantId ?? '-'));
  return order;
}

describe('fair share between tenants', () => {
  const env = useTestEnvironment();

  it('a tenant that submits after a flood is claimed in turns with it, not after it; plain order keeps submit order', async () => {
    await env.pool.query('DELETE FROM jobs');
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 50 }, () => ({})), { tenantId: 'flood' });
    for (let i = 0; i < 3; i += 1) await enqueueJob(env.pool, { kind: 'noop', tenantId: 'small', payload: {} });
    expect(await claimOrder(env, 7)).toEqual(['flood', 'small', 'flood', 'small', 'flood', 'small', 'flood']);

    await env.pool.query('DELETE FROM jobs');
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 50 }, () => ({})), { tenantId: 'flood', fairShare: PLAIN_ORDER });
    for (let i = 0; i < 3; i += 1) await enqueueJob(env.pool, { kind: 'noop', tenantId: 'small', payload: {} }, 5, PLAIN_ORDER);
    expect(new Set(await claimOrder(env, 50))).toEqual(new Set(['flood']));
  });

  it('a tenant named like an Object.prototype member (constructor, toString) enqueues with its weight of 1', async () => {
    await env.pool.query('DELETE FROM jobs');
    for (const tenantId of ['constructor', 'toString', 'hasOwnProperty', 'valueOf']) {
      const { job } = await enqueueJob(env.pool, { kind: 'noop', tenantId, payload: {} }, undefined, EQUAL_SHARES);
      expect(job.tenantId).toBe(tenantId);
    }
    const { rows } = await env.pool.query<{ tenant_id: string; fair_tag: string }>('SELECT tenant_id, fair_tag FROM jobs ORDER BY id');
    expect(rows.every((row) => Number.isFinite(Number(row.fair_tag)))).toBe(true);
  });

  it.each([
    ['scheduled for later', false],
    ['due by now, not yet claimed', true],
  ])("a flow whose own last queued run is an old turn (%s) continues where the claims are, not before", async (_case, due) => {
    await env.pool.query('DELETE FROM jobs');
    // c's only queued run is old and scheduled for later: c's tail has the smallest tag.
    await enqueueJob(env.pool, { kind: 'noop', tenantId: 'c', payload: {}, runAt: new Date(Date.now() + 3_600_000) });
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 100 }, () => ({})), { tenantId: 'a' });
    await claim(env, 50);
    // Its time came while every slot was busy: due, and still the smallest queued tag.
    if (due) await env.pool.query("UPDATE jobs SET run_at = now() - interval '1 second' WHERE tenant_id = 'c'");
    // c submits 20 runs one by one while workers hold 50 of a's: they alternate with a's remaining 50.
    for (let i = 0; i < 20; i += 1) await enqueueJob(env.pool, { kind: 'noop', tenantId: 'c', payload: {} });
    const next = await claimOrder(env, 20);
    expect(next.filter((tenant) => tenant === 'c').length).toBeLessThanOrEqual(11);
    expect(next.join('')).not.toMatch(/ccc/);
  });

  it('a flow that joins while an old turn waits (a run scheduled for later) joins where the claims are, not before', async () => {
    await env.pool.query('DELETE FROM jobs');
    // An old run of tenant c, scheduled for later (as a run waiting out a retry backoff): the smallest queued tag.
    await enqueueJob(env.pool, { kind: 'noop', tenantId: 'c', payload: {}, runAt: new Date(Date.now() + 3_600_000) });
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 100 }, () => ({})), { tenantId: 'a' });
    await claim(env, 50);
    // b floods while workers hold 50 of a's runs: b's runs alternate with a's remaining 50, not all ahead of them.
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 100 }, () => ({})), { tenantId: 'b' });
    const next = await claimOrder(env, 20);
    expect(next.filter((tenant) => tenant === 'a').length).toBeGreaterThanOrEqual(9);
    expect(next.join('')).not.toMatch(/bbb/);
  });

  it("a tenant's submit behind another tenant's flood reads its own flow's tail, not the flood, even from a generic plan", async () => {
    // The enqueue is a named prepared statement, and after a few runs Postgres may switch it to a generic plan, which
    // cannot tell tenants apart: with two tenants it found the tail of a flow by walking the whole queue backwards.
    // The plan of the enqueue, as auto_explain reports it, forced generic as it would be after a few submits.
    await env.pool.query('DELETE FROM jobs');
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 5_000 }, () => ({})), { tenantId: 'flood' });
    await env.pool.query('ANALYZE jobs');
    const client = await env.pool.connect();
    const plans: unknown[] = [];
    const onNotice = (notice: { message?: string }) => {
      const at = notice.message?.indexOf('{') ?? -1;
      if (notice.message?.startsWith('duration') && at >= 0) plans.push(JSON.parse(notice.message.slice(at)));
    };
    try {
      client.on('notice', onNotice);
      await client.query(`LOAD 'auto_explain'`);
      await client.query(
        `SET plan_cache_mode = force_generic_plan; SET auto_explain.log_min_duration = 0; SET auto_explain.log_analyze = on;
         SET auto_explain.log_format = json; SET client_min_messages = log`,
      );
      await enqueueJob(client, { kind: 'noop', tenantId: 'small', payload: {} });
    } finally {
      client.off('notice', onNotice);
      await client.query('RESET ALL');
      client.release(true); // auto_explain stays loaded in the session: not back to the pool
    }
    // Every scan of the flow's tail (the subquery aliased `tail`), wherever it sits in the plan.
    const tails: Array<Record<string, unknown>> = [];
    const walk = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(walk);
      else if (node && typeof node === 'object') {
        const record = node as Record<string, unknown>;
        if (record.Alias === 'tail') tails.push(record);
        Object.values(record).forEach(walk);
      }
    };
    walk(plans);
    expect(tails.length).toBeGreaterThan(0);
    for (const tail of tails) {
      expect(tail['Index Name']).toMatch(/queued_by_kind_tenant$/);
      expect(tail['Rows Removed by Filter'] ?? 0).toBe(0);
    }
  });

  it('weights: a tenant of weight 3 gets three turns for one', async () => {
    await env.pool.query('DELETE FROM jobs');
    const weighted = { enabled: true, tenantWeights: { heavy: 3 } };
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 20 }, () => ({})), { tenantId: 'light', fairShare: weighted });
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 20 }, () => ({})), { tenantId: 'heavy', fairShare: weighted });
    const first = await claimOrder(env, 16);
    expect(first.filter((tenant) => tenant === 'heavy')).toHaveLength(12);
    expect(first.filter((tenant) => tenant === 'light')).toHaveLength(4);
  });

  it('priority still comes first, and a run not yet due is passed over', async () => {
    await env.pool.query('DELETE FROM jobs');
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 5 }, () => ({})), { tenantId: 'a', fairShare: EQUAL_SHARES });
    await enqueueJob(env.pool, { kind: 'noop', tenantId: 'b', payload: {}, runAt: new Date(Date.now() + 3_600_000) });
    await enqueueJob(env.pool, { kind: 'noop', tenantId: 'c', payload: {}, priority: -1 });
    expect(await claimOrder(env, 7)).toEqual(['c', 'a', 'a', 'a', 'a', 'a']);
  });

  it('TENANT_KIND_CONCURRENCY: concurrent claimers never lease a tenant more than its ceiling', async () => {
    await env.pool.query('DELETE FROM jobs');
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 30 }, () => ({})), { tenantId: 'x' });
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 30 }, () => ({})), { tenantId: 'y' });
    const ceiling = { tenantKindConcurrency: { noop: 3 } };
    const batches = await Promise.all(Array.from({ length: 6 }, (_, i) => claim(env, 10, { ...ceiling, workerId: `w${i}` })));
    const claimed = batches.flat();
    expect(claimed.filter((job) => job.tenantId === 'x')).toHaveLength(3);
    expect(claimed.filter((job) => job.tenantId === 'y')).toHaveLength(3);
    const { rows } = await env.pool.query(`SELECT tenant_id, count(*)::int AS n FROM jobs WHERE state = 'running' GROUP BY tenant_id ORDER BY tenant_id`);
    expect(rows).toEqual([{ tenant_id: 'x', n: 3 }, { tenant_id: 'y', n: 3 }]);
    // A finished run frees a place for that tenant only.
    await env.pool.query(`UPDATE jobs SET state = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, finished_at = now()
                          WHERE id = (SELECT min(id) FROM jobs WHERE state = 'running' AND tenant_id = 'x')`);
    expect((await claim(env, 10, ceiling)).map((job) => job.tenantId)).toEqual(['x']);
  });

  it('TENANT_KIND_CONCURRENCY: a tenant at its ceiling with a long backlog does not hide the runs behind it', async () => {
    await env.pool.query('DELETE FROM jobs');
    const ceiling = { tenantKindConcurrency: { noop: 2 } };
    // 300 runs of `flood`, then one of `late` and one without a tenant: in claim order both come after flood's
    // whole backlog (plain order), further than the claim's first read in claim order goes (100 runs for limit 1).
    await enqueueJobs(env.pool, 'noop', Array.from({ length: 300 }, () => ({})), { tenantId: 'flood', fairShare: PLAIN_ORDER });
    await enqueueJob(env.pool, { kind: 'noop', tenantId: 'late', payload: {} }, 5, PLAIN_ORDER);
    await enqueueJob(env.pool, { kind: 'noop', tenantId: null, payload: {} }, 5, PLAIN_ORDER);
    expect((await claim(env, 2, ceiling)).map((job) => job.tenantId)).toEqual(['flood', 'flood']);
    // flood is at its ceiling: one claim at a time, the read tenant by tenant finds the other two, in claim order.
    expect((await claim(env, 1, ceiling)).map((job) => job.tenantId)).toEqual(['late']);
    expect((await claim(env, 1, ceiling)).map((job) => job.tenantId)).toEqual([null]);
    expect(await claim(env, 5, ceiling)).toEqual([]);
    // A run of flood ends: its place goes to flood's next run, and flood stays at two.
    await env.pool.query(`UPDATE jobs SET state = 'succeeded', lease_owner = NULL, lease_expires_at = NULL, finished_at = now()
                          WHERE id = (SELECT min(id) FROM jobs WHERE state = 'running' AND tenant_id = 'flood')`);
    expect((await claim(env, 5, ceiling)).map((job) => job.tenantId)).toEqual(['flood']);
    const { rows } = await env.pool.query(`SELECT count(*)::int AS n FROM jobs WHERE state = 'running' AND tenant_id = 'flood'`);
    expect(rows[0].n).toBe(2);
  });

  it('under a 20,000-run flood of tenant A, tenant B’s 10 runs start within 2·(concurrency + prefetch) + 10 starts of A', async () => {
    await env.pool.query('DELETE FROM jobs');
    const concurrency = 8;
    const prefetchMax = 100;
    // Bulk insert, as a backend flooding the queue would: admission does not apply to enqueueJobs.
    for (let i = 0; i < 4; i += 1) await enqueueJobs(env.pool, 'noop', Array.from({ length: 5_000 }, () => ({})), { tenantId: 'A' });
    const starts: string[] = [];
    const worker = testWorker(env, [noopHandler], { concurrency, prefetchMax, prefetchWindowMs: 1_000, kinds: ['noop'] });
    worker.on('jobStarted', (job) => starts.push(job.tenantId ?? '-'));
    await worker.start();
    try {
      await waitFor(async () => starts.length >= 500, 60_000, 10);
      const firstSubmitAt = starts.length;
      const queue = loadConfig({}).queue;
      for (let i = 0; i < 10; i += 1) await submitJob(env.pool, { kind: 'noop', tenantId: 'B', payload: { seq: i } }, { queue });
      const lastSubmitAt = starts.length;
      await waitFor(async () => starts.filter((tenant) => tenant === 'B').length === 10, 60_000, 10);
      const lastB = starts.lastIndexOf('B');
      const aAfterSubmit = starts.slice(lastSubmitAt, lastB + 1).filter((tenant) => tenant === 'A').length;
      // The bound: what the workers already hold (running + prefetched) when B submits, one claim in flight, and
      // B's 10 turns interleaved with A's — not A's backlog (≈19,000 runs still queued).
      expect(aAfterSubmit).toBeLessThanOrEqual(2 * (concurrency + prefetchMax) + 10);
      // And most of A's backlog was still to come when B's last run started (counted from the starts, not read from
      // the table afterwards: the worker drains on while this test reads, faster than a loaded machine runs the test).
      expect(20_000 - starts.slice(0, lastB + 1).filter((tenant) => tenant === 'A').length).toBeGreaterThan(15_000);
      // A keeps at least its fair half of the starts while B has work (equal weights).
      const window = starts.slice(firstSubmitAt, lastB + 1);
      expect(window.filter((tenant) => tenant === 'A').length / window.length).toBeGreaterThanOrEqual(0.5);
    } finally {
      await worker.stop();
    }
  }, 120_000);
});
