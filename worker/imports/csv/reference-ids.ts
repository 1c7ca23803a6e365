// Reference names (category, supplier …) to ids, for the rows finalize writes. Each reference column keeps a cache of
// the ids it has seen; names a batch needs that are not cached are created when missing and looked up, each in its
// own short statement committed at once (never inside a batch transaction, so two imports naming the same new
// category wait on each other for one statement at most). A name the reference table refuses (a constraint the
// profile does not know) costs only the rows that name it: they become row errors of phase 'finalize'.
// A cache is valid while its table has seen no deletion (reference_deletions): each batch checks that count in its
// transaction, and a changed count empties the cache (forget) so the names are looked up again.
// The caches hold at most `maxCached` names per column and start over past that, so memory stays flat however many
// distinct names a file has.
// Finalize's lanes share one ReferenceIds, and a resolve awaits the database column after column: meanwhile another
// lane may start a cache over (past maxCached, a changed deletion count, forget). So a resolve copies the ids of its
// names into a map of its own as it gets them (from the cache or the database), with the deletion count they are
// valid for, and answers from that map; the shared cache is only ever replaced, never emptied in place.
import type { PoolClient } from '../../db/pool.js';
import { sqlState, tenantVisibleDetail } from '../../db/sql-state.js';
import { PermanentJobError } from '../../queue/errors.js';
import type { ColumnSpec } from './profile.js';
import type { RowIssue } from './row-validator.js';
import { show } from './row-validator.js';
import { buildCreateReferencesStatement, buildLookupReferencesStatement, referenceColumns, type NamedStatement } from './target-sql.js';

interface ReferenceColumn {
  /** Position in layout order. */
  position: number;
  column: string;
  table: string;
  ids: Map<string, string>;
  /** The table's deletion count when the cached ids were looked up (null: nothing cached yet). */
  deletions: string | null;
  /** Names the table refused, with the database's reason. */
  refused: Map<string, string>;
  create: NamedStatement;
  lookup: NamedStatement;
}

/** The ids of one column's names for one resolve: its own, whatever other lanes do to the cache meanwhile. */
interface ColumnIds {
  ids: Map<string, string>;
  /** The deletion count `ids` are valid for (null: none yet). */
  deletions: string | null;
  /** Names of the batch the table refused, with the reason. */
  refused: Map<string, string>;
}

/** The rows of a batch with reference names replaced by ids, and the rows that could not be resolved. */
export interface ResolvedRows {
  /** In batch order; null for a row that names a refused reference. */
  values: Array<Array<string | null> | null>;
  /** By index in the batch: why the row cannot be written. */
  refused: Map<number, RowIssue>;
  /** The reference tables whose ids the rows use, with the deletion count their ids are valid for. */
  used: Array<{ table: string; deletions: string }>;
}

const LOOKUP_TRIES = 3;

export class ReferenceIds {
  private readonly columns: ReferenceColumn[];

  constructor(
    columns: readonly ColumnSpec[],
    private readonly tenant: string,
    private readonly jobId: number,
    private readonly maxCached = 50_000,
  ) {
    this.columns = referenceColumns(columns).map(({ position, table }) => ({
      position,
      column: columns[position]!.name,
      table,
      ids: new Map(),
      deletions: null,
      refused: new Map(),
      create: buildCreateReferencesStatement(table),
      lookup: buildLookupReferencesStatement(table),
    }));
  }

  /** Resolves the references of `rows` (values in layout order), creating names their tables lack. */
  async resolve(db: PoolClient, rows: ReadonlyArray<ReadonlyArray<string | null>>): Promise<ResolvedRows> {
    const resolvedColumns: ColumnIds[] = [];
    for (const column of this.columns) {
      const names = new Set<string>();
      for (const row of rows) {
        const name = row[column.position];
        if (name !== null && name !== undefined) names.add(name);
      }
      resolvedColumns.push(await this.resolveColumn(db, column, names));
    }
    const resolved: ResolvedRows = { values: [], refused: new Map(), used: [] };
    const used = this.columns.map(() => false);
    rows.forEach((row, index) => {
      if (this.columns.length === 0) {
        resolved.values.push(row as Array<string | null>);
        return;
      }
      const values = row.slice();
      for (let c = 0; c < this.columns.length; c++) {
        const column = this.columns[c]!;
        const name = row[column.position];
        if (name === null || name === undefined) continue;
        const id = resolvedColumns[c]!.ids.get(name);
        if (id === undefined) {
          const reason = resolvedColumns[c]!.refused.get(name) ?? 'it could not be created';
          resolved.refused.set(index, {
            column: column.column,
            rule: 'database',
            message: `the database refused ${column.column} ${show(name)} (table ${column.table}): ${reason}`,
          });
          resolved.values.push(null);
          return;
        }
        values[column.position] = id;
        used[c] = true;
      }
      resolved.values.push(values);
    });
    this.columns.forEach((column, c) => {
      if (used[c]) resolved.used.push({ table: column.table, deletions: resolvedColumns[c]!.deletions! });
    });
    return resolved;
  }

