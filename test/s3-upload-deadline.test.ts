// A single PUT's deadline covers sending its whole body, at the same slowest rate a multipart upload asks of each part
// (partTimeoutFor: the request timeout per 8 MiB): a fixed request timeout cut off a large single PUT — the multipart
// threshold may be raised up to 5 GiB — on a link that would have carried every part of it in time. Through a proxy
// that sends request bodies on at 16 MiB/s, a 32 MiB file takes about 2 s: over a 1 s request timeout, well within the
// 4 s its size is given.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createS3Client } from '../worker/storage/s3-client.js';
import { partTimeoutFor, uploadFileWithSha256 } from '../worker/storage/s3-upload.js';
import { useTestEnvironment } from './harness.js';
import { startFaultyS3Proxy, type FaultyS3Proxy } from './support/faulty-s3-proxy.js';
import { objectBytes } from './support/mass-import-tree.js';

const env = useTestEnvironment();
const MiB = 1024 * 1024;
const SIZE = 32 * MiB;
let dir: string;
let bytes: Buffer;
let proxy: FaultyS3Proxy;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'put-deadline-'));
  bytes = randomBytes(SIZE);
  await writeFile(join(dir, 'file'), bytes);
  proxy = await startFaultyS3Proxy(env.s3Endpoint);
  proxy.uploadBytesPerSecond = 16 * MiB;
});
afterAll(async () => {
  await proxy.close();
  await rm(dir, { recursive: true, force: true });
});

describe('a single PUT over a slow link', () => {
  for (const [shape, bufferLimitBytes] of [['read whole', 64 * MiB], ['streamed', MiB]] as const) {
    it(`${shape}: is given its size's time, not the bare request timeout`, async () => {
      expect(partTimeoutFor(SIZE, 1_000)).toBe(4_000);
      const s3 = createS3Client({ region: inject('s3Region'), endpoint: proxy.endpoint, credentials: inject('s3Credentials'), maxAttempts: 1 });
      const file = await open(join(dir, 'file'), 'r');
      const key = `put-deadline/${shape.replace(' ', '-')}`;
      const started = Date.now();
      try {
        const result = await uploadFileWithSha256({
          s3,
          bucket: env.bucket,
          key,
          contentType: 'application/octet-stream',
          file,
          size: SIZE,
          multipartThresholdBytes: 64 * MiB, // one PUT
          bufferLimitBytes,
          timeoutMs: 1_000,
          signal: new AbortController().signal,
        });
        expect(result).toMatchObject({ method: shape === 'read whole' ? 'put' : 'streamed-put', size: SIZE });
        expect(result.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      } finally {
        await file.close();
        s3.destroy();
      }
      // It did outlast the bare request timeout: the throttle held it to about 2 s.
      expect(Date.now() - started).toBeGreaterThan(1_500);
      expect((await objectBytes(env.s3, env.bucket, key)).equals(bytes)).toBe(true);
    });
  }
});
