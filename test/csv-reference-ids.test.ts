// Finalize's lanes share one ReferenceIds (reference-ids.ts) against the real Postgres. A resolve awaits the database
// column after column; meanwhile another lane may start a column's cache over (past the cache limit, a changed
// deletion count, forget). The first resolve must still answer with the ids it resolved: a row is never refused for
// a name that exists.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PoolClient } from '../worker/db/pool.js';
import { readHeader } from '../worker/imports/csv/header.js';
import { findProfile } from '../worker/imports/csv/profiles/index.js';
import { ReferenceIds, type ResolvedRows } from '../worker/imports/csv/reference-ids.js';
import { HEADER } from './fixtures/csv-products.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();
const profile = findProfile('products')!;
const layout = readHeader(profile, { line: 1, fields: HEADER }, { bucket: 'b', key: 'k', encoding: 'utf-8' });
const columns = layout.columns.map((column) => column.name);
const REFERENCES = ['category', 'supplier', 'location'] as const;
const TABLES = { category: 'categories', supplier: 'suppliers', location: 'locations' } as const;
let jobId: number;
const clients: PoolClient[] = [];

beforeAll(async () => {
  const { rows } = await env.pool.query<{ id: number }>(`INSERT INTO jobs (kind) VALUES ('csv-finalize') RETURNING id`);
  jobId = rows[0]!.id;
  for (let lane = 0; lane < 4; lane++) clients.push(await env.pool.connect());
});
afterAll(() => {
  for (const client of clients) client.release();
});

/** A batch of `count` rows (values in layout order), each naming its own category, supplier and location. */
function batch(prefix: string, count: number): Array<Array<string | null>> {
  return Array.from({ length: count }, (_, i) =>
    columns.map((column) => ((REFERENCES as readonly string[]).includes(column) ? `${prefix} ${column} ${i}` : 'x')),
  );
}

/** A connection whose first statement creating names in `table` waits until `resume()`; `reached` tells it got there. */
function pausedBefore(client: PoolClient, table: string): { db: PoolClient; reached: Promise<void>; resume(): void } {
  let reach!: () => void;
  let resume!: () => void;
  const reached = new Promise<void>((resolve) => (reach = resolve));
  const resumed = new Promise<void>((resolve) => (resume = resolve));
  let paused = false;
  const db = new Proxy(client, {
    get(target, property, receiver) {
      if (property !== 'query') return Reflect.get(target, property, receiver) as unknown;
      return async (config: { text?: string }, ...rest: unknown[]) => {
        if (!paused && typeof config === 'object' && config.text?.includes(`INSERT INTO ${table} `)) {
          paused = true;
          reach();
          await resumed;
        }
        return (target.query as (...args: unknown[]) => Promise<unknown>).call(target, config, ...rest);
      };
    },
  });
  return { db, reached, resume };
}

/** Every row resolved, each reference to the id of the name it wrote. */
async function expectAllResolved(tenant: string, rows: Array<Array<string | null>>, resolved: ResolvedRows): Promise<void> {
  expect([...resolved.refused.values()]).toEqual([]);
  expect(resolved.values).toHaveLength(rows.length);
  for (const reference of REFERENCES) {
    const position = columns.indexOf(reference);
    const { rows: names } = await env.pool.query<{ id: string; name: string }>(`SELECT id::text, name FROM ${TABLES[reference]} WHERE tenant_id = $1`, [tenant]);
    const nameOf = new Map(names.map((row) => [row.id, row.name]));
    expect(resolved.values.map((values) => nameOf.get(values![position]!))).toEqual(rows.map((row) => row[position]));
  }
}

