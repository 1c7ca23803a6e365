// Every SQL statement about the items of a mass-import run (import_items), one function per verb. Writes that
// record work happen inside the caller's transaction, after context.assertLeaseHeld(tx).
import type { Queryable } from '../../db/pool.js';
import type { ErrorClass } from '../../queue/types.js';

export const ITEM_STATES = ['pending', 'done', 'skipped', 'failed'] as const;
export type ItemState = (typeof ITEM_STATES)[number];

export interface PlannedItem {
  itemNo: number;
  relativePath: string;
  size: number;
  objectKey: string | null;
  /** Unsafe entries are planned as failed at once; files as pending. */
  failure?: { code: string; message: string } | undefined;
}

export interface PendingItem {
  itemNo: number;
  relativePath: string;
  size: number;
  objectKey: string;
  tries: number;
}

export interface ItemRow {
  itemNo: number;
  relativePath: string;
  size: number;
  state: ItemState;
  objectKey: string | null;
  sha256: string | null;
  documentId: number | null;
  errorCode: string | null;
  errorMessage: string | null;
  errorClass: ErrorClass | null;
  tries: number;
  updatedAt: Date;
}

export interface ItemTotals {
  files: number;
  bytes: number;
  pending: number;
  done: number;
  skipped: number;
  failed: number;
  /** Failed items whose error is transient (S3 unavailable after the retries): a new attempt tries them again. */
  failedTransient: number;
  bytesDone: number;
  bytesSkipped: number;
  bytesFailed: number;
}

const INSERT_CHUNK = 5_000;

/**
 * The paths of the run's first and last items in plan order; undefined before it planned (once it has, later attempts
 * resume instead of walking again). The walk reports entries
 * depth first below the source's real path, so every item lies in the directory these two share.
 */
export async function plannedPathSpan(db: Queryable, jobId: number): Promise<{ first: string; last: string } | undefined> {
  const { rows } = await db.query<{ first: string; last: string }>(
    `SELECT (SELECT relative_path FROM import_items WHERE job_id = $1 ORDER BY item_no LIMIT 1) AS first,
            (SELECT relative_path FROM import_items WHERE job_id = $1 ORDER BY item_no DESC LIMIT 1) AS last`,
    [jobId],
  );
  const row = rows[0];
  return row?.first == null || row.last == null ? undefined : { first: row.first, last: row.last };
}

export async function insertPlannedItems(db: Queryable, jobId: number, items: PlannedItem[]): Promise<void> {
  for (let start = 0; start < items.length; start += INSERT_CHUNK) {
    const chunk = items.slice(start, start + INSERT_CHUNK);
    await db.query(
      `INSERT INTO import_items (job_id, item_no, relative_path, size_bytes, object_key, state, error_code, error_message, error_class)
       SELECT $1, no, path, size, key, CASE WHEN code IS NULL THEN 'pending' ELSE 'failed' END, code, message,
              CASE WHEN code IS NULL THEN NULL ELSE 'permanent' END
       FROM unnest($2::int[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[]) AS planned(no, path, size, key, code, message)`,
      [
        jobId,
        chunk.map((item) => item.itemNo),
        chunk.map((item) => item.relativePath),
        chunk.map((item) => item.size),
        chunk.map((item) => item.objectKey),
        chunk.map((item) => item.failure?.code ?? null),
        chunk.map((item) => item.failure?.message ?? null),
      ],
    );
  }
}

