// References to create: the distinct reference names (category, supplier …) of the valid rows that their tables lack
// yet, counted while validation reads the file so the review shows them before finalize creates them (reference-ids.ts).
// Per chunk of records, one set-based query per reference column looks up the chunk's names not known to be new;
// only the new names are kept, so memory grows with the names to create, not with the file. The count is as of
// validation: a name another import or a backend creates in between is found at finalize and not created again.
import type { Queryable } from '../../db/pool.js';
import type { ColumnSpec } from './profile.js';
import { referenceColumns } from './target-sql.js';

interface Column {
  position: number;
  table: string;
  /** Names of this chunk's valid rows, not yet looked up. */
  chunk: Set<string>;
  /** Names the table lacked when looked up. */
  missing: Set<string>;
  lookup: string;
}

export class ReferencesToCreate {
  private readonly columns: Column[];

  constructor(
    columns: readonly ColumnSpec[],
    private readonly tenant: string,
  ) {
    this.columns = referenceColumns(columns).map(({ position, table }) => ({
      position,
      table,
      chunk: new Set(),
      missing: new Set(),
      lookup: `SELECT u.name FROM unnest($2::text[]) AS u(name)
WHERE NOT EXISTS (SELECT 1 FROM ${table} r WHERE r.tenant_id = $1 AND r.name = u.name)`,
    }));
  }

  /** A valid row's values, in layout order. */
  add(values: ReadonlyArray<string | null>): void {
    for (const column of this.columns) {
      const name = values[column.position];
      if (name !== null && name !== undefined && !column.missing.has(name)) column.chunk.add(name);
    }
  }

  /** Looks up the names gathered since the last call (one query per reference column that has any). */
  async flush(db: Queryable): Promise<void> {
    for (const column of this.columns) {
      if (column.chunk.size === 0) continue;
      const names = [...column.chunk];
      column.chunk.clear();
      const { rows } = await db.query<{ name: string }>(column.lookup, [this.tenant, names]);
      for (const row of rows) column.missing.add(row.name);
    }
  }

  /** Per reference table, how many distinct names finalize will create; undefined when the layout has none. */
  counts(): Record<string, number> | undefined {
    if (this.columns.length === 0) return undefined;
    return Object.fromEntries(this.columns.map((column) => [column.table, column.missing.size]));
  }
}
