// The documents audit against the real S3-compatible server and database: finds a planted orphan object and a
// planted row without an object; --fix deletes only old orphan objects under the prefix, never rows.
import { DeleteObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterEach, beforeEach, describe, expect, inject, it, vi } from 'vitest';
import { auditDocuments, type AuditReport } from '../worker/audit/documents-audit.js';
import { createS3Client } from '../worker/storage/s3-client.js';
import { useTestEnvironment } from './harness.js';
import { runCli, runCliJson } from './support/cli-runner.js';
import { startFaultyS3Proxy } from './support/faulty-s3-proxy.js';

const env = useTestEnvironment();
const SHA = 'a'.repeat(64);

async function putObject(key: string): Promise<void> {
  await env.s3.send(new PutObjectCommand({ Bucket: env.bucket, Key: key, Body: Buffer.from(`content of ${key}`) }));
}

async function insertDocument(key: string): Promise<number> {
  const { rows } = await env.pool.query<{ id: number }>(
    `INSERT INTO documents (tenant_id, source_path, sha256, size_bytes, content_type, bucket, object_key)
     VALUES ('acme', $1, $2, 10, 'application/pdf', $3, $4) RETURNING id`,
    [key.split('/').slice(2).join('/'), SHA, env.bucket, key],
  );
  return rows[0]!.id;
}

async function exists(key: string): Promise<boolean> {
  try {
    await env.s3.send(new HeadObjectCommand({ Bucket: env.bucket, Key: key }));
    return true;
  } catch {
    return false;
  }
}

let missingRowId = 0;
beforeEach(async () => {
  for (const key of ['imports/acme/a.pdf', 'imports/acme/b c.pdf', 'imports/acme/ü.pdf']) {
    await putObject(key);
    await insertDocument(key);
  }
  await putObject('imports/acme/orphan.pdf'); // uploaded, row never committed (a crash between the two)
  missingRowId = await insertDocument('imports/acme/missing.pdf'); // row whose object is gone
  await putObject('uploads/acme/prices.csv'); // not a document at all: outside the documents prefix
});
afterEach(async () => {
  await env.pool.query('DELETE FROM documents; DELETE FROM jobs');
});

