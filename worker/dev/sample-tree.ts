// Deterministic sample trees of "document share" files for the local run, the benchmark and tests: the same seed
// always gives the same folders, names, sizes and bytes. Names mix scripts, spaces and punctuation like a real share;
// contents are pseudo-random (an AES-CTR keystream), so nothing compresses or deduplicates by accident.
import { createCipheriv, createHash } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

const KiB = 1024;
const MiB = 1024 * KiB;

export type SampleProfile = 'sample' | 'document-share';

export interface SampleFile {
  path: string;
  size: number;
}

export interface SampleTreeSpec {
  seed: string;
  files: number;
  profile: SampleProfile;
}

/** A small seeded generator (mulberry32): fast, and the same sequence on every machine. */
function seededRandom(seed: string): () => number {
  let state = createHash('sha256').update(seed).digest().readUInt32LE(0);
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

function logNormal(random: () => number, median: number, sigma: number): number {
  const normal = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  return median * Math.exp(sigma * normal);
}

const FOLDERS = ['Buchhaltung', 'Verträge', 'Personal', 'Projekte 2024', '見積書', 'Marketing & Sales', 'Scans', 'Archiv (alt)'];
const SUBFOLDERS = ['2019', '2020', '2021', '2022', '2023', '2024', 'Entwürfe', 'Q1', 'Q2', 'Q3', 'Q4', 'ÉTÉ – été'];
const NAMES = ['Rechnung', 'Angebot', 'Protokoll', 'Überweisung', 'contract', 'scan', 'Präsentation', 'レポート', 'Lieferschein', 'memo'];
const SMALL_EXTENSIONS = ['.pdf', '.pdf', '.pdf', '.docx', '.xlsx', '.txt', '.msg', '.png', '.csv'];
const LARGE_EXTENSIONS = ['.pdf', '.tiff', '.pptx', '.zip'];

interface Profile {
  medianBytes: number;
  sigma: number;
  capBytes: number;
  /** Files forced above the default multipart threshold (8 MiB), as [min, max] bytes. */
  large: { count: number; min: number; max: number };
}

const PROFILES: Record<SampleProfile, Profile> = {
  // The local demo: a few hundred files, about 50 MB, two of them multipart.
  sample: { medianBytes: 40 * KiB, sigma: 1.3, capBytes: 4 * MiB, large: { count: 2, min: 9 * MiB, max: 12 * MiB } },
  // Like the last real campaign's share (many office files and scans, a few big ones), scaled to a few hundred MB.
  'document-share': { medianBytes: 56 * KiB, sigma: 1.5, capBytes: 48 * MiB, large: { count: 8, min: 12 * MiB, max: 32 * MiB } },
};

/** The files of a sample tree: paths (relative, `/`-separated) and sizes. One file is empty, some are multipart. */
export function sampleTreeLayout(spec: SampleTreeSpec): SampleFile[] {
  const profile = PROFILES[spec.profile];
  const random = seededRandom(`${spec.seed}:layout`);
  const files: SampleFile[] = [];
  const used = new Set<string>();
  const largeAt = new Set<number>();
  while (largeAt.size < Math.min(profile.large.count, Math.max(0, spec.files - 1))) largeAt.add(1 + Math.floor(random() * (spec.files - 1)));
  for (let index = 0; index < spec.files; index += 1) {
    const depth = Math.floor(random() * 3);
    const folders = [pick(random, FOLDERS), pick(random, SUBFOLDERS), pick(random, SUBFOLDERS)].slice(0, depth);
    let size: number;
    if (index === 0) size = 0;
    else if (largeAt.has(index)) size = Math.round(profile.large.min + random() * (profile.large.max - profile.large.min));
    else size = Math.min(profile.capBytes, Math.max(1, Math.round(logNormal(random, profile.medianBytes, profile.sigma))));
    const extension = size > 4 * MiB ? pick(random, LARGE_EXTENSIONS) : pick(random, SMALL_EXTENSIONS);
    let path = [...folders, `${pick(random, NAMES)} ${String(index).padStart(4, '0')}${extension}`].join('/');
    if (index === 0) path = 'leer – empty.txt';
    while (used.has(path)) path = path.replace(/(\.[^.]+)$/, ` (copy)$1`);
    used.add(path);
    files.push({ path, size });
  }
  return files;
}

/** The bytes of one file of a tree: an AES-256-CTR keystream keyed by the seed, its nonce by the path. */
export function sampleContentChunks(seed: string, path: string, size: number, chunkBytes = MiB): Generator<Buffer> {
  const key = createHash('sha256').update(`${seed}:content`).digest();
  const iv = createHash('sha256').update(path).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  const zeros = Buffer.alloc(Math.min(chunkBytes, Math.max(size, 1)));
  return (function* () {
    for (let left = size; left > 0; left -= zeros.length) {
      yield cipher.update(left >= zeros.length ? zeros : zeros.subarray(0, left));
    }
  })();
}

export function sampleContent(seed: string, path: string, size: number): Buffer {
  return Buffer.concat([...sampleContentChunks(seed, path, size)]);
}

async function writeSampleFile(directory: string, seed: string, file: SampleFile): Promise<void> {
  const target = join(directory, file.path);
  await mkdir(dirname(target), { recursive: true });
  const out = createWriteStream(target);
  for (const chunk of sampleContentChunks(seed, file.path, file.size)) {
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
}

export interface SampleTree {
  directory: string;
  files: number;
  bytes: number;
  /** False when an existing tree of the same spec was reused. */
  created: boolean;
}

/**
 * Writes the tree into `directory` once: a manifest next to it (never inside, or it would be imported) records the
 * spec, and a later call with the same spec reuses the tree. The tree is built in a temporary folder and renamed,
 * so an interrupted build never looks complete.
 */
export async function ensureSampleTree(
  directory: string,
  spec: SampleTreeSpec,
  onProgress?: (written: number, total: number) => void,
): Promise<SampleTree> {
  const layout = sampleTreeLayout(spec);
  const bytes = layout.reduce((sum, file) => sum + file.size, 0);
  const manifestPath = `${directory}.manifest.json`;
  const manifest = JSON.stringify({ ...spec, files: layout.length, bytes });
  const existing = await readFile(manifestPath, 'utf8').catch(() => undefined);
  if (existing === manifest) return { directory, files: layout.length, bytes, created: false };
  const building = `${directory}.building`;
  await rm(building, { recursive: true, force: true });
  await mkdir(building, { recursive: true });
  let written = 0;
  for (const file of layout) {
    await writeSampleFile(building, spec.seed, file);
    written += 1;
    if (written % 50 === 0 || written === layout.length) onProgress?.(written, layout.length);
  }
  await rm(directory, { recursive: true, force: true });
  await rename(building, directory);
  await writeFile(manifestPath, manifest);
  return { directory, files: layout.length, bytes, created: true };
}
