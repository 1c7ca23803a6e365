// countChunkBytes (worker/log-stream.ts) replaces sonic-boom's `write` with one that keeps the last chunk's length
// instead of measuring it per line. It must write the same bytes, in the same order and the same chunks, as
// sonic-boom's own: checked here side by side, with lines of several UTF-8 widths, a chunk size lines must be split
// over, and chunks that sonic-boom adds itself.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, streamOf } from '../worker/logger.js';
import { countChunkBytes } from '../worker/log-stream.js';

type Boom = ReturnType<typeof pino.destination> & { _bufs: string[]; _len: number; maxWrite: number };

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'log-stream-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function openBoom(name: string, counted: boolean, options: { sync?: boolean; minLength?: number; maxLength?: number } = {}): Promise<Boom> {
  const stream = pino.destination({ dest: join(dir, name), sync: false, maxWrite: 200, ...options }) as Boom;
  await once(stream, 'ready');
  if (counted) {
    expect(countChunkBytes(stream)).toBe(true);
    expect(countChunkBytes(stream), 'a second call changes nothing').toBe(true);
  }
  return stream;
}

/** Lines of 1- to 4-byte characters and of many lengths, some longer than a chunk. */
function lines(count: number, seed: number): string[] {
  const alphabet = ['a', 'é', '€', '😀', '"', '\\'];
  return Array.from({ length: count }, (_, i) => {
    const length = ((i * 37 + seed) % 90) + (i % 23 === 0 ? 260 : 0);
    let text = '';
    for (let k = 0; k < length; k += 1) text += alphabet[(i + k * seed) % alphabet.length];
    return `{"n":${i},"text":"${text}"}\n`;
  });
}

async function ended(stream: Boom): Promise<void> {
  stream.end();
  await once(stream, 'finish');
}

describe('countChunkBytes', () => {
  it('writes what sonic-boom writes, in the same chunks', async () => {
    const plain = await openBoom('plain.log', false);
    const counted = await openBoom('counted.log', true);
    const written: string[] = [];
    for (const [round, batch] of [lines(300, 7), lines(150, 3), lines(200, 11)].entries()) {
      // A batch written in one go: after the first line the stream is writing, so the rest wait in chunks.
      for (const line of batch) {
        expect(counted.write(line)).toBe(plain.write(line));
        written.push(line);
      }
      expect(counted._bufs).toEqual(plain._bufs);
      expect(counted._len).toBe(plain._len);
      // Within a chunk's size, or one line longer than that on its own.
      for (const chunk of counted._bufs) expect(Buffer.byteLength(chunk) <= counted.maxWrite || chunk.indexOf('\n') === chunk.length - 1).toBe(true);
      if (round === 0) {
        // A chunk the stream did not get from write (as flushSync puts back the one it was writing): measured once.
        // A short one after a long one: the next line fits beside it only if its own length is what is counted.
        for (const stream of [plain, counted]) stream._bufs.push('€'.repeat(60), '€\n');
        const after = ['{"small":1}\n', ...lines(40, 5)];
        for (const line of after) {
          counted.write(line);
          plain.write(line);
        }
        expect(counted._bufs).toEqual(plain._bufs);
        written.push('€'.repeat(60), '€\n', ...after);
        for (const stream of [plain, counted]) stream.flushSync();
      } else {
        await Promise.all([once(plain, 'drain'), once(counted, 'drain')]);
      }
    }
    await Promise.all([ended(plain), ended(counted)]);
    const expected = written.join('');
    expect(await readFile(join(dir, 'counted.log'), 'utf8')).toBe(expected);
    expect(await readFile(join(dir, 'plain.log'), 'utf8')).toBe(expected);
  });

  // Written in one go, then ended: what each setting does to the pending chunks, drops and return values.
  for (const [name, options] of [
    ['minLength', { minLength: 150 }],
    ['maxLength (lines dropped past it)', { maxLength: 2_000 }],
    ['sync', { sync: true }],
  ] as const) {
    it(`writes what sonic-boom writes with ${name}`, async () => {
      const file = name.split(' ')[0]!;
      const plain = await openBoom(`plain-${file}.log`, false, options);
      const counted = await openBoom(`counted-${file}.log`, true, options);
      const drops = { plain: [] as string[], counted: [] as string[] };
      plain.on('drop', (line: string) => drops.plain.push(line));
      counted.on('drop', (line: string) => drops.counted.push(line));
      // A short line first: under minLength it waits for more instead of being written at once.
      for (const line of ['{"n":-1}\n', ...lines(400, 13)]) {
        expect(counted.write(line)).toBe(plain.write(line));
        expect(counted._bufs).toEqual(plain._bufs);
        expect(counted._len).toBe(plain._len);
      }
      expect(drops.counted).toEqual(drops.plain);
      if (name.startsWith('maxLength')) expect(drops.counted.length).toBeGreaterThan(0);
      await Promise.all([ended(plain), ended(counted)]);
      const written = await readFile(join(dir, `plain-${file}.log`), 'utf8');
      expect(await readFile(join(dir, `counted-${file}.log`), 'utf8')).toBe(written);
      expect(written.length).toBeGreaterThan(0);
    });
  }

  it('leaves other streams alone; the logger on stdout counts', async () => {
    const other = { write: () => true };
    expect(countChunkBytes(other)).toBe(false);
    expect(countChunkBytes(null)).toBe(false);
    const log = createLogger({ level: 'info', format: 'json' });
    const stdout = streamOf(log) as Boom;
    const reference = await openBoom('reference.log', false);
    expect(stdout.write).not.toBe(reference.write);
    await ended(reference);
  });
});