describe('audit', () => {
  it('finds the orphan object and the row without an object, paging through the listing', async () => {
    const report = await auditDocuments({ pool: env.pool, s3: env.s3, bucket: env.bucket, prefix: 'imports/', limit: 10, listPageSize: 2 });
    expect(report.objectsListed).toBe(4);
    expect(report.documentRows).toBe(4);
    expect(report.orphanObjects.total).toBe(1);
    expect(report.orphanObjects.listed.map((o) => o.key)).toEqual(['imports/acme/orphan.pdf']);
    expect(report.rowsWithoutObject).toEqual({
      total: 1,
      listed: [expect.objectContaining({ documentId: missingRowId, key: 'imports/acme/missing.pdf', tenantId: 'acme' })],
    });
    // The whole bucket: the CSV upload shows as an object without a row too.
    const whole = await auditDocuments({ pool: env.pool, s3: env.s3, bucket: env.bucket, prefix: '', limit: 10 });
    expect(whole.orphanObjects.listed.map((o) => o.key)).toEqual(['imports/acme/orphan.pdf', 'uploads/acme/prices.csv']);
  });

  it("leaves out rows committed during the listing by the database's clock, whatever the local clock says", async () => {
    const proxy = await startFaultyS3Proxy(env.s3Endpoint);
    const s3 = createS3Client({ region: inject('s3Region'), endpoint: proxy.endpoint, credentials: inject('s3Credentials') });
    // A mass import commits a row while the listing is under way (its object comes after the listing passed its key):
    // the listing's request waits until the row is in.
    let inFlight: Promise<number> | undefined;
    proxy.decide = () => (inFlight ??= insertDocument('imports/acme/in-flight.pdf')).then(() => 'pass' as const);
    // The CLI on a laptop whose clock is 10 minutes ahead of the database's (S3 accepts a request dated 15 minutes off).
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() + 600_000, shouldAdvanceTime: true });
    try {
      const report = await auditDocuments({ pool: env.pool, s3, bucket: env.bucket, prefix: 'imports/', limit: 10 });
      expect(inFlight).toBeDefined();
      expect(report.rowsWithoutObject.listed.map((row) => row.key)).toEqual(['imports/acme/missing.pdf']);
    } finally {
      vi.useRealTimers();
      s3.destroy();
      await proxy.close();
    }
  });

  it('bulk-import audit reports in both modes and exits 2 when something is found', async () => {
    const json = await runCliJson<AuditReport>(env, ['audit', '--prefix', 'imports/'], 2);
    expect(json.orphanObjects.total).toBe(1);
    expect(json.rowsWithoutObject.total).toBe(1);
    expect(json.fix).toBeUndefined();

    const human = await runCli(env, ['audit', '--prefix', 'imports/']);
    expect(human.code).toBe(2);
    expect(human.stdout).toContain(`Audit of s3://${env.bucket}/imports/: 4 objects, 4 documents rows.`);
    expect(human.stdout).toMatch(/^Objects without a documents row \(orphans\): 1\nKEY\s+SIZE\s+LAST MODIFIED\s+AGE\nimports\/acme\/orphan\.pdf\s+/m);
    expect(human.stdout).toMatch(new RegExp(`^Documents rows whose object is missing: 1\\nDOCUMENT\\s+TENANT\\s+KEY\\s+IMPORT JOB\\s+CREATED\\n${missingRowId}\\s+acme\\s+imports/acme/missing\\.pdf\\s+-\\s+`, 'm'));

    // Once the bucket and the table agree, exit 0.
    await env.pool.query(`DELETE FROM documents WHERE object_key = 'imports/acme/missing.pdf'`);
    await env.s3.send(new PutObjectCommand({ Bucket: env.bucket, Key: 'imports/acme/orphan.pdf', Body: 'x' }));
    await insertDocument('imports/acme/orphan.pdf');
    expect((await runCli(env, ['audit', '--prefix', 'imports/'])).code).toBe(0);
  });

  it('--fix deletes old orphan objects under the prefix only; rows without objects, young orphans and job inputs stay', async () => {
    // A CSV upload under the same prefix: no documents row by design, but a run's payload names it.
    await putObject('imports/acme/upload.csv');
    await env.pool.query(
      `INSERT INTO jobs (kind, state, payload, finished_at) VALUES ('csv-import', 'succeeded', $1, now())`,
      [{ source: { bucket: env.bucket, key: 'imports/acme/upload.csv' }, profile: 'products' }],
    );
    const young = await runCliJson<AuditReport>(env, ['audit', '--prefix', 'imports/', '--fix', '--min-age', '1h'], 2);
    expect(young.fix).toEqual({ minAgeMs: 3_600_000, deleted: 0, skippedTooYoung: 1, skippedNowReferenced: 0, skippedNamedByJob: 0, failed: [] });
    expect(young.jobInputs).toMatchObject({ total: 1, listed: [expect.objectContaining({ key: 'imports/acme/upload.csv' })] });
    expect(await exists('imports/acme/orphan.pdf')).toBe(true);

    const fixed = await runCli(env, ['audit', '--prefix', 'imports/', '--fix', '--min-age', '0s']);
    expect(fixed.stdout).toContain(
      'Fix: deleted 1 orphan object(s) older than 0.0s; kept 0 younger one(s), 0 named by a job\'s payload meanwhile and 0 that ' +
        'gained a row meanwhile; the 1 object(s) named by jobs are never deleted.',
    );
    expect(fixed.code).toBe(2); // the row without an object is still there for a person
    expect(await exists('imports/acme/orphan.pdf')).toBe(false);
    expect(await exists('imports/acme/a.pdf')).toBe(true);
    expect(await exists('uploads/acme/prices.csv')).toBe(true);
    expect(await exists('imports/acme/upload.csv')).toBe(true); // named by a finished job's payload
    const { rows } = await env.pool.query('SELECT object_key FROM documents ORDER BY object_key');
    expect(rows.map((row) => row.object_key)).toContain('imports/acme/missing.pdf');
    expect(rows).toHaveLength(4);
  });

  it('CSV uploads that a job names are listed apart, not as orphans, and are no finding', async () => {
    // Bucket and table agree on the documents (an earlier test's upload, whose job is gone, would be an orphan)…
    await env.s3.send(new DeleteObjectCommand({ Bucket: env.bucket, Key: 'imports/acme/upload.csv' }));
    await env.pool.query(`DELETE FROM documents WHERE object_key = 'imports/acme/missing.pdf'`);
    await insertDocument('imports/acme/orphan.pdf');
    // …and three CSV uploads under the same prefix belong to runs (one finished, one in review, one queued).
    const uploads = ['imports/acme/p1.csv', 'imports/acme/p2.csv', 'imports/beta/p3.csv'];
    for (const [index, key] of uploads.entries()) {
      await putObject(key);
      await env.pool.query(`INSERT INTO jobs (kind, state, payload, finished_at) VALUES ('csv-import', $1, $2, $3)`, [
        ['succeeded', 'review_ready', 'queued'][index],
        { bucket: env.bucket, key, profile: 'products' },
        index === 0 ? new Date() : null,
      ]);
    }
    const json = await runCliJson<AuditReport>(env, ['audit', '--prefix', 'imports/']);
    expect(json.orphanObjects).toEqual({ total: 0, listed: [] });
    expect(json.jobInputs.total).toBe(3);
    expect(json.jobInputs.listed.map((o) => o.key)).toEqual(uploads);

    const human = await runCli(env, ['audit', '--prefix', 'imports/']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^Objects without a documents row \(orphans\): 0\n\n/m);
    expect(human.stdout).toMatch(
      /^Objects a job's payload names \(CSV uploads; not orphans, kept by --fix\): 3 — listed apart, not counted as findings\nKEY\s+SIZE\s+LAST MODIFIED\s+AGE\nimports\/acme\/p1\.csv\s+/m,
    );
    expect(human.stdout).not.toContain('To delete orphan objects');

    // An upload no job names any more (its run deleted by retention) is an orphan again.
    await env.pool.query(`DELETE FROM jobs WHERE payload ->> 'key' = 'imports/beta/p3.csv'`);
    const later = await runCliJson<AuditReport>(env, ['audit', '--prefix', 'imports/'], 2);
    expect(later.orphanObjects.listed.map((o) => o.key)).toEqual(['imports/beta/p3.csv']);
    expect(later.jobInputs.total).toBe(2);
  });

  it('--fix refuses without a prefix and while jobs are running', async () => {
    const noPrefix = await runCli(env, ['audit', '--fix']);
    expect(noPrefix.code).toBe(1);
    expect(noPrefix.stderr).toContain('audit --fix needs --prefix');
    await env.pool.query(
      `INSERT INTO jobs (kind, state, attempts, lease_owner, lease_expires_at) VALUES ('mass-import', 'running', 1, 'w', now() + interval '1 hour')`,
    );
    const busy = await runCli(env, ['audit', '--prefix', 'imports/', '--fix', '--min-age', '0s']);
    expect(busy.code).toBe(1);
    expect(busy.stderr).toMatch(/audit --fix refuses to run while jobs are running \(\d+ mass-import\)/);
    expect(await exists('imports/acme/orphan.pdf')).toBe(true);
  });
});
