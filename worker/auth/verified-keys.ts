// A small cache of verified API keys for `bulk-import serve`, so a request costs one statement (its work), not two
// (the key lookup first). Keyed by the SHA-256 of the bearer token — the token itself is never kept — and bounded in
// size and age. Revocation stays immediate: entries are served only while a LISTEN session on
// bulk_import_api_key_revoked is connected (revokeApiKey notifies in the same statement, so every server hears of a
// revocation at its commit); while that session is down every request is checked against the table, and on each
// (re)connect the cache starts empty, since notifications sent meanwhile were missed. A revocation in this process
// (admin pages, tests) is applied before revokeApiKey returns. Entries also expire after ttlMs, the bound on how
// long a key could outlive a notification that never came. The same session hears sign-outs of admin sessions
// (bulk_import_admin_session_ended) and passes them on, with revocations, to what outlives a request (onRevocation).
import type { DatabaseTarget } from '../db/connection.js';
import { ListenSession } from '../db/listen-session.js';
import type { Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { ADMIN_SESSION_ENDED_CHANNEL } from './admin-sessions.js';
import { API_KEY_REVOKED_CHANNEL, findActiveApiKey, hashApiKey, looksLikeApiKey, onLocalRevocation, type ApiKey } from './api-keys.js';

/**
 * What a request that outlives its authentication (an event stream) must stop for: a revoked key, a signed-out admin
 * session, or null when some may have been missed (the listener reconnected): check the ones you hold again.
 */
export type AccessEnded = { keyId: number } | { sessionId: string } | null;

export interface VerifiedKeyOptions {
  /** How long a verified key is trusted without a new lookup. Default 10 s. */
  ttlMs?: number;
  /** Keys kept at most; the oldest entry goes first. Default 1,000. */
  maxEntries?: number;
}

export class VerifiedKeyCache {
  private readonly entries = new Map<string, { key: ApiKey; until: number }>();
  /** Bumped by every revocation: a lookup that began before one does not fill the cache. */
  private generation = 0;
  private readonly session: ListenSession | undefined;
  private listening = false;
  private readonly unsubscribe: () => void;
  private readonly revocationListeners = new Set<(ended: AccessEnded) => void>();
  private readonly ttlMs: number;
  private readonly maxEntries: number;

  constructor(
    private readonly db: Queryable,
    /** The database to LISTEN on; undefined keeps the cache off (every request looks its key up). */
    database: DatabaseTarget | undefined,
    log: Logger,
    options: VerifiedKeyOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 10_000;
    this.maxEntries = options.maxEntries ?? 1_000;
    this.unsubscribe = onLocalRevocation((keyId) => this.forget(keyId));
    if (!database) return;
    this.session = new ListenSession({
      database,
      log,
      channels: [API_KEY_REVOKED_CHANNEL, ADMIN_SESSION_ENDED_CHANNEL],
      applicationName: 'bulk-import-api-keys',
      downMessage: 'API key revocation listener is not connected; keys are looked up on every request',
      onNotification: (channel, payload) => {
        if (channel === API_KEY_REVOKED_CHANNEL) this.forget(Number(payload));
        else if (channel === ADMIN_SESSION_ENDED_CHANNEL) this.tell({ sessionId: payload });
      },
      // Revocations sent while the session was away were missed: start empty.
      onConnected: () => {
        this.off();
        this.listening = true;
        this.tell(null);
      },
      onDown: () => {
        this.off();
      },
    });
  }

  /** True while entries are served (the revocation listener is connected). */
  get active(): boolean {
    return this.listening;
  }

  async start(): Promise<void> {
    await this.session?.start();
  }

  /**
   * The active key this bearer token is, or null (unknown, malformed or revoked). `beforeLookup` runs only when the
   * key must be looked up in the table (not cached): the caller's chance to refuse first (the API's rate limit).
   */
  async find(token: string, beforeLookup?: () => Promise<void>): Promise<ApiKey | null> {
    if (!looksLikeApiKey(token)) return null;
    const id = hashApiKey(token).toString('base64');
    const now = Date.now();
    if (this.listening) {
      const entry = this.entries.get(id);
      if (entry && entry.until > now) return entry.key;
      if (entry) this.entries.delete(id);
    }
    await beforeLookup?.();
    const generation = this.generation;
    const key = await findActiveApiKey(this.db, token);
    if (key && this.listening && generation === this.generation) {
      this.entries.set(id, { key, until: now + this.ttlMs });
      if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    }
    return key;
  }

  /** Drops a revoked key. */
  forget(keyId: number): void {
    this.generation += 1;
    for (const [id, entry] of this.entries) if (entry.key.id === keyId) this.entries.delete(id);
    this.tell({ keyId });
  }

  /**
   * For what outlives a request (an event stream): `listener` hears each revoked key and each signed-out session as
   * this process learns of it, and null when some may have been missed (the listener (re)connected).
   */
  onRevocation(listener: (ended: AccessEnded) => void): () => void {
    this.revocationListeners.add(listener);
    return () => this.revocationListeners.delete(listener);
  }

  private tell(ended: AccessEnded): void {
    for (const listener of this.revocationListeners) listener(ended);
  }

  private off(): void {
    this.listening = false;
    this.generation += 1;
    this.entries.clear();
  }

  async stop(): Promise<void> {
    this.unsubscribe();
    this.off();
    await this.session?.stop();
  }
}
