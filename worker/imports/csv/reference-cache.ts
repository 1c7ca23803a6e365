// The names of reference rows (categories, suppliers, locations …) a finalize knows to exist, with their ids, so a
// batch only asks the database about names it has not seen yet. Consistent by construction: an entry is added only
// after the transaction that created or found it has committed (never from a rolled-back insert), reference rows
// are never deleted by imports, and another import's rows enter the cache only once they are committed and found.
// Bounded: past `maxPerTable` names a table's further names are simply resolved by the database every batch, so
// memory stays flat however many distinct names a file has.

export class ReferenceCache {
  private readonly ids = new Map<string, Map<string, number>>();
  /** The JSON parameter of each table, rebuilt only when the table's entries change. */
  private readonly json = new Map<string, string>();

  constructor(private readonly maxPerTable = 2_000) {}

  /** The known names of `table` as a JSON object { name: id }, the statement parameter. */
  parameterFor(table: string): string {
    let text = this.json.get(table);
    if (text === undefined) {
      text = JSON.stringify(Object.fromEntries(this.ids.get(table) ?? []));
      this.json.set(table, text);
    }
    return text;
  }

  /** Adds committed names and ids. */
  learn(table: string, learned: Record<string, number>): void {
    const names = Object.keys(learned);
    if (names.length === 0) return;
    let entries = this.ids.get(table);
    if (!entries) this.ids.set(table, (entries = new Map()));
    for (const name of names) {
      if (entries.size >= this.maxPerTable) break;
      entries.set(name, learned[name]!);
    }
    this.json.delete(table);
  }

  size(table: string): number {
    return this.ids.get(table)?.size ?? 0;
  }
}
