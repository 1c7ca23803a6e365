// Bounds on what is stored, logged and accepted: a failure caused by a huge input (a CSV header of 100,000 columns, a
// handler error with a megabyte message and context) is stored in last_error and logged cut short, with a note
// saying so; a payload over 256 KiB, an over-long source, tenant or dedupe key, and numbers outside their range are
// refused at enqueue — by the API and by the real CLI — with a message naming the field, before any SQL.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { ENQUEUE_LIMITS, enqueueJob, enqueueJobs } from '../worker/queue/enqueue.js';
import { requireJob } from '../worker/queue/operator.js';
import type { JobRow } from '../worker/queue/types.js';
import { upload } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { runCli } from './support/cli-runner.js';
import { waitFor } from './support/in-process-worker.js';
import { killAll, spawnWorker, type WorkerProcess } from './support/worker-processes.js';

const env = useTestEnvironment();
const spawned: WorkerProcess[] = [];
afterAll(async () => killAll(spawned));

async function jobCount(): Promise<number> {
  const { rows } = await env.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM jobs');
  return rows[0]!.n;
}

async function finished(id: number): Promise<JobRow> {
  return waitFor(async () => {
    const job = await requireJob(env.pool, id);
    return job.state === 'queued' || job.state === 'running' ? undefined : job;
  }, 60_000);
}

const KB = 1024;

describe('failures of huge inputs are stored and logged bounded', () => {
  let worker: WorkerProcess;
  beforeAll(async () => {
    worker = spawnWorker(env, { entry: 'test', env: { WORKER_POLL_INTERVAL_MS: '100' } });
    spawned.push(worker);
    await worker.waitForLog((line) => line.msg === 'worker started');
  });

  it('a CSV header of 100,000 columns, a megabyte JobError and a megabyte plain Error', async () => {
    const header = Array.from({ length: 100_000 }, (_, index) => `c${index}`).join(','); // 588,890 characters
    await upload(env.s3, env.bucket, 'imports/acme/wide.csv', `${header}\n1,2,3\n`);
    const csv = (await submitJob(env.pool, { kind: 'csv-import', tenantId: 'acme', payload: { bucket: env.bucket, key: 'imports/acme/wide.csv', profile: 'products' } })).job;
    const jobError = (await enqueueJob(env.pool, { kind: 'fail-huge', payload: { chars: 2_000_000 } })).job;
    const plain = (await enqueueJob(env.pool, { kind: 'fail-huge', payload: { chars: 2_000_000, plain: true }, maxAttempts: 1 })).job;

    const csvRun = await finished(csv.id);
    expect(csvRun.state).toBe('failed');
    expect(csvRun.lastError).toMatchObject({ code: 'CSV_HEADER_INVALID' });
    // The message names the first unknown columns and counts the rest; the context keeps the first names and the count.
    expect(csvRun.lastError!.message).toContain('unknown column(s): "c0", "c1", "c2"');
    expect(csvRun.lastError!.message).toContain('and 99980 more');
    expect(csvRun.lastError!.context).toMatchObject({ unknownCount: 100_000, key: 'imports/acme/wide.csv' });
    expect(JSON.stringify(csvRun.lastError).length).toBeLessThan(16 * KB);

    const jobErrorRun = await finished(jobError.id);
    expect(jobErrorRun.state).toBe('failed');
    const record = jobErrorRun.lastError!;
    expect(record.message).toMatch(/^huge failure: m+… \[truncated: \d+ of 2000014 characters cut\]$/);
    expect(record.message.length).toBeLessThan(4_200);
    // Small values stay as they are; the long list and the long string are cut in place, each with a note.
    expect(record.context!.key).toBe('imports/acme/big.csv');
    expect(record.context!.names).toHaveLength(21);
    expect((record.context!.names as string[])[20]).toBe('… [truncated: 99980 more of 100000 items]');
    expect(record.context!.blob).toMatch(/^b+… \[truncated: \d+ of 2000000 characters cut\]$/);
    expect(JSON.stringify(record).length).toBeLessThan(16 * KB);

    const plainRun = await finished(plain.id);
    expect(plainRun.state).toBe('dead');
    expect(plainRun.lastError!.message).toContain('[truncated:');
    expect(plainRun.lastError!.stack!.length).toBeLessThan(4_200);
    expect(JSON.stringify(plainRun.lastError).length).toBeLessThan(16 * KB);

    // The worker's log line about each failure is bounded too (err, its stack and the context).
    for (const job of [csv, jobError, plain]) {
      const line = await worker.waitForLog((entry) => entry.job_id === job.id && /^job (failed|dead)$/.test(entry.msg));
      expect(JSON.stringify(line).length, `log line of job ${job.id}`).toBeLessThan(64 * KB);
      if (job !== csv) expect(JSON.stringify(line)).toContain('[truncated:');
    }

    // And so are the listings.
    const listed = await runCli(env, ['jobs', '--json', '--limit', '5']);
    expect(listed.code).toBe(0);
    expect(listed.stdout.length).toBeLessThan(64 * KB);
    expect(JSON.parse(listed.stdout)).toHaveLength(3);
  });
});

