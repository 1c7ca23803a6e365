// API keys of `bulk-import serve`: made, listed and revoked by `bulk-import api-keys`, checked on every request. A key
// is shown once, when it is made; the table holds only its SHA-256 (a key is 32 random bytes, so a slow password
// hash would add nothing but latency) and its public first characters.
import { hash, randomBytes } from 'node:crypto';
import type { Queryable } from '../db/pool.js';
import { TENANT_PATTERN, TENANT_RULE } from '../imports/tenant.js';

export const API_KEY_ROLES = ['tenant', 'operator'] as const;
export type ApiKeyRole = (typeof API_KEY_ROLES)[number];

/** A key name: the actor of every action taken with the key. */
export const API_KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const KEY_PREFIX = 'bik_';
/** `bik_` + 43 base64url characters (32 bytes). */
const KEY_FORM = /^bik_[A-Za-z0-9_-]{43}$/;
/** What `list` shows of a key: enough to tell keys apart, far too little to guess the rest. */
const SHOWN_CHARS = 12;

export class ApiKeyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ApiKeyError';
  }
}

export interface ApiKey {
  id: number;
  name: string;
  role: ApiKeyRole;
  /** The tenant of a tenant key; null for an operator key. */
  tenantId: string | null;
  /** The first characters of the key. */
  prefix: string;
  createdAt: Date;
  revokedAt: Date | null;
}

export function hashApiKey(key: string): Buffer {
  // One-shot: about a tenth of a createHash().update().digest() chain, and every API request hashes its key.
  return hash('sha256', key, 'buffer');
}

/** True when the text has the form of a key (checked before any lookup, so junk never reaches the database). */
export function looksLikeApiKey(text: string): boolean {
  return KEY_FORM.test(text);
}

/** An `api_keys` row (its id, name, role, tenant_id, key_prefix, created_at, revoked_at) as an ApiKey. */
export function toApiKey(row: Record<string, unknown>): ApiKey {
  return {
    id: Number(row.id),
    name: row.name as string,
    role: row.role as ApiKeyRole,
    tenantId: (row.tenant_id as string | null) ?? null,
    prefix: row.key_prefix as string,
    createdAt: row.created_at as Date,
    revokedAt: (row.revoked_at as Date | null) ?? null,
  };
}

const COLUMNS = 'id, name, role, tenant_id, key_prefix, created_at, revoked_at';

export interface NewApiKey {
  name: string;
  role: ApiKeyRole;
  tenantId?: string | null | undefined;
}

/** Makes a key; returns it (the only time it exists outside the caller) with its record. */
export async function createApiKey(db: Queryable, request: NewApiKey): Promise<{ key: string; apiKey: ApiKey }> {
  if (!API_KEY_NAME.test(request.name)) throw new ApiKeyError('a key name is 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit');
  if (!(API_KEY_ROLES as readonly string[]).includes(request.role)) throw new ApiKeyError(`a key's role is ${API_KEY_ROLES.join(' or ')}`);
  const tenantId = request.tenantId ?? null;
  if (request.role === 'tenant' && (tenantId === null || !TENANT_PATTERN.test(tenantId))) {
    throw new ApiKeyError(`a tenant key needs --tenant (${TENANT_RULE})`);
  }
  if (request.role === 'operator' && tenantId !== null) throw new ApiKeyError('an operator key sees every tenant: do not give --tenant');
  const key = `${KEY_PREFIX}${randomBytes(32).toString('base64url')}`;
  try {
    const { rows } = await db.query(
      `INSERT INTO api_keys (name, role, tenant_id, key_prefix, key_hash) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
      [request.name, request.role, tenantId, key.slice(0, SHOWN_CHARS), hashApiKey(key)],
    );
    return { key, apiKey: toApiKey(rows[0]!) };
  } catch (error) {
    if ((error as { code?: string }).code === '23505') {
      throw new ApiKeyError(`an active key named ${request.name} exists: revoke it first, or choose another name`);
    }
    throw error;
  }
}

export async function listApiKeys(db: Queryable, options: { includeRevoked?: boolean } = {}): Promise<ApiKey[]> {
  const { rows } = await db.query(
    `SELECT ${COLUMNS} FROM api_keys WHERE $1 OR revoked_at IS NULL ORDER BY name, id`,
    [options.includeRevoked ?? false],
  );
  return rows.map(toApiKey);
}

/** Payload: the id of a revoked key. API servers drop it from their verified-key caches (verified-keys.ts). */
export const API_KEY_REVOKED_CHANNEL = 'bulk_import_api_key_revoked';

type RevocationHook = (keyId: number) => void;
const revocationHooks = new Set<RevocationHook>();

/** Calls `hook` with the id of every key this process revokes, once committed; returns the unsubscribe. */
export function onLocalRevocation(hook: RevocationHook): () => void {
  revocationHooks.add(hook);
  return () => revocationHooks.delete(hook);
}

/** Of these key ids, the ones still active (not revoked). */
export async function activeApiKeyIds(db: Queryable, ids: number[]): Promise<Set<number>> {
  const { rows } = await db.query<{ id: number }>('SELECT id FROM api_keys WHERE id = ANY($1::bigint[]) AND revoked_at IS NULL', [ids]);
  return new Set(rows.map((row) => Number(row.id)));
}

/**
 * Revokes the active key of that name; its next request is refused. API servers learn it from the NOTIFY sent in the
 * same statement (delivered at commit), and servers of this process at once.
 */
export async function revokeApiKey(db: Queryable, name: string): Promise<ApiKey> {
  const { rows } = await db.query(
    `WITH revoked AS (
       UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL RETURNING ${COLUMNS}
     )
     SELECT revoked.*, pg_notify('${API_KEY_REVOKED_CHANNEL}', revoked.id::text) AS notified FROM revoked`,
    [name],
  );
  if (!rows[0]) throw new ApiKeyError(`no active key named ${name}`);
  const revoked = toApiKey(rows[0]);
  for (const hook of revocationHooks) hook(revoked.id);
  return revoked;
}

/** The active key this text is, or null (unknown, malformed or revoked). */
export async function findActiveApiKey(db: Queryable, key: string): Promise<ApiKey | null> {
  if (!looksLikeApiKey(key)) return null;
  const { rows } = await db.query(`SELECT ${COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`, [hashApiKey(key)]);
  return rows[0] ? toApiKey(rows[0]) : null;
}
