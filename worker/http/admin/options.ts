// The admin pages' options and their defaults, apart from the pages (plugin.ts) so that `bulk-import serve` can show
// them in its options without loading Fastify.

export interface AdminOptions {
  /** How long a sign-in lasts. */
  sessionTtlMs: number;
  /** Mark cookies Secure even when the request does not say it came over TLS (no X-Forwarded-Proto: https). */
  secureCookies: boolean;
}

export const DEFAULT_ADMIN_OPTIONS: AdminOptions = { sessionTtlMs: 8 * 60 * 60 * 1000, secureCookies: false };
