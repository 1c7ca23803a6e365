// A set of row numbers as a bit per row (125 KB per million rows): which rows of a file validation flagged as maybe
// repeating a key, and which rows finalize skips. Grows with the highest row added.
export class RowSet {
  private bits = new Uint32Array(1024);
  size = 0;

  add(row: number): void {
    const word = row >>> 5;
    if (word >= this.bits.length) {
      let length = this.bits.length;
      while (length <= word) length *= 2;
      const grown = new Uint32Array(length);
      grown.set(this.bits);
      this.bits = grown;
    }
    const mask = 1 << (row & 31);
    if ((this.bits[word]! & mask) === 0) {
      this.bits[word]! |= mask;
      this.size += 1;
    }
  }

  has(row: number): boolean {
    const word = row >>> 5;
    return word < this.bits.length && (this.bits[word]! & (1 << (row & 31))) !== 0;
  }
}
