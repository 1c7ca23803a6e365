// The distinct reference names (categories, suppliers …) of a file's valid rows, collected while validating, so
// finalize can create the missing ones from a short list instead of scanning every staged row again. Bounded: past
// `maxPerColumn` names a column gives up its list (null) and finalize scans the staging for it, so memory stays flat
// however many distinct names a file has.
import type { HeaderLayout } from './header.js';

/** Per staged position (1-based, as text): the names, or null when there were too many to keep. */
export type ReferenceNameLists = Record<string, string[] | null>;

export class ReferenceNames {
  private readonly names = new Map<number, Set<string> | null>();

  constructor(
    layout: HeaderLayout,
    private readonly maxPerColumn = 10_000,
  ) {
    layout.columns.forEach((column, index) => {
      if (column.reference) this.names.set(index, new Set());
    });
  }

  /** Records the reference values of one valid row (values in staged-column order). */
  add(values: ReadonlyArray<string | null>): void {
    for (const [index, names] of this.names) {
      const value = values[index];
      if (names === null || value === null || value === undefined) continue;
      names.add(value);
      if (names.size > this.maxPerColumn) this.names.set(index, null);
    }
  }

  /** The lists to store with the run; every list null when `exact` is false (rows were removed after staging). */
  lists(exact: boolean): ReferenceNameLists {
    const lists: ReferenceNameLists = {};
    for (const [index, names] of this.names) lists[String(index + 1)] = exact && names ? [...names] : null;
    return lists;
  }
}
