// A tree holding one big file, to show that the worker's memory does not grow with the size of a file.
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { sampleContentChunks } from '../../worker/dev/sample-tree.js';

export async function writeBigFileTree(directory: string, mebibytes: number, seed: string): Promise<string> {
  const size = mebibytes * 1024 * 1024;
  const file = join(directory, 'big scan.tiff');
  await mkdir(directory, { recursive: true });
  const existing = await stat(file).catch(() => undefined);
  if (existing?.size === size) return directory;
  const out = createWriteStream(file);
  for (const chunk of sampleContentChunks(seed, 'big scan.tiff', size, 8 * 1024 * 1024)) {
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return directory;
}
