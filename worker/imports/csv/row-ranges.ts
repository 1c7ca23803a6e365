// Rows of a CSV file named by line number, as a reviewer writes them to exclude from a finalize: "12,40-90". Kept as
// sorted, merged, inclusive ranges, so "every row from 2 to 5,000,000" costs one pair, and a lookup is a binary search.

/** Line 1 is the header: data rows start at 2. */
const FIRST_ROW = 2;
const MAX_ROW = 2_147_483_647;
/** The most ranges one selection may hold (a list longer than this is a mistake, or a file to fix instead). */
export const MAX_RANGES = 10_000;

export class InvalidRowRangesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidRowRangesError';
  }
}

export class RowRanges {
  private constructor(readonly ranges: ReadonlyArray<readonly [number, number]>) {}

  /** "12,40-90" (spaces allowed); throws InvalidRowRangesError naming the bad part. */
  static parse(text: string): RowRanges {
    const parts = text.split(',').map((part) => part.trim());
    if (parts.length === 0 || parts.every((part) => part === '')) throw new InvalidRowRangesError('no rows given: write line numbers like "12,40-90"');
    if (parts.length > MAX_RANGES) throw new InvalidRowRangesError(`at most ${MAX_RANGES} rows or ranges, got ${parts.length}`);
    const ranges: Array<[number, number]> = [];
    for (const part of parts) {
      const match = /^(\d{1,10})(?:\s*-\s*(\d{1,10}))?$/.exec(part);
      if (!match) throw new InvalidRowRangesError(`"${part}" is not a line number or a range like 40-90`);
      const from = Number(match[1]);
      const to = match[2] === undefined ? from : Number(match[2]);
      if (from < FIRST_ROW || to > MAX_ROW) {
        throw new InvalidRowRangesError(`"${part}": rows are line numbers from ${FIRST_ROW} (line 1 is the header) to ${MAX_ROW}`);
      }
      if (to < from) throw new InvalidRowRangesError(`"${part}": the range ends before it starts`);
      ranges.push([from, to]);
    }
    return RowRanges.of(ranges);
  }

  /** From stored pairs (csv_import_runs.excluded_rows); null or empty gives null. */
  static fromStored(stored: unknown): RowRanges | null {
    if (!Array.isArray(stored) || stored.length === 0) return null;
    return RowRanges.of(stored.map((pair) => [Number((pair as unknown[])[0]), Number((pair as unknown[])[1])] as [number, number]));
  }

  private static of(ranges: Array<[number, number]>): RowRanges {
    ranges.sort((a, b) => a[0] - b[0]);
    const merged: Array<[number, number]> = [];
    for (const [from, to] of ranges) {
      const last = merged[merged.length - 1];
      if (last && from <= last[1] + 1) last[1] = Math.max(last[1], to);
      else merged.push([from, to]);
    }
    return new RowRanges(merged);
  }

  has(row: number): boolean {
    let low = 0;
    let high = this.ranges.length - 1;
    while (low <= high) {
      const middle = (low + high) >> 1;
      const [from, to] = this.ranges[middle]!;
      if (row < from) high = middle - 1;
      else if (row > to) low = middle + 1;
      else return true;
    }
    return false;
  }

  /** How many line numbers the ranges name (rows of the file or not). */
  size(): number {
    return this.ranges.reduce((sum, [from, to]) => sum + to - from + 1, 0);
  }

  toJSON(): Array<[number, number]> {
    return this.ranges.map(([from, to]) => [from, to]);
  }

  /** "12,40-90", as it was written (normalised). */
  toString(): string {
    return this.ranges.map(([from, to]) => (from === to ? String(from) : `${from}-${to}`)).join(',');
  }
}
