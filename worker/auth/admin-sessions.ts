// Sessions of the admin pages: a person signs in with an API key and the browser holds a session token in a cookie.
// The table (admin_sessions) holds only the token's SHA-256; a session acts as its key (same role, tenant and name),
// and ends when it expires, when the person signs out, or when the key is revoked (the lookup joins active keys).
// The CSRF token of a session is an HMAC of its token: bound to the session, never stored.
import { createHmac, hash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Queryable } from '../db/pool.js';
import { toApiKey, type ApiKey } from './api-keys.js';

/** 32 random bytes, base64url: 43 characters. */
const TOKEN_FORM = /^[A-Za-z0-9_-]{43}$/;

export const hashSessionToken = (token: string): Buffer => hash('sha256', token, 'buffer');

/** True when the text has the form of a session token (junk never reaches the database). */
export const looksLikeSessionToken = (text: string): boolean => TOKEN_FORM.test(text);

/** The CSRF token of a session: what every form of the session carries back. */
export function csrfTokenFor(sessionToken: string): string {
  return createHmac('sha256', sessionToken).update('bulk-import admin csrf').digest('base64url');
}

/** Constant-time check of a submitted CSRF token against the session's. */
export function csrfTokenMatches(sessionToken: string, submitted: unknown): boolean {
  if (typeof submitted !== 'string') return false;
  const expected = Buffer.from(csrfTokenFor(sessionToken));
  const given = Buffer.from(submitted);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export interface AdminSession {
  key: ApiKey;
  expiresAt: Date;
}

/** Starts a session for an active key; returns its token (the only time it exists outside the browser). */
export async function createAdminSession(db: Queryable, apiKeyId: number, ttlMs: number): Promise<{ token: string; expiresAt: Date }> {
  const token = randomBytes(32).toString('base64url');
  // Expired sessions of every key go at each sign-in: the table holds live sessions and a few stale ones.
  await db.query('DELETE FROM admin_sessions WHERE expires_at < now()');
  const { rows } = await db.query<{ expires_at: Date }>(
    `INSERT INTO admin_sessions (token_hash, api_key_id, expires_at) VALUES ($1, $2, now() + $3 * interval '1 millisecond')
     RETURNING expires_at`,
    [hashSessionToken(token), apiKeyId, ttlMs],
  );
  return { token, expiresAt: rows[0]!.expires_at };
}

/** The live session of this token and its active key, or null (unknown, expired, signed out, key revoked). */
export async function findAdminSession(db: Queryable, token: string): Promise<AdminSession | null> {
  if (!looksLikeSessionToken(token)) return null;
  const { rows } = await db.query(
    `SELECT k.id, k.name, k.role, k.tenant_id, k.key_prefix, k.created_at, k.revoked_at, s.expires_at
     FROM admin_sessions s JOIN api_keys k ON k.id = s.api_key_id
     WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL`,
    [hashSessionToken(token)],
  );
  const row = rows[0];
  if (!row) return null;
  return {
    key: toApiKey(row),
    expiresAt: row.expires_at as Date,
  };
}

/** A session's id outside the browser: the hex of its token's hash (what the table holds; it signs nobody in). */
export const sessionIdOf = (token: string): string => hashSessionToken(token).toString('hex');

/** Payload: the id of a session signed out. API servers end the event streams it opened (verified-keys.ts). */
export const ADMIN_SESSION_ENDED_CHANNEL = 'bulk_import_admin_session_ended';

/**
 * Signs out: the token signs nobody in any more, and the streams the session opened end (the NOTIFY in the same
 * statement reaches every API server at commit).
 */
export async function endAdminSession(db: Queryable, token: string): Promise<void> {
  if (!looksLikeSessionToken(token)) return;
  await db.query(
    `WITH ended AS (DELETE FROM admin_sessions WHERE token_hash = $1 RETURNING token_hash)
     SELECT pg_notify('${ADMIN_SESSION_ENDED_CHANNEL}', encode(token_hash, 'hex')) FROM ended`,
    [hashSessionToken(token)],
  );
}

/** Of these session ids, the ones still live (not signed out, not expired, their key not revoked). */
export async function liveAdminSessionIds(db: Queryable, ids: string[]): Promise<Set<string>> {
  const { rows } = await db.query<{ id: string }>(
    `SELECT encode(s.token_hash, 'hex') AS id FROM admin_sessions s JOIN api_keys k ON k.id = s.api_key_id
     WHERE s.token_hash = ANY($1::bytea[]) AND s.expires_at > now() AND k.revoked_at IS NULL`,
    [ids.map((id) => Buffer.from(id, 'hex'))],
  );
  return new Set(rows.map((row) => row.id));
}