/** A new attempt of the run tries again the items that failed only because S3 was unavailable. */
export async function resetTransientFailures(db: Queryable, jobId: number): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE import_items SET state = 'pending', error_code = NULL, error_message = NULL, error_class = NULL, updated_at = now()
     WHERE job_id = $1 AND state = 'failed' AND error_class = 'transient'`,
    [jobId],
  );
  return rowCount ?? 0;
}

/** The next pending items after `afterItemNo`, in plan order (keyset paging over the partial index). */
export async function nextPendingItems(db: Queryable, jobId: number, afterItemNo: number, limit: number): Promise<PendingItem[]> {
  const { rows } = await db.query<{ item_no: number; relative_path: string; size_bytes: number; object_key: string; tries: number }>(
    `SELECT item_no, relative_path, size_bytes, object_key, tries FROM import_items
     WHERE job_id = $1 AND state = 'pending' AND item_no > $2 ORDER BY item_no LIMIT $3`,
    [jobId, afterItemNo, limit],
  );
  return rows.map((row) => ({
    itemNo: row.item_no,
    relativePath: row.relative_path,
    size: row.size_bytes,
    objectKey: row.object_key,
    tries: row.tries,
  }));
}

/** What became of one item, written with the item (and, for `done`, its document) in one transaction. */
export interface ItemOutcomeRecord {
  itemNo: number;
  state: 'done' | 'skipped' | 'failed';
  /** The size actually read (may differ from the plan's when the file changed since). */
  size: number;
  sha256: string | null;
  documentId: number | null;
  tries: number;
  error: { code: string; message: string; errorClass: ErrorClass } | null;
}

/** Records the outcomes of many items of a run in one statement. */
export async function recordItemOutcomes(db: Queryable, jobId: number, outcomes: ItemOutcomeRecord[]): Promise<void> {
  if (outcomes.length === 0) return;
  await db.query(
    `UPDATE import_items AS item SET state = o.state, size_bytes = o.size, sha256 = coalesce(o.sha256, item.sha256),
       document_id = o.document_id, tries = o.tries, error_code = o.code, error_message = o.message,
       error_class = o.class, updated_at = now()
     FROM unnest($2::int[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::int[], $8::text[], $9::text[], $10::text[])
       AS o(item_no, state, size, sha256, document_id, tries, code, message, class)
     WHERE item.job_id = $1 AND item.item_no = o.item_no`,
    [
      jobId,
      outcomes.map((o) => o.itemNo),
      outcomes.map((o) => o.state),
      outcomes.map((o) => o.size),
      outcomes.map((o) => o.sha256),
      outcomes.map((o) => o.documentId),
      outcomes.map((o) => o.tries),
      outcomes.map((o) => o.error?.code ?? null),
      outcomes.map((o) => o.error?.message ?? null),
      outcomes.map((o) => o.error?.errorClass ?? null),
    ],
  );
}

export async function itemTotals(db: Queryable, jobId: number): Promise<ItemTotals> {
  const { rows } = await db.query<Record<string, number>>(
    `SELECT count(*)::int AS files, coalesce(sum(size_bytes), 0)::bigint AS bytes,
       count(*) FILTER (WHERE state = 'pending')::int AS pending,
       count(*) FILTER (WHERE state = 'done')::int AS done,
       count(*) FILTER (WHERE state = 'skipped')::int AS skipped,
       count(*) FILTER (WHERE state = 'failed')::int AS failed,
       count(*) FILTER (WHERE state = 'failed' AND error_class = 'transient')::int AS failed_transient,
       coalesce(sum(size_bytes) FILTER (WHERE state = 'done'), 0)::bigint AS bytes_done,
       coalesce(sum(size_bytes) FILTER (WHERE state = 'skipped'), 0)::bigint AS bytes_skipped,
       coalesce(sum(size_bytes) FILTER (WHERE state = 'failed'), 0)::bigint AS bytes_failed
     FROM import_items WHERE job_id = $1`,
    [jobId],
  );
  const row = rows[0]!;
  return {
    files: row.files!,
    bytes: row.bytes!,
    pending: row.pending!,
    done: row.done!,
    skipped: row.skipped!,
    failed: row.failed!,
    failedTransient: row.failed_transient!,
    bytesDone: row.bytes_done!,
    bytesSkipped: row.bytes_skipped!,
    bytesFailed: row.bytes_failed!,
  };
}

export interface ItemQuery {
  states?: ItemState[] | undefined;
  limit: number;
  offset: number;
  /** plan: in walk order; recent: most recently changed first (error listings). */
  order?: 'plan' | 'recent';
}

/**
 * A page of items in plan order after `afterItemNo` (keyset, for the API: never OFFSET, so the last page of a
 * million-item run costs what the first does).
 */
export async function listItemsAfter(
  db: Queryable,
  jobId: number,
  query: { states?: ItemState[] | undefined; afterItemNo: number; limit: number },
): Promise<ItemRow[]> {
  const states = query.states && query.states.length > 0 ? query.states : null;
  const { rows } = await db.query(
    `SELECT ${ITEM_COLUMNS}
     FROM import_items WHERE job_id = $1 AND ($2::text[] IS NULL OR state = ANY($2)) AND item_no > $3
     ORDER BY item_no LIMIT $4`,
    [jobId, states, query.afterItemNo, query.limit],
  );
  return rows.map(toItemRow);
}

/** The columns toItemRow reads, selected by every listing of items. */
const ITEM_COLUMNS =
  'item_no, relative_path, size_bytes, state, object_key, sha256, document_id, error_code, error_message, error_class, tries, updated_at';

function toItemRow(row: Record<string, unknown>): ItemRow {
  return {
    itemNo: row.item_no as number,
    relativePath: row.relative_path as string,
    size: row.size_bytes as number,
    state: row.state as ItemState,
    objectKey: row.object_key as string | null,
    sha256: row.sha256 as string | null,
    documentId: row.document_id as number | null,
    errorCode: row.error_code as string | null,
    errorMessage: row.error_message as string | null,
    errorClass: row.error_class as ErrorClass | null,
    tries: row.tries as number,
    updatedAt: row.updated_at as Date,
  };
}

export async function listItems(db: Queryable, jobId: number, query: ItemQuery): Promise<{ total: number; items: ItemRow[] }> {
  const states = query.states && query.states.length > 0 ? query.states : null;
  const order = query.order === 'recent' ? 'updated_at DESC, item_no DESC' : 'item_no';
  const [count, page] = await Promise.all([
    db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM import_items WHERE job_id = $1 AND ($2::text[] IS NULL OR state = ANY($2))',
      [jobId, states],
    ),
    db.query(
      `SELECT ${ITEM_COLUMNS}
       FROM import_items WHERE job_id = $1 AND ($2::text[] IS NULL OR state = ANY($2))
       ORDER BY ${order} LIMIT $3 OFFSET $4`,
      [jobId, states, query.limit, query.offset],
    ),
  ]);
  return {
    total: count.rows[0]!.n,
    items: page.rows.map(toItemRow),
  };
}