  /** The ids of `names` in one column: those cached, and the others created when missing and looked up. */
  private async resolveColumn(db: PoolClient, column: ReferenceColumn, names: Set<string>): Promise<ColumnIds> {
    const own: ColumnIds = { ids: new Map(), deletions: null, refused: new Map() };
    // Start over before the batch rather than during it: the cache keeps its names for the batches after this one.
    if (column.ids.size + names.size > this.maxCached) column.ids = new Map();
    // The cache as it is now (synchronously): its ids are valid for its deletion count.
    if (column.deletions !== null) {
      own.deletions = column.deletions;
      for (const name of names) {
        const id = column.ids.get(name);
        if (id !== undefined) own.ids.set(name, id);
      }
    }
    for (const name of names) {
      const reason = column.refused.get(name);
      if (reason !== undefined && !own.ids.has(name)) own.refused.set(name, reason);
    }
    // A create that finds the table's deletion count changed drops the ids taken before: a second pass then looks up
    // the names of the batch that were cached.
    const missing = () => [...names].filter((name) => !own.ids.has(name) && !own.refused.has(name));
    for (let pass = 1; pass <= LOOKUP_TRIES && missing().length > 0; pass++) await this.fetch(db, column, own, missing());
    if (missing().length > 0) throw this.vanished(column, missing());
    return own;
  }

  /** The reference tables, in column order. */
  tableNames(): string[] {
    return this.columns.map((column) => column.table);
  }

  /** Forgets the cached ids of the given tables (rows were deleted from them: look the names up again). */
  forget(tables: readonly string[]): void {
    for (const column of this.columns) {
      if (!tables.includes(column.table)) continue;
      // Replaced, not cleared: a resolve under way keeps the ids it took (with the count they are valid for).
      column.ids = new Map();
      column.deletions = null;
    }
  }

  private async fetch(db: PoolClient, column: ReferenceColumn, own: ColumnIds, names: string[]): Promise<void> {
    names.sort();
    for (let attempt = 1; attempt <= LOOKUP_TRIES; attempt++) {
      await this.create(db, column, own, names);
      const { rows } = await db.query<{ name: string; id: string }>({ name: column.lookup.name, text: column.lookup.text, values: [this.tenant, names] });
      for (const row of rows) own.ids.set(row.name, row.id);
      // Into the cache too, unless another lane started it over for another deletion count meanwhile.
      if (column.deletions === own.deletions) {
        if (column.ids.size + rows.length > this.maxCached) column.ids = new Map();
        for (const row of rows) column.ids.set(row.name, row.id);
      }
      names = names.filter((name) => !own.ids.has(name) && !own.refused.has(name));
      if (names.length === 0) return;
      // Created (or found) and deleted again by someone else before the lookup: once more.
    }
    throw this.vanished(column, names);
  }

  private vanished(column: ReferenceColumn, names: string[]): PermanentJobError {
    return new PermanentJobError(
      `finalize of job ${this.jobId}: ${column.table} ${names.slice(0, 3).map(show).join(', ')} kept disappearing right after being created; ` +
        'something deletes reference rows while imports run',
      'CSV_REFERENCE_VANISHED',
      { table: column.table },
    );
  }

  /**
   * Creates the names; when the table refuses the set, each name alone, so only the refused names are lost. Starts
   * the cache over when the table has seen deletions since it was filled.
   */
  private async create(db: PoolClient, column: ReferenceColumn, own: ColumnIds, names: string[]): Promise<void> {
    const createNames = async (list: string[]): Promise<void> => {
      const { rows } = await db.query<{ deletions: string }>({ name: column.create.name, text: column.create.text, values: [this.tenant, list, this.jobId] });
      const deletions = rows[0]!.deletions;
      if (own.deletions !== deletions) {
        own.ids.clear();
        own.deletions = deletions;
      }
      if (column.deletions !== deletions) {
        column.ids = new Map();
        column.deletions = deletions;
      }
    };
    try {
      await createNames(names);
      return;
    } catch (error) {
      if (!isDataError(error) || names.length === 0) throw error;
    }
    for (const name of names) {
      try {
        await createNames([name]);
      } catch (error) {
        if (!isDataError(error)) throw error;
        // Shown to the tenant as the row's error: a detail that restates the stored row would show a shared table's ids.
        const detail = tenantVisibleDetail(error);
        const reason = `${(error as Error).message}${detail ? ` (${detail})` : ''}`;
        own.refused.set(name, reason);
        if (column.refused.size >= this.maxCached) column.refused = new Map();
        column.refused.set(name, reason);
      }
    }
  }
}

/** Data exceptions (22xxx) and integrity violations (23xxx): the value, not the system, is at fault. */
export function isDataError(error: unknown): boolean {
  const state = sqlState(error);
  return state !== undefined && (state.startsWith('22') || state.startsWith('23'));
}
