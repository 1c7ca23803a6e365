// uploadFileWithSha256's beforeObject: the last thing awaited before the upload can make its object (the mass import
// confirms its lease there). Against the test's S3 server: no object exists while it waits, one exists once it
// resolves, and none at all when it refuses.
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uploadFileWithSha256 } from '../worker/storage/s3-upload.js';
import { useTestEnvironment } from './harness.js';
import { listObjects, objectBytes } from './support/mass-import-tree.js';

const env = useTestEnvironment();
const MiB = 1024 * 1024;
// Read whole and sent in one PUT; and in a multipart upload of three parts (5 MiB threshold), whose last part waits.
// (A streamed PUT is left out: this S3 server writes a PUT's body into the object as it arrives, which S3 never does.)
const SHAPES = { 'one PUT': 200 * 1024 + 7, multipart: 12 * MiB + 5 } as const;
let dir: string;
const contents = new Map<string, Buffer>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'before-object-'));
  for (const [shape, size] of Object.entries(SHAPES)) {
    const bytes = randomBytes(size);
    contents.set(shape, bytes);
    await writeFile(join(dir, shape), bytes);
  }
});
afterAll(async () => rm(dir, { recursive: true, force: true }));

async function upload(shape: keyof typeof SHAPES, key: string, beforeObject: () => Promise<void>) {
  const file = await open(join(dir, shape), 'r');
  try {
    return await uploadFileWithSha256({
      s3: env.s3,
      bucket: env.bucket,
      key,
      contentType: 'application/octet-stream',
      file,
      size: SHAPES[shape],
      multipartThresholdBytes: 5 * MiB,
      bufferLimitBytes: 16 * MiB,
      timeoutMs: 30_000,
      signal: new AbortController().signal,
      beforeObject,
    });
  } finally {
    await file.close();
  }
}

describe('beforeObject', () => {
  for (const shape of Object.keys(SHAPES) as Array<keyof typeof SHAPES>) {
    it(`${shape}: no object while it waits; the file's bytes once it resolves`, async () => {
      const key = `before-object/${shape}/waits`;
      let asked: () => void = () => {};
      const wasAsked = new Promise<void>((resolve) => (asked = resolve));
      let go: () => void = () => {};
      const uploaded = upload(shape, key, () => {
        asked();
        return new Promise<void>((resolve) => (go = resolve));
      });
      await wasAsked;
      expect(await listObjects(env.s3, env.bucket, key)).toEqual([]);
      go();
      const result = await uploaded;
      expect(result.sha256).toBe(createHash('sha256').update(contents.get(shape)!).digest('hex'));
      expect((await objectBytes(env.s3, env.bucket, key)).equals(contents.get(shape)!)).toBe(true);
    });

    it(`${shape}: a refusal fails the upload with its reason, and no object is made`, async () => {
      const key = `before-object/${shape}/refused`;
      const refusal = new Error('the lease is lost');
      await expect(upload(shape, key, () => Promise.reject(refusal))).rejects.toBe(refusal);
      expect(await listObjects(env.s3, env.bucket, key)).toEqual([]);
    });
  }
});
