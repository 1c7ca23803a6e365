// The SQLSTATE of an error thrown by pg (a five-character code such as 23505), or undefined for anything else.

export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}
