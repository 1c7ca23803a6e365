// Integer and word arrays sent as Postgres array literals ('{1,2,3}', '{succeeded,canceled}') built with one join. pg writes an array parameter
// element by element, each converted and concatenated on its own; the runner sends hundreds of ids with every claim
// (the jobs it still holds) and every completion batch, and that writing was the worker's largest allocation per job
// after the attempt itself (bench:queue's black box, a sampling heap profile).

/** `values` as an array literal for a `$n::bigint[]` or `$n::int[]` parameter; throws on anything but safe integers. */
export function integerArrayLiteral(values: readonly number[]): string {
  for (const value of values) {
    if (!Number.isSafeInteger(value)) throw new TypeError(`an integer array parameter got ${String(value)}`);
  }
  return `{${values.join(',')}}`;
}

/** Words that need no quoting in an array literal (and are not NULL), for a `$n::text[]` parameter of known values. */
export function wordArrayLiteral(values: readonly string[]): string {
  for (const value of values) {
    if (!/^[a-z][a-z_]*$/.test(value) || value === 'null') throw new TypeError(`a word array parameter got ${JSON.stringify(value)}`);
  }
  return `{${values.join(',')}}`;
}
