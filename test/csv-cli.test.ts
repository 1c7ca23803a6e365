// The CSV review commands and the generic `errors` command, run as the real CLI against the test database, in both
// output modes: finalize, reject, errors (table, --json, paging, --csv to stdout and to a file, whole or not at all),
// for CSV imports and for another kind (mass-import items) through the same handler contract.
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { submitJob } from '../worker/api.js';
import { csvFinalizeHandler } from '../worker/handlers/csv-finalize.js';
import { csvValidateHandler } from '../worker/handlers/csv-validate.js';
import type { JobRow } from '../worker/queue/types.js';
import type { Worker } from '../worker/runner/worker.js';
import { csvLine, HEADER, rowFields, upload, validRow } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';
import { runCli, runCliJson, runCliOnTerminal, spawnCli } from './support/cli-runner.js';
import { settledJob, testWorker, waitFor } from './support/in-process-worker.js';

const env = useTestEnvironment();
let worker: Worker;

beforeAll(async () => {
  worker = testWorker(env, [csvValidateHandler, csvFinalizeHandler], { leaseMs: 30_000, heartbeatMs: 1_000 });
  await worker.start();
});
afterAll(async () => worker?.stop());

const settled = (jobId: number): Promise<JobRow> => settledJob(env.pool, jobId);

/** 20 rows, three of them bad (lines 4, 9 and 15). */
async function reviewedImport(name: string): Promise<number> {
  const lines = Array.from({ length: 20 }, (_, i) => {
    const row = { ...validRow(i + 1, name.toUpperCase()), description: `Item ${i + 1}` };
    if (i === 2) row.price = '-1';
    if (i === 7) row.status = 'gone';
    if (i === 13) row.name = '';
    return csvLine(rowFields(row));
  });
  await upload(env.s3, env.bucket, `imports/cli/${name}.csv`, csvLine(HEADER) + lines.join(''));
  const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: 'cli', payload: { bucket: env.bucket, key: `imports/cli/${name}.csv`, profile: 'products' } });
  expect((await settled(job.id)).state).toBe('review_ready');
  return job.id;
}

