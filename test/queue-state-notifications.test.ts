import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type pg from 'pg';
import { claimJobs } from '../worker/queue/claim.js';
import { JOB_STATE_CHANNEL, JOB_STATE_PAYLOAD_LIMIT } from '../worker/queue/channels.js';
import { enqueueJob } from '../worker/queue/enqueue.js';
import { completeJobs, failJob } from '../worker/queue/finish.js';
import { extendLeases, saveProgress } from '../worker/queue/lease.js';
import { cancelJob } from '../worker/queue/operator.js';
import { createPool } from '../worker/db/pool.js';
import { stateNotificationOption } from '../worker/runner/worker.js';
import { useTestEnvironment } from './harness.js';
import { waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();

interface Transition {
  id: number;
  kind: string;
  tenant: string | null;
  from: string | null;
  to: string;
  attempt: number;
  progress?: { done?: number; total?: number; phase?: string } | null;
}

interface TransitionGroup {
  kind: string;
  tenant: string | null;
  from: string | null;
  to: string;
  progress: Transition['progress'];
  ids: number[];
  attempts: number[];
}

let listener: pg.PoolClient;
let payloads: string[] = [];
/** The transitions the notifications carry, one per job (groups expanded). */
const transitions = (): Transition[] =>
  payloads
    .flatMap((payload) => JSON.parse(payload) as TransitionGroup[])
    .flatMap((group) =>
      group.ids.map((id, index) => ({
        id,
        kind: group.kind,
        tenant: group.tenant,
        from: group.from,
        to: group.to,
        attempt: group.attempts[index]!,
        progress: group.progress,
      })),
    );

beforeEach(async () => {
  payloads = [];
  listener = await env.pool.connect();
  listener.on('notification', (message) => {
    if (message.channel === JOB_STATE_CHANNEL) payloads.push(message.payload ?? '');
  });
  await listener.query(`LISTEN ${JOB_STATE_CHANNEL}`);
});
afterEach(async () => {
  await listener.query('UNLISTEN *');
  listener.removeAllListeners('notification');
  listener.release();
});

describe('state notifications', () => {
  it('publishes every transition of a run with kind, tenant, old and new state and a progress summary', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'notify-me', tenantId: 'acme' });
    const [claimed] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['notify-me'] });
    const lease = { jobId: job.id, owner: 'w', attempt: claimed!.attempt };
    // Heartbeats and progress writes are not transitions.
    await extendLeases(env.pool, 'w', [lease], 10_000);
    await saveProgress(env.pool, lease, { done: 3, total: 10, phase: 'import', big: 'x'.repeat(20_000) });
    const error = { message: 'later', code: 'X', class: 'transient' as const, attempt: 1, at: new Date().toISOString() };
    await failJob(env.pool, { lease, error, retryDelayMs: 0 });
    const [again] = await claimJobs(env.pool, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['notify-me'] });
    await completeJobs(env.pool, 'w', [{ jobId: job.id, attempt: again!.attempt, state: 'succeeded', progress: { done: 10, total: 10 } }]);

    await waitFor(async () => transitions().length >= 5);
    expect(transitions()).toEqual([
      { id: job.id, kind: 'notify-me', tenant: 'acme', from: null, to: 'queued', attempt: 0, progress: null },
      { id: job.id, kind: 'notify-me', tenant: 'acme', from: 'queued', to: 'running', attempt: 1, progress: null },
      { id: job.id, kind: 'notify-me', tenant: 'acme', from: 'running', to: 'queued', attempt: 1, progress: { done: 3, total: 10, phase: 'import' } },
      { id: job.id, kind: 'notify-me', tenant: 'acme', from: 'queued', to: 'running', attempt: 2, progress: { done: 3, total: 10, phase: 'import' } },
      { id: job.id, kind: 'notify-me', tenant: 'acme', from: 'running', to: 'succeeded', attempt: 2, progress: { done: 10, total: 10 } },
    ]);
  });

  /**
   * Rows written in one statement straight into the table: the trigger must keep its payloads bounded for any writer,
   * including tenants longer than enqueue accepts (128 characters), so these go in without enqueue's checks.
   */
  async function insertRows(kind: string, count: number, tenant: string): Promise<number[]> {
    const { rows } = await env.pool.query<{ id: number }>(
      `INSERT INTO jobs (kind, payload, tenant_id) SELECT $1, jsonb_build_object('i', g), $3 FROM generate_series(1, $2::int) AS g
       RETURNING id`,
      [kind, count, tenant],
    );
    return rows.map((row) => row.id).sort((a, b) => a - b);
  }

  it('packs the transitions of one large statement into notifications under the payload limit, losing none', async () => {
    const tenant = 'tenant-with-a-long-name-'.repeat(8);
    const ids = await insertRows('bulk-notify', 400, tenant);
    await waitFor(async () => transitions().filter((t) => t.to === 'queued').length === 400);
    const claimed = await claimJobs(env.pool, { workerId: 'w', limit: 400, leaseMs: 10_000, kinds: ['bulk-notify'] });
    expect(claimed).toHaveLength(400);
    await waitFor(async () => transitions().filter((t) => t.to === 'running').length === 400);
    // 400 inserts and 400 claims of one kind and tenant: a handful of grouped notifications, not 800 messages.
    expect(payloads.length).toBeGreaterThan(2);
    expect(payloads.length).toBeLessThan(12);
    for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(JOB_STATE_PAYLOAD_LIMIT);
    const running = transitions().filter((t) => t.to === 'running').map((t) => t.id);
    expect(running.sort((a, b) => a - b)).toEqual(ids);
  });

  it('keeps every payload under the limit with 16-digit ids, long multi-byte tenants and distinct progress', async () => {
    const tenant = 'ü'.repeat(300);
    await env.pool.query('ALTER TABLE jobs ALTER COLUMN id RESTART WITH 4000000000000000');
    const ids = await insertRows('limits', 600, tenant);
    await env.pool.query(`UPDATE jobs SET progress = jsonb_build_object('done', id % 7, 'total', 7, 'phase', repeat('p', 100))
                          WHERE id = ANY($1) AND id % 2 = 0`, [ids]);
    await claimJobs(env.pool, { workerId: 'w', limit: 600, leaseMs: 10_000, kinds: ['limits'] });
    await waitFor(async () => transitions().filter((t) => t.kind === 'limits' && t.to === 'running').length === 600);
    for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(JOB_STATE_PAYLOAD_LIMIT);
    const running = transitions().filter((t) => t.kind === 'limits' && t.to === 'running');
    expect(running[0]!.tenant).toBe('ü'.repeat(200));
    expect(running.find((t) => t.id % 2 === 0)!.progress).toMatchObject({ total: 7, phase: 'p'.repeat(40) });
  });

  it('keeps the largest possible group under the limit too: 16-digit ids, 10-digit attempts, escaped tenant and phase', async () => {
    // Everything at its widest: ids near the largest a JavaScript number holds exactly (what the driver reads ids as), attempts near the integer maximum, a 64-character kind,
    // and a tenant and a phase of control characters, which JSON writes as six bytes each; a full group (one progress
    // summary for 150 runs) followed by groups of one run each (a summary apiece) packed behind it.
    const kind = `w${'x'.repeat(63)}`;
    await env.pool.query('ALTER TABLE jobs ALTER COLUMN id RESTART WITH 9007199254000000');
    const ids = await insertRows(kind, 400, '\u0001'.repeat(300));
    await env.pool.query(
      `UPDATE jobs SET attempts = 2147483000, max_attempts = 2147483647,
         progress = jsonb_build_object('done', CASE WHEN id < $2 THEN 123456789012345 ELSE id END, 'total', 123456789012345,
                                       'phase', repeat(chr(1), 100))
       WHERE id = ANY($1)`,
      [ids, ids[150]],
    );
    await claimJobs(env.pool, { workerId: 'w', limit: 400, leaseMs: 10_000, kinds: [kind] });
    await waitFor(async () => transitions().filter((t) => t.kind === kind && t.to === 'running').length === 400);
    for (const payload of payloads) expect(Buffer.byteLength(payload)).toBeLessThan(JOB_STATE_PAYLOAD_LIMIT);
    expect(transitions().find((t) => t.kind === kind)!.tenant).toBe('\u0001'.repeat(200));
  });

  it('publishes nothing from a session that turned notifications off (JOB_STATE_NOTIFICATIONS=off)', async () => {
    const quiet = createPool(env.databaseUrl, { max: 1, sessionOptions: stateNotificationOption(false) });
    try {
      const { job } = await enqueueJob(quiet, { kind: 'quiet' });
      await claimJobs(quiet, { workerId: 'w', limit: 1, leaseMs: 10_000, kinds: ['quiet'] });
      const { job: loud } = await enqueueJob(env.pool, { kind: 'loud' });
      await waitFor(async () => transitions().some((t) => t.id === loud.id));
      expect(transitions().filter((t) => t.id === job.id)).toEqual([]);
    } finally {
      await quiet.end();
    }
  });

  it('publishes operator transitions too (cancel of a queued run)', async () => {
    const { job } = await enqueueJob(env.pool, { kind: 'notify-cancel' });
    await cancelJob(env.pool, job.id);
    await waitFor(async () => transitions().some((t) => t.to === 'canceled'));
    expect(transitions().map((t) => [t.from, t.to])).toEqual([
      [null, 'queued'],
      ['queued', 'canceled'],
    ]);
  });

  it('joins old and new rows by hash in every session, even after a one-row update planned the join', async () => {
    // PL/pgSQL plans the triggers' join of the transition tables once per session, for the row counts of the first
    // statement: after a one-row update it joined a later statement's rows by a nested loop, quadratic in their number.
    // auto_explain shows the plans of the triggers' own statements to this session (LOG as a notice).
    const ids = await Promise.all(Array.from({ length: 300 }, () => enqueueJob(env.pool, { kind: 'hashed' }).then(({ job }) => job.id)));
    const client = await env.pool.connect();
    const plans: string[] = [];
    const onNotice = (notice: { message?: string }) => plans.push(notice.message ?? '');
    try {
      client.on('notice', onNotice);
      await client.query("LOAD 'auto_explain'");
      await client.query('SET auto_explain.log_min_duration = 0; SET auto_explain.log_nested_statements = on; SET client_min_messages = log');
      await client.query("SELECT set_config('bulk_import.state_notifications', 'on', false)");
      await client.query("UPDATE jobs SET state = 'canceled', finished_at = now() WHERE id = $1", [ids[0]]);
      plans.length = 0;
      await client.query("UPDATE jobs SET state = 'canceled', finished_at = now() WHERE id = ANY($1)", [ids.slice(1)]);
      const join = plans.filter((plan) => plan.includes('updated_jobs') && plan.includes('previous_jobs'));
      expect(join.length).toBeGreaterThan(0);
      for (const plan of join) {
        expect(plan).toContain('Hash Join');
        expect(plan).not.toContain('Nested Loop');
      }
    } finally {
      client.off('notice', onNotice);
      await client.query('RESET client_min_messages; RESET auto_explain.log_min_duration').catch(() => {});
      client.release(true);
    }
  });

  it('summarizes progress inline in the trigger query, not through a SQL-function call per transition', async () => {
    // An IMMUTABLE SQL function around the STABLE jsonb_build_object is never inlined: the trigger then paid a
    // function call per row, a quarter of a no-op job's database time. Inlined, the plan shows the body, not the call.
    const { rows } = await env.pool.query<{ 'QUERY PLAN': string }>(
      'EXPLAIN (VERBOSE, COSTS OFF) SELECT bulk_import_progress_summary(progress) FROM jobs',
    );
    const plan = rows.map((row) => row['QUERY PLAN']).join('\n');
    expect(plan).toContain('jsonb_build_object');
    expect(plan).not.toContain('bulk_import_progress_summary');
  });
});
