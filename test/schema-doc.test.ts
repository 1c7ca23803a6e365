// docs/SCHEMA.md names every table, index, trigger and function the migrations leave in the database, and names
// nothing else in its "object" column: a migration that adds one, or drops one the page still lists, fails here.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();
const SCHEMA_DOC = readFileSync(new URL('../docs/SCHEMA.md', import.meta.url), 'utf8');

async function databaseObjects(): Promise<string[]> {
  const { rows } = await env.pool.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')
     UNION SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND indexname NOT LIKE '%\\_pkey'
     UNION SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND NOT t.tgisinternal
     UNION SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'
     ORDER BY 1`,
  );
  return rows.map((row) => row.name);
}

/** The backticked names in the first cell of every table row of the page. */
function documentedObjects(): Set<string> {
  const names = new Set<string>();
  for (const line of SCHEMA_DOC.split('\n')) {
    const cell = /^\|([^|]+)\|/.exec(line)?.[1];
    if (cell) for (const match of cell.matchAll(/`([a-z_][a-z0-9_]*)`/g)) names.add(match[1]!);
  }
  return names;
}

describe('docs/SCHEMA.md', () => {
  it('lists every table, index, trigger and function of the migrated database, and nothing that is gone', async () => {
    const inDatabase = await databaseObjects();
    const documented = documentedObjects();
    const inText = (name: string) => documented.has(name) || SCHEMA_DOC.includes(`\`${name}\``);
    expect({
      undocumented: inDatabase.filter((name) => !inText(name)),
      stale: [...documented].filter((name) => !inDatabase.includes(name)),
    }).toEqual({ undocumented: [], stale: [] });
  });
});