describe('enqueue refuses what it cannot or should not store, before any SQL', () => {
  it('a payload over 256 KiB of JSON: submitJob, enqueueJob and enqueueJobs', async () => {
    const before = await jobCount();
    const huge = { seq: 'x'.repeat(50 * 1024 * 1024) };
    await expect(submitJob(env.pool, { kind: 'noop', payload: huge })).rejects.toMatchObject({
      code: 'PAYLOAD_TOO_LARGE',
      message: expect.stringContaining(`the payload is ${50 * 1024 * 1024 + 10} bytes of JSON, at most 262144 (256 KiB) allowed`),
    });
    await expect(enqueueJob(env.pool, { kind: 'noop', payload: huge })).rejects.toMatchObject({ code: 'PAYLOAD_TOO_LARGE' });
    await expect(enqueueJobs(env.pool, 'noop', [{}, { seq: 'y'.repeat(ENQUEUE_LIMITS.payloadBytes) }])).rejects.toMatchObject({
      code: 'PAYLOAD_TOO_LARGE',
    });
    // Just under the limit is fine.
    const fits = await submitJob(env.pool, { kind: 'noop', payload: { seq: 'z'.repeat(ENQUEUE_LIMITS.payloadBytes - 20) } });
    expect(fits.job.payload.seq).toHaveLength(ENQUEUE_LIMITS.payloadBytes - 20);
    expect(await jobCount()).toBe(before + 1);
  });

  it('over-long text fields, NUL characters, and numbers outside their range', async () => {
    const before = await jobCount();
    // A mass-import source that no object key could hold (once Postgres' "index row requires … bytes").
    const source = randomBytes(50_000).toString('hex');
    await expect(submitJob(env.pool, { kind: 'mass-import', tenantId: 'acme', payload: { source } })).rejects.toMatchObject({
      code: 'INVALID_PAYLOAD',
      message: expect.stringMatching(/"source" must be a string of at most 1024 bytes \(UTF-8\), not 100000, got "[0-9a-f]{199}… \[truncated/),
    });
    await expect(submitJob(env.pool, { kind: 'mass-import', tenantId: 'acme', payload: { prefix: `p${'/p'.repeat(200)}` } })).rejects.toMatchObject({
      code: 'INVALID_PAYLOAD',
    });
    const cases: Array<[Parameters<typeof enqueueJob>[1], RegExp]> = [
      [{ kind: 'noop', tenantId: 't'.repeat(129) }, /tenant is 129 characters long, at most 128 allowed/],
      [{ kind: 'noop', dedupeKey: 'k'.repeat(2049) }, /dedupe key is 2049 bytes long, at most 2048 allowed/],
      [{ kind: 'noop', dedupeKey: 'é'.repeat(1025) }, /dedupe key is 2050 bytes long/],
      [{ kind: 'noop', tenantId: 'a\u0000b' }, /tenant holds a NUL character/],
      [{ kind: 'noop', payload: { seq: 'a\u0000b' } }, /payload holds a NUL character/],
      [{ kind: 'noop', priority: 2_147_483_648 }, /priority must be a whole number from -2147483648 to 2147483647, got 2147483648/],
      [{ kind: 'noop', priority: -2_147_483_649 }, /priority must be a whole number/],
      [{ kind: 'noop', priority: 1.5 }, /priority must be a whole number/],
      [{ kind: 'noop', maxAttempts: 0 }, /max attempts must be a whole number from 1 to 100, got 0/],
      [{ kind: 'noop', maxAttempts: 101 }, /max attempts must be a whole number from 1 to 100/],
      [{ kind: 'noop', runAt: new Date(Number.NaN) }, /runAt must be a valid date/],
      [{ kind: 'noop', runAt: new Date(-8.64e15) }, /runAt must be a valid date from 1970 to 9999/],
      [{ kind: 'noop', runAt: new Date(8.64e15) }, /runAt must be a valid date from 1970 to 9999/],
      [{ kind: 'No Such Kind!' }, /kind must be 1-64 lowercase letters/],
    ];
    for (const [request, message] of cases) {
      await expect(enqueueJob(env.pool, request), message.source).rejects.toMatchObject({ code: 'INVALID_ENQUEUE', message: expect.stringMatching(message) });
    }
    await expect(submitJob(env.pool, { kind: 'noop', priority: 99_999_999_999 })).rejects.toMatchObject({ code: 'INVALID_ENQUEUE' });
    expect(await jobCount()).toBe(before);
    // The edges themselves are accepted.
    const edge = await enqueueJob(env.pool, { kind: 'noop', priority: -2_147_483_648, maxAttempts: 100, tenantId: 't'.repeat(128), dedupeKey: 'k'.repeat(2048) });
    expect(edge.job).toMatchObject({ priority: -2_147_483_648, maxAttempts: 100 });
  });

  it("a tenant id with a control character or a noncharacter, which the run's outcome notification could never carry", async () => {
    const before = await jobCount();
    // SNS refuses such characters in a message attribute (the tenant is one) on every try of the message.
    for (const tenantId of ['bad\u0001tenant', 'tab\tbed', 'two\nlines', 'del\u007f', 'c1\u0085', 'nonchar\uffff']) {
      await expect(submitJob(env.pool, { kind: 'noop', tenantId }), JSON.stringify(tenantId)).rejects.toMatchObject({
        code: 'INVALID_ENQUEUE',
        message: expect.stringMatching(/^cannot enqueue: tenant holds U\+[0-9A-F]{4}, a control character or a noncharacter/),
        context: { field: 'tenant' },
      });
    }
    await expect(enqueueJobs(env.pool, 'noop', [{}], { tenantId: 'esc\u001b[31m' })).rejects.toMatchObject({
      code: 'INVALID_ENQUEUE',
      message: expect.stringContaining('tenant holds U+001B'),
    });
    const cli = await runCli(env, ['enqueue', 'noop', '--tenant', 'bad\u0001tenant']);
    expect({ code: cli.code, stderr: cli.stderr }).toMatchObject({ code: 1, stderr: expect.stringMatching(/cannot enqueue: tenant holds U\+0001/) });
    expect(await jobCount()).toBe(before);
    // Letters of any script, spaces and symbols are fine.
    const { job } = await enqueueJob(env.pool, { kind: 'noop', tenantId: 'Zürich 東京 ✓' });
    expect(job.tenantId).toBe('Zürich 東京 ✓');
  });

  it('the CLI checks every numeric option, text length and duration before SQL sees it', async () => {
    const before = await jobCount();
    const refused: Array<[string[], RegExp]> = [
      [['enqueue', 'noop', '--priority', '99999999999'], /option '--priority <n>' argument '99999999999' is invalid\. expected a whole number from -2,147,483,648 to 2,147,483,647/],
      [['enqueue', 'noop', '--max-attempts', '101'], /'--max-attempts <n>' argument '101' is invalid\. expected a whole number from 1 to 100/],
      [['enqueue', 'noop', '--tenant', 't'.repeat(200)], /cannot enqueue: tenant is 200 characters long, at most 128 allowed/],
      [['enqueue', 'noop', '--dedupe-key', 'k'.repeat(3000)], /cannot enqueue: dedupe key is 3000 bytes long, at most 2048 allowed/],
      [['jobs', '--limit', '99999999999'], /'--limit <n>' argument '99999999999' is invalid\. expected a whole number from 1 to 10,000/],
      [['jobs', '--since', '99999999999d'], /expected a duration of at most 36500d/],
      [['dead', 'list', '--limit', '0'], /expected a whole number from 1 to 10,000/],
      [['audit', '--limit', '10001'], /expected a whole number from 1 to 10,000/],
      [['show', '1', '--errors', '20000'], /expected a whole number from 1 to 10,000/],
      [['worker', '--concurrency', '5000'], /'--concurrency <n>' argument '5000' is invalid\. expected a whole number from 1 to 1,000/],
      [['watch', '--interval', '99999999999'], /expected a whole number from 100 to 3,600,000/],
      [['migrate', '--count', '0'], /expected a whole number from 1 to 10,000/],
      [['migrate', '--lock-timeout-ms', '10'], /'--lock-timeout-ms <ms>' argument '10' is invalid\. expected a whole number from 100 to 600,000/],
      [['migrate', '--lock-attempts', '0'], /expected a whole number from 1 to 1,000/],
    ];
    for (const [args, message] of refused) {
      const result = await runCli(env, args);
      expect(result.code, args.join(' ')).toBe(1);
      expect(result.stderr, args.join(' ')).toMatch(message);
      expect(result.stderr, args.join(' ')).not.toMatch(/out of range|index row|invalid input syntax/);
    }
    expect(await jobCount()).toBe(before);
    const ok = await runCli(env, ['enqueue', 'noop', '--priority', '-2147483648', '--max-attempts', '100', '--json']);
    expect(ok.code, ok.stderr).toBe(0);
  });
});