describe('reference ids shared by finalize lanes', () => {
  it('a resolve keeps the ids it resolved when another lane starts the cache over past its limit', async () => {
    const tenant = 'refs-limit';
    // Room for one batch's names per column: the second lane's batch starts every cache over.
    const references = new ReferenceIds(layout.columns, tenant, jobId, 150);
    const first = batch('first', 100);
    const second = batch('second', 100);
    const paused = pausedBefore(clients[0]!, 'suppliers');
    const resolving = references.resolve(paused.db, first);
    // The first lane has its categories and waits before its suppliers; the second lane resolves a whole batch.
    await paused.reached;
    await expectAllResolved(tenant, second, await references.resolve(clients[1]!, second));
    paused.resume();
    await expectAllResolved(tenant, first, await resolving);
  });

  it('a resolve keeps the ids it resolved when forget() starts a cache over meanwhile', async () => {
    const tenant = 'refs-forget';
    const references = new ReferenceIds(layout.columns, tenant, jobId);
    const rows = batch('forget', 50);
    const paused = pausedBefore(clients[0]!, 'locations');
    const resolving = references.resolve(paused.db, rows);
    await paused.reached;
    references.forget(['categories', 'suppliers']);
    paused.resume();
    await expectAllResolved(tenant, rows, await resolving);
  });

  it('a resolve keeps its ids, with the deletion count they are valid for, when another lane sees a deletion', async () => {
    const tenant = 'refs-deleted';
    const references = new ReferenceIds(layout.columns, tenant, jobId);
    const deletions = async () =>
      (await env.pool.query<{ n: string }>(`SELECT coalesce((SELECT deletions FROM reference_deletions WHERE table_name = 'categories'), 0)::text AS n`)).rows[0]!.n;
    await env.pool.query(`INSERT INTO categories (tenant_id, name) VALUES ($1, 'to delete')`, [tenant]);
    const rows = batch('deleted', 50);
    const paused = pausedBefore(clients[0]!, 'suppliers');
    const resolving = references.resolve(paused.db, rows);
    await paused.reached;
    const before = await deletions();
    // A deletion in the table, seen by the second lane's batch: it starts the category cache over.
    await env.pool.query(`DELETE FROM categories WHERE tenant_id = $1 AND name = 'to delete'`, [tenant]);
    const after = await deletions();
    expect(after).not.toBe(before);
    const other = batch('other', 10);
    const second = await references.resolve(clients[1]!, other);
    await expectAllResolved(tenant, other, second);
    expect(second.used).toContainEqual({ table: 'categories', deletions: after });
    paused.resume();
    const first = await resolving;
    await expectAllResolved(tenant, rows, first);
    // Its category ids were looked up before the deletion: the batch transaction's check sees the count moved on.
    expect(first.used).toContainEqual({ table: 'categories', deletions: before });
  });

  it('lanes resolving batches at once with a cache smaller than two batches refuse no row', async () => {
    const tenant = 'refs-lanes';
    const references = new ReferenceIds(layout.columns, tenant, jobId, 150);
    const batches = Array.from({ length: 24 }, (_, index) => batch(`lane batch ${index}`, 100));
    let next = 0;
    const results: Array<[Array<Array<string | null>>, ResolvedRows]> = [];
    await Promise.all(
      clients.map(async (client) => {
        while (next < batches.length) {
          const rows = batches[next++]!;
          results.push([rows, await references.resolve(client, rows)]);
        }
      }),
    );
    expect(results).toHaveLength(batches.length);
    for (const [rows, resolved] of results) await expectAllResolved(tenant, rows, resolved);
  });

  it('a name the table refuses is a row error that does not restate the stored row (ids of a table every tenant writes)', async () => {
    const tenant = 'refs-check';
    await env.pool.query('ALTER TABLE categories ADD CONSTRAINT refs_check_short_name CHECK (length(name) <= 40)');
    try {
      const references = new ReferenceIds(layout.columns, tenant, jobId);
      const rows = batch('check', 2);
      const long = 'a category name longer than the forty characters allowed';
      rows[1]![columns.indexOf('category')] = long;
      const resolved = await references.resolve(clients[2]!, rows);
      const issue = resolved.refused.get(1);
      expect(issue?.message).toMatch(/^the database refused category "a category/);
      expect(issue?.message).toMatch(/refs_check_short_name/);
      // The detail ("Failing row contains (<id>, refs-check, …, <timestamp>)") would tell the tenant the next id.
      expect(issue?.message).not.toMatch(/Failing row|\(\d+, refs-check/);
      expect(resolved.refused.has(0)).toBe(false);
    } finally {
      await env.pool.query('ALTER TABLE categories DROP CONSTRAINT refs_check_short_name');
    }
  });
});
