// The SQLSTATE of an error thrown by pg (a five-character code such as 23505), or undefined for anything else.

export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/**
 * not_null_violation and check_violation: their detail restates the refused row as it would have been stored ("Failing
 * row contains (…)"): besides the tenant's own fields, what it never sent — the row's id in a table every tenant
 * writes (how many rows all tenants have), the tenant, timestamps.
 */
const ROW_RESTATING_STATES = new Set(['23502', '23514']);

/**
 * The detail of a database refusal that a tenant may read (a row error of its import): none when it restates the
 * stored row. Decided by the SQLSTATE, whatever language the server writes in.
 */
export function tenantVisibleDetail(error: unknown): string | undefined {
  const detail = (error as { detail?: unknown } | null)?.detail;
  if (typeof detail !== 'string' || detail === '' || ROW_RESTATING_STATES.has(sqlState(error) ?? '')) return undefined;
  return detail;
}
