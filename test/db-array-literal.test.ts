// The array parameters the runner writes itself (worker/db/array-literal.ts) read back in Postgres as what was sent.
import { describe, expect, it } from 'vitest';
import { integerArrayLiteral, wordArrayLiteral } from '../worker/db/array-literal.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();

describe('array literals', () => {
  it('integers read back as bigint[] and int[]', async () => {
    const ids = [1, 42, 0, -7, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER];
    const { rows } = await env.pool.query<{ ids: string[]; attempts: number[]; none: string[]; n: number }>(
      'SELECT $1::bigint[]::text[] AS ids, $2::int[] AS attempts, $3::bigint[]::text[] AS none, cardinality($3::bigint[]) AS n',
      [integerArrayLiteral(ids), integerArrayLiteral([1, 2, 3]), integerArrayLiteral([])],
    );
    expect(rows[0]).toEqual({ ids: ids.map(String), attempts: [1, 2, 3], none: [], n: 0 });
  });

  it('words read back as text[]', async () => {
    const states = ['succeeded', 'review_ready', 'canceled', 'partial'];
    const { rows } = await env.pool.query<{ states: string[] }>('SELECT $1::text[] AS states', [wordArrayLiteral(states)]);
    expect(rows[0]!.states).toEqual(states);
  });

  it('refuses what the literal would not carry as it is', () => {
    for (const value of [1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53]) expect(() => integerArrayLiteral([1, value])).toThrow(TypeError);
    for (const value of ['null', 'two words', 'a,b', '"quoted"', '', 'Succeeded', 'x}']) expect(() => wordArrayLiteral(['succeeded', value])).toThrow(TypeError);
  });
});
