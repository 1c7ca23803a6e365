// Starts the local S3-compatible server (see s3-server-process.ts) and creates buckets on it.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, type S3Client } from '@aws-sdk/client-s3';

export const LOCAL_S3_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };

export interface LocalS3 {
  endpoint: string;
  /**
   * Settles with the server's exit code if it stops without stop() (it crashed: s3rver keeps each object as a file,
   * and one it cannot write — a file name over the disk's 255 bytes — ends its process). Never settles otherwise.
   */
  stoppedByItself: Promise<number | null>;
  stop(): Promise<void>;
}

export async function startLocalS3(directory: string, port = 0): Promise<LocalS3> {
  await mkdir(directory, { recursive: true });
  const script = fileURLToPath(new URL(`./s3-server-process${extname(fileURLToPath(import.meta.url))}`, import.meta.url));
  const loader = script.endsWith('.ts') ? ['--import', 'tsx'] : [];
  const child = spawn(process.execPath, ['--openssl-legacy-provider', ...loader, script, directory, String(port)], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, NODE_OPTIONS: '' },
  });
  const boundPort = await readPort(child);
  let stopping = false;
  const stoppedByItself = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      if (!stopping) resolve(code);
    });
  });
  return {
    endpoint: `http://127.0.0.1:${boundPort}`,
    stoppedByItself,
    stop: () =>
      new Promise<void>((resolve) => {
        stopping = true;
        // Exited already, by itself or by a signal (then exitCode stays null): its 'exit' came and will not again.
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

function readPort(child: ChildProcess): Promise<number> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new Error('local S3 server did not start within 20 s')), 20_000);
    child.once('exit', (code) => reject(new Error(`local S3 server exited with code ${code} before it started`)));
    lines.once('line', (line) => {
      clearTimeout(timer);
      try {
        resolve((JSON.parse(line) as { port: number }).port);
      } catch {
        reject(new Error(`local S3 server printed an unexpected line: ${line}`));
      }
    });
  });
}

/** Creates the bucket unless it exists already. */
export async function ensureBucket(s3: S3Client, bucket: string): Promise<void> {
  try {
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
  } catch (error) {
    const name = (error as { name?: string }).name;
    if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw error;
  }
}
