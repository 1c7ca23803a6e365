// SHA-256 of an open file, read in a stream (memory flat in the file's size). Used to compare a file with the
// document it was imported as, without uploading it again.
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';

export async function sha256OfFile(file: FileHandle, signal: AbortSignal): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  const stream = file.createReadStream({ start: 0, autoClose: false, highWaterMark: 1024 * 1024, signal });
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { sha256: hash.digest('hex'), size };
}
