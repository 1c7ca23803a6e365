// Helpers of the mass-import tests: build a tree of files with known bytes, read back what landed in the bucket and
// the documents table, and wait for a run to end.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { sampleContent } from '../../worker/dev/sample-tree.js';
import { requireJob } from '../../worker/queue/operator.js';
import type { JobRow } from '../../worker/queue/types.js';
import { TERMINAL_STATES } from '../../worker/queue/types.js';
import type { TestEnvironment } from '../harness.js';
import { waitFor } from './in-process-worker.js';

export interface TreeFile {
  path: string;
  size: number;
}

export const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** The bytes a test file holds: deterministic per path and seed. */
export const contentOf = (file: TreeFile, seed = 'test'): Buffer => sampleContent(seed, file.path, file.size);

/** A fresh folder (world-traversable, so a worker running as another user can read it) with these files. */
export async function makeTree(files: TreeFile[], seed = 'test'): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'mass-import-'));
  await writeTree(root, files, seed);
  return root;
}

export async function writeTree(root: string, files: TreeFile[], seed = 'test'): Promise<void> {
  const { chmod } = await import('node:fs/promises');
  await chmod(root, 0o755);
  for (const file of files) {
    const target = join(root, file.path);
    await mkdir(dirname(target), { recursive: true, mode: 0o755 });
    await writeFile(target, contentOf(file, seed), { mode: 0o644 });
  }
}

export interface StoredObject {
  key: string;
  size: number;
  etag: string;
}

/** Every object under a prefix, through as many ListObjectsV2 pages as it takes. */
export async function listObjects(s3: S3Client, bucket: string, prefix = ''): Promise<StoredObject[]> {
  const objects: StoredObject[] = [];
  let token: string | undefined;
  do {
    const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: 1000 }));
    for (const item of page.Contents ?? []) objects.push({ key: item.Key!, size: item.Size ?? 0, etag: item.ETag ?? '' });
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return objects;
}

export async function objectBytes(s3: S3Client, bucket: string, key: string): Promise<Buffer> {
  const output = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return Buffer.from(await output.Body!.transformToByteArray());
}

export interface DocumentRecord {
  source_path: string;
  object_key: string;
  sha256: string;
  size_bytes: number;
  content_type: string;
  tenant_id: string;
  import_job_id: number | null;
}

export async function documentsOf(env: TestEnvironment, keyPrefix: string): Promise<DocumentRecord[]> {
  const { rows } = await env.pool.query<DocumentRecord>(
    `SELECT source_path, object_key, sha256, size_bytes, content_type, tenant_id, import_job_id FROM documents
     WHERE bucket = $1 AND starts_with(object_key, $2) ORDER BY source_path`,
    [env.bucket, keyPrefix],
  );
  return rows;
}

export async function itemsOf(env: TestEnvironment, jobId: number): Promise<Array<{ relative_path: string; state: string; error_code: string | null; tries: number }>> {
  const { rows } = await env.pool.query(
    'SELECT relative_path, state, error_code, error_message, tries FROM import_items WHERE job_id = $1 ORDER BY item_no',
    [jobId],
  );
  return rows;
}

export async function waitForTerminal(env: TestEnvironment, jobId: number, timeoutMs = 60_000): Promise<JobRow> {
  return waitFor(async () => {
    const job = await requireJob(env.pool, jobId);
    return TERMINAL_STATES.includes(job.state) ? job : undefined;
  }, timeoutMs, 100);
}