describe('bulk-import errors / finalize / reject', () => {
  let jobId: number;

  it('errors lists the failed rows with their reasons, as a table and as JSON, paged', async () => {
    jobId = await reviewedImport('first');
    const table = await runCli(env, ['errors', String(jobId)]);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(`Job ${jobId} (csv-import, review_ready): 3 failed item(s)/row(s)`);
    expect(table.stdout).toMatch(/ROW\s+ERRORS\s+VALUES/);
    expect(table.stdout).toMatch(/4\s+price must be at least 0, got "-1"\s+sku=FIRST-0000003/);
    expect(table.stdout).toMatch(/15\s+name is required/);

    const json = await runCliJson<{ total: number; rows: Array<{ row: number; issues: Array<{ column: string; rule: string }> }> }>(env, [
      'errors', String(jobId),
    ]);
    expect(json.total).toBe(3);
    expect(json.rows.map((row) => [row.row, row.issues.map((issue) => `${issue.column}/${issue.rule}`)])).toEqual([
      [4, ['price/range']],
      [9, ['status/enum']],
      [15, ['name/required']],
    ]);
    const page = await runCliJson<{ total: number; rows: Array<{ row: number }> }>(env, ['errors', String(jobId), '--limit', '1', '--offset', '1']);
    expect(page).toMatchObject({ total: 3, rows: [{ row: 9 }], nextOffset: 2 });
    expect(await runCliJson(env, ['errors', String(jobId), '--offset', '2'])).toMatchObject({ rows: [{ row: 15 }], nextOffset: null });
  });

  it('errors --csv writes the original columns plus the row number and the errors, to stdout or a file', async () => {
    const stdout = await runCli(env, ['errors', String(jobId), '--csv']);
    expect(stdout.code).toBe(0);
    const records = parse(stdout.stdout) as string[][];
    expect(records[0]).toEqual(['_row', '_errors', ...HEADER]);
    expect(records.slice(1).map((record) => [record[0], record[1], record[2]])).toEqual([
      ['4', 'price must be at least 0, got "-1"', 'FIRST-0000003'],
      ['9', 'status must be one of active, inactive, discontinued, got "gone"', 'FIRST-0000008'],
      ['15', 'name is required', 'FIRST-0000014'],
    ]);
    // "-1" starts with a formula character: the export writes it as text for spreadsheets ("'-1", formula-escape.ts).
    expect(records[1]!.slice(2)).toEqual(rowFields({ ...validRow(3, 'FIRST'), description: 'Item 3', price: "'-1" }));

    const file = join(await mkdtemp(join(tmpdir(), 'csv-cli-')), 'failed.csv');
    const written = await runCliJson(env, ['errors', String(jobId), '--csv', '--output', file]);
    expect(written).toEqual({ id: jobId, kind: 'csv-import', rows: 3, file });
    expect(await readFile(file, 'utf8')).toBe(stdout.stdout);

    const refused = await runCli(env, ['errors', String(jobId), '--csv', '--json']);
    expect(refused).toMatchObject({ code: 1, stderr: expect.stringContaining('--csv --json needs --output') });
  });

  it('errors --csv --output writes the file whole or not at all: an export cut off after its first page leaves the earlier file', async () => {
    // 1,500 failed rows: two pages of the export (1,000 rows a page).
    const lines = Array.from({ length: 1_500 }, (_, i) => csvLine(rowFields({ ...validRow(i + 1, 'CUT'), description: `Item ${i + 1}`, price: '-1' })));
    await upload(env.s3, env.bucket, 'imports/cli/cut.csv', csvLine(HEADER) + lines.join(''));
    const { job } = await submitJob(env.pool, { kind: 'csv-import', tenantId: 'cli', payload: { bucket: env.bucket, key: 'imports/cli/cut.csv', profile: 'products' } });
    expect((await settled(job.id)).state).toBe('review_ready');
    const dir = await mkdtemp(join(tmpdir(), 'csv-cli-cut-'));
    const file = join(dir, 'failed.csv');
    await writeFile(file, 'the earlier export\n');

    // The export's session, waiting on the table behind the session `pid`.
    const exportBlockedBy = (pid: number) =>
      waitFor(async () => {
        const { rows } = await env.pool.query<{ pid: number }>(
          "SELECT pid FROM pg_stat_activity WHERE application_name = 'bulk-import-cli' AND $1 = ANY(pg_blocking_pids(pid))",
          [pid],
        );
        return rows[0]?.pid;
      });
    const backendPid = async (client: { query: typeof env.pool.query }) => (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const first = await env.pool.connect();
    const second = await env.pool.connect();
    let cli: ReturnType<typeof spawnCli>;
    try {
      // `first` holds the table: the export's first page waits for it. `second` asks for the table next, behind the
      // first page: once `first` lets go, the first page is read, then `second` holds the table and the second page waits.
      await first.query('BEGIN; LOCK TABLE csv_import_row_errors IN ACCESS EXCLUSIVE MODE');
      cli = spawnCli(env, ['errors', String(job.id), '--csv', '--output', file]);
      await exportBlockedBy(await backendPid(first));
      const secondPid = await backendPid(second);
      await second.query('BEGIN');
      const secondLocked = second.query('LOCK TABLE csv_import_row_errors IN ACCESS EXCLUSIVE MODE');
      await waitFor(async () => (await env.pool.query("SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'", [secondPid])).rowCount);
      await first.query('ROLLBACK');
      await secondLocked;
      const exportPid = await exportBlockedBy(secondPid);
      // The first page (and the header) is written, to whichever file the export writes to.
      await waitFor(async () => {
        for (const name of await readdir(dir)) {
          if ((await readFile(join(dir, name), 'utf8')).split('\r\n').length - 1 === 1_001) return true;
        }
        return false;
      });
      await env.pool.query('SELECT pg_terminate_backend($1)', [exportPid]);
      await second.query('ROLLBACK');
    } finally {
      first.release();
      second.release();
    }
    const cut = await cli.done;
    expect(cut.code).not.toBe(0);
    // The earlier export as it was, not a valid-looking CSV missing 500 rows; no partial file beside it.
    expect(await readFile(file, 'utf8')).toBe('the earlier export\n');
    expect(await readdir(dir)).toEqual(['failed.csv']);
    expect(cut.stderr).toContain(`${file} was not written: the export failed (the earlier ${file} is left as it was)`);
    expect(cut.stderr).toContain('terminating connection due to administrator command');

    // Run again, the export replaces the earlier file with all of the rows.
    expect(await runCliJson(env, ['errors', String(job.id), '--csv', '--output', file])).toEqual({ id: job.id, kind: 'csv-import', rows: 1_500, file });
    expect((parse(await readFile(file, 'utf8')) as string[][]).length).toBe(1_501);
    expect(await readdir(dir)).toEqual(['failed.csv']);
  });

  it('finalize resumes the run as csv-finalize; finalizing it twice is refused', async () => {
    const queued = await runCliJson(env, ['finalize', String(jobId)]);
    expect(queued).toEqual({ id: jobId, kind: 'csv-finalize', state: 'queued' });
    const job = await settled(jobId);
    expect(job).toMatchObject({ state: 'partial', result: expect.objectContaining({ inserted: 17, invalid: 3 }) });
    const again = await runCli(env, ['finalize', String(jobId)]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`job ${jobId} is partial: cannot finalize it`);
    // The errors of a finalized run are still there, under its new kind.
    expect(await runCliJson(env, ['errors', String(jobId)])).toMatchObject({ kind: 'csv-finalize', total: 3 });
  });

  it('reject ends a reviewed run without writing; human output and refusal of a second reject', async () => {
    const rejectedId = await reviewedImport('second');
    const human = await runCli(env, ['reject', String(rejectedId)]);
    expect(human).toMatchObject({ code: 0, stdout: `Job ${rejectedId} rejected: canceled, nothing written, 17 validated row(s) discarded.\n` });
    const again = await runCli(env, ['reject', String(rejectedId), '--json']);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('is canceled: cannot reject it');
    const { rows } = await env.pool.query("SELECT count(*)::int AS n FROM products WHERE sku LIKE 'SECOND-%'");
    expect(rows[0].n).toBe(0);
  });

  it('errors works for any kind with failed items (mass-import) and says so for kinds without', async () => {
    const { rows } = await env.pool.query<{ id: number }>(
      "INSERT INTO jobs (kind, state, finished_at) VALUES ('mass-import', 'partial', now()) RETURNING id",
    );
    const massId = rows[0]!.id;
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       VALUES ($1, 0, 'a/ok.pdf', 10, 'done', NULL, NULL, NULL, 1), ($1, 1, 'a/broken, "odd".pdf', 20, 'failed', 'UNREADABLE', 'permission denied', 'permanent', 1)`,
      [massId],
    );
    const listed = await runCliJson<{ kind: string; total: number; rows: Array<{ path: string; code: string }> }>(env, ['errors', String(massId)]);
    expect(listed).toMatchObject({ kind: 'mass-import', total: 1, rows: [{ path: 'a/broken, "odd".pdf', code: 'UNREADABLE' }] });
    const csv = await runCli(env, ['errors', String(massId), '--csv']);
    expect(csv.code).toBe(0);
    expect((parse(csv.stdout) as string[][])[1]).toContain('a/broken, "odd".pdf');

    const { job } = await submitJob(env.pool, { kind: 'noop', payload: {} });
    const none = await runCli(env, ['errors', String(job.id)]);
    expect(none).toMatchObject({ code: 1, stderr: expect.stringContaining('noop run: that kind records no per-item errors') });
    const notCsv = await runCli(env, ['finalize', String(job.id)]);
    expect(notCsv).toMatchObject({ code: 1, stderr: expect.stringContaining('noop run, not a CSV import') });
  });

  it("prints others' control characters as text for people, and as they are in --json and --csv", async () => {
    // A file name and an error message that would clear the operator's screen, set the clipboard and hide a word.
    const path = 'a/\u001b[2J\u001b]52;c;cHduZWQ=\u0007evil\u202e.pdf';
    const message = 'denied\r\u009b31mhidden';
    const { rows } = await env.pool.query<{ id: number }>(
      `INSERT INTO jobs (kind, state, finished_at, last_error)
       VALUES ('mass-import', 'partial', now(), jsonb_build_object('code', 'X', 'message', $1::text, 'class', 'permanent', 'attempt', 1, 'at', 'x'))
       RETURNING id`,
      [message],
    );
    const id = rows[0]!.id;
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       VALUES ($1, 0, $2, 20, 'failed', 'UNREADABLE', $3, 'permanent', 1)`,
      [id, path, message],
    );
    // A name with a line break and a tab: shown as their escapes, not as another name with spaces.
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       VALUES ($1, 1, $2, 20, 'failed', 'UNREADABLE', 'denied', 'permanent', 1)`,
      [id, 'b/two\nlines\tand a tab.pdf'],
    );
    expect((await runCli(env, ['errors', String(id)])).stdout).toContain('b/two\\nlines\\tand a tab.pdf');
    // eslint-disable-next-line no-control-regex
    const unprintable = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e]/;
    for (const args of [['errors', String(id)], ['show', String(id)]]) {
      const shown = await runCli(env, args);
      expect(shown.code, args.join(' ')).toBe(0);
      expect(shown.stdout, args.join(' ')).not.toMatch(unprintable);
      expect(shown.stdout, args.join(' ')).toContain('\\x9b31mhidden');
    }
    expect((await runCli(env, ['errors', String(id)])).stdout).toContain('a/\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07evil\\u202E.pdf');
    // Machine output keeps the values exactly.
    expect(await runCliJson(env, ['errors', String(id)])).toMatchObject({ rows: [{ path: 'b/two\nlines\tand a tab.pdf' }, { path }] });
    expect((parse((await runCli(env, ['errors', String(id), '--csv'])).stdout) as string[][]).some((row) => row.includes(path))).toBe(true);
    // The same CSV printed on a terminal shows them as text.
    const onTerminal = await runCliOnTerminal(env, ['errors', String(id), '--csv']);
    expect(onTerminal.code, onTerminal.stderr).toBe(0);
    expect(onTerminal.stdout).toContain('a/\\x1b[2J\\x1b]52;c;cHduZWQ=\\x07evil\\u202E.pdf');
    expect(onTerminal.stdout.replace(/\r*\n/g, '')).not.toMatch(unprintable);
  });
});
