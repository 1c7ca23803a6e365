// Which natural keys a validation has seen, in fixed memory: a blocked Bloom filter (16 MiB, every key's bits in one
// 64-byte block, so one cache miss per key). It can only say "new for sure" or "maybe seen before"; validation uses
// it to skip the exact duplicate search in the database (duplicates.ts) when no key may repeat — the common case.
// A "maybe" (a real duplicate, or a false positive: about 1 in 200 files of a million rows) runs the exact search.

const BLOCK_BITS = 512;
const WORDS_PER_BLOCK = BLOCK_BITS / 32;

export class SeenKeys {
  private readonly words: Uint32Array;
  private readonly blockMask: number;
  /** Keys added that may have been added before. */
  maybeRepeated = 0;

  constructor(
    log2Bits = 27,
    private readonly bitsPerKey = 7,
  ) {
    this.words = new Uint32Array(2 ** log2Bits / 32);
    this.blockMask = 2 ** log2Bits / BLOCK_BITS - 1;
  }

  /** Records the key; returns true when it may have been recorded before. */
  add(key: string): boolean {
    // Two independent 32-bit hashes of the UTF-16 code units (FNV-1a and a multiplicative mix), each finalised with
    // MurmurHash3's fmix32: one picks the block, the other (re-mixed every three positions) the bits inside it.
    let h1 = 0x811c9dc5;
    let h2 = 0x9747b28c;
    for (let i = 0; i < key.length; i++) {
      const code = key.charCodeAt(i);
      h1 = Math.imul(h1 ^ code, 0x01000193);
      h2 = Math.imul(h2 + code, 0x5bd1e995) ^ (h2 >>> 13);
    }
    h1 = fmix32(h1);
    h2 = fmix32(h2);
    const base = (h1 & this.blockMask) * WORDS_PER_BLOCK;
    let present = true;
    // 9 bits of hash per position: three from each fresh 32-bit hash.
    let bits = h2;
    for (let i = 0; i < this.bitsPerKey; i++) {
      if (i % 3 === 0 && i > 0) bits = h2 = fmix32(h2 ^ 0x9e3779b9);
      const bit = (bits >>> (9 * (i % 3))) & (BLOCK_BITS - 1);
      const word = base + (bit >>> 5);
      const mask = 1 << (bit & 31);
      if ((this.words[word]! & mask) === 0) {
        present = false;
        this.words[word]! |= mask;
      }
    }
    if (present) this.maybeRepeated += 1;
    return present;
  }
}

function fmix32(value: number): number {
  let h = value;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
