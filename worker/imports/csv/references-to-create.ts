// References to create: the distinct reference names (category, supplier …) of the valid rows that their tables lack
// yet, counted while validation reads the file so the review shows them before finalize creates them (reference-ids.ts).
// Per chunk of records, one set-based query per reference column looks up the chunk's names not known to be new;
// only the new names are kept (each with the number of valid rows naming it), so memory grows with the names to
// create, not with the file — and at most MAX_NAMES_TO_CREATE of them per table: a file whose every row names a new
// category (millions of them) would otherwise hold them all (about 250 bytes each). Past it the figure is a floor
// ("more than"), and new names are no longer looked up. A row found to be a duplicate after the read (duplicates.ts) takes its names back: a name
// only duplicates named is not created. The count is as of validation: a name another import or a backend creates in
// between is found at finalize and not created again.
import type { Queryable } from '../../db/pool.js';
import type { ColumnSpec } from './profile.js';
import { referenceColumns } from './target-sql.js';

/** The most new names per reference table that validation counts exactly (see the head of this file). */
export const MAX_NAMES_TO_CREATE = 100_000;

interface Column {
  position: number;
  table: string;
  /** Names of this chunk's valid rows, not yet looked up, with how many rows name each. */
  chunk: Map<string, number>;
  /** Names the table lacked when looked up, with how many valid rows name each. */
  missing: Map<string, number>;
  lookup: string;
  /** More new names than the limit were found: `missing` holds the first of them only. */
  overflowed: boolean;
}

export class ReferencesToCreate {
  private readonly columns: Column[];

  constructor(
    columns: readonly ColumnSpec[],
    private readonly tenant: string,
    private readonly maxNames = MAX_NAMES_TO_CREATE,
  ) {
    this.columns = referenceColumns(columns).map(({ position, table }) => ({
      position,
      table,
      chunk: new Map(),
      missing: new Map(),
      overflowed: false,
      lookup: `SELECT u.name FROM unnest($2::text[]) AS u(name)
WHERE NOT EXISTS (SELECT 1 FROM ${table} r WHERE r.tenant_id = $1 AND r.name = u.name)`,
    }));
  }

  /** A valid row's values, in layout order. */
  add(values: ReadonlyArray<string | null>): void {
    for (const column of this.columns) {
      const name = values[column.position];
      if (name === null || name === undefined) continue;
      const known = column.missing.get(name);
      if (known !== undefined) column.missing.set(name, known + 1);
      else if (!column.overflowed) column.chunk.set(name, (column.chunk.get(name) ?? 0) + 1);
    }
  }

  /** A row added before that turned out not to be written (a duplicate): its names count one row fewer. */
  remove(values: ReadonlyArray<string | null>): void {
    for (const column of this.columns) {
      const name = values[column.position];
      if (name === null || name === undefined) continue;
      const rows = column.missing.get(name);
      if (rows === undefined) continue;
      if (rows <= 1) column.missing.delete(name);
      else column.missing.set(name, rows - 1);
    }
  }

  /** Looks up the names gathered since the last call (one query per reference column that has any). */
  async flush(db: Queryable): Promise<void> {
    for (const column of this.columns) {
      if (column.chunk.size === 0) continue;
      const chunk = column.chunk;
      column.chunk = new Map();
      const { rows } = await db.query<{ name: string }>(column.lookup, [this.tenant, [...chunk.keys()]]);
      for (const row of rows) {
        const known = column.missing.get(row.name);
        if (known === undefined && column.missing.size >= this.maxNames) {
          column.overflowed = true;
          continue;
        }
        column.missing.set(row.name, (known ?? 0) + chunk.get(row.name)!);
      }
    }
  }

  /** Per reference table, how many distinct names finalize will create; undefined when the layout has none. */
  counts(): Record<string, number> | undefined {
    if (this.columns.length === 0) return undefined;
    return Object.fromEntries(this.columns.map((column) => [column.table, column.missing.size]));
  }

  /** The tables whose count is a floor: more new names than MAX_NAMES_TO_CREATE (undefined when none). */
  countedInPart(): string[] | undefined {
    const tables = this.columns.filter((column) => column.overflowed).map((column) => column.table);
    return tables.length > 0 ? tables : undefined;
  }
}
