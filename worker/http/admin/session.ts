// The admin pages' session cookie and CSRF checks. The cookie holds the session token (HttpOnly: no script reads it;
// SameSite=Strict: no other site's page sends it; Secure behind TLS, and then named `__Host-…`; Max-Age = the session's
// life). Every POST is refused when the browser says it came from another origin (requireSameOrigin); every POST of a
// signed-in page also carries the session's CSRF token (a synchronizer token derived from the session, checked in
// constant time); the sign-in form, made before there is a session, carries a random token that must equal a
// short-lived cookie of its own (double submit).
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { csrfTokenMatches, findAdminSession, sessionIdOf } from '../../auth/admin-sessions.js';
import type { Queryable } from '../../db/pool.js';
import { ApiError } from '../errors.js';

/** The cookies' names over plain HTTP; over TLS each is `__Host-` and the name (cookieName). */
export const SESSION_COOKIE = 'bi_admin_session';
export const SIGN_IN_COOKIE = 'bi_admin_sign_in';
type AdminCookie = typeof SESSION_COOKIE | typeof SIGN_IN_COOKIE;
/** The form field every POST carries its CSRF token in. */
export const CSRF_FIELD = 'csrf';

export interface AdminCookieOptions {
  /** Always mark cookies Secure (the server is behind TLS that does not say so with X-Forwarded-Proto). */
  secureCookies: boolean;
}

/**
 * The request's cookies (a missing or malformed header is no cookies). A name the request carries more than once is
 * left out: two cookies of one name mean that another site of the same parent domain set one of its own beside ours
 * (a sibling subdomain may set `Domain=.example.com` cookies, and SameSite does not stop it). Reading the first would
 * let it choose: sign the victim into the attacker's session, or pass the sign-in check with a token it knows. Without
 * its cookie the request is simply not signed in; the sign-in page says why (duplicatedCookies).
 */
export function readCookies(request: FastifyRequest): Map<string, string> {
  const { cookies, duplicated } = parseCookies(request);
  for (const name of duplicated) cookies.delete(name);
  return cookies;
}

/** Which of the admin cookies the request carries more than once (readCookies ignores those). */
export function duplicatedCookies(request: FastifyRequest): string[] {
  const ours = [cookieName(request, SESSION_COOKIE), cookieName(request, SIGN_IN_COOKIE)];
  return [...parseCookies(request).duplicated].filter((name) => ours.includes(name));
}

/** The value of one of the admin cookies, under the name this request's cookies have (cookieName). */
export function readAdminCookie(request: FastifyRequest, cookie: AdminCookie): string | undefined {
  return readCookies(request).get(cookieName(request, cookie));
}

/** The Cookie header: the first value of each name (decoded), and the names it carries more than once. */
function parseCookies(request: FastifyRequest): { cookies: Map<string, string>; duplicated: Set<string> } {
  const cookies = new Map<string, string>();
  const seen = new Set<string>();
  const duplicated = new Set<string>();
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const index = part.indexOf('=');
    if (index <= 0) continue;
    const name = part.slice(0, index).trim();
    if (seen.has(name)) {
      duplicated.add(name);
      continue;
    }
    seen.add(name);
    try {
      cookies.set(name, decodeURIComponent(part.slice(index + 1).trim()));
    } catch {
      // not percent-encoded properly: not one of ours
    }
  }
  return { cookies, duplicated };
}

/**
 * True when the request says the browser reached us over TLS: directly, or through a proxy or load balancer that says
 * so (X-Forwarded-Proto; a browser cannot set it, so a page elsewhere cannot change what its victim's request says).
 */
function requestSaysTls(request: FastifyRequest): boolean {
  if (request.protocol === 'https') return true;
  const forwarded = request.headers['x-forwarded-proto'];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(',')[0]?.trim().toLowerCase();
  return first === 'https';
}

/** True when the browser reached us over TLS as far as we know: the request says so, or `--secure-cookies`. */
function overTls(request: FastifyRequest, options: AdminCookieOptions): boolean {
  return options.secureCookies || requestSaysTls(request);
}

/**
 * An admin cookie's name for this request: `__Host-` and the name when the request says it came over TLS. A browser
 * keeps such a cookie only when it is Secure, has Path=/ and no Domain, so no other host — a sibling subdomain that may
 * set `Domain=example.com` cookies — can plant one (a session of its own, a sign-in token it knows); cookies of the
 * plain names are then not read at all. Decided by the request alone, as the routes that read the session cookie
 * without the admin options do (server.ts): behind TLS that does not say so (`--secure-cookies` only) the plain names
 * stay, Secure.
 */
export function cookieName(request: FastifyRequest, cookie: AdminCookie): string {
  return requestSaysTls(request) ? `__Host-${cookie}` : cookie;
}

/**
 * Set-Cookie for one of the admin cookies (its name by cookieName). `path` applies to the plain names only: a
 * `__Host-` cookie must have Path=/.
 */
export function cookieHeader(
  request: FastifyRequest,
  options: AdminCookieOptions,
  cookie: AdminCookie,
  value: string,
  maxAgeSeconds: number,
  path = '/',
): string {
  const name = cookieName(request, cookie);
  const parts = [
    `${name}=${encodeURIComponent(value)}`,
    `Path=${name === cookie ? path : '/'}`,
    `Max-Age=${Math.max(0, Math.floor(maxAgeSeconds))}`,
    'HttpOnly',
    'SameSite=Strict',
  ];
  if (overTls(request, options)) parts.push('Secure');
  return parts.join('; ');
}

/** An Origin header's `scheme://host[:port]` (http or https) as a URL, or null when it is none (`null`, garbage). */
function originOf(text: string): URL | null {
  try {
    const url = new URL(text);
    return (url.protocol === 'https:' || url.protocol === 'http:') && url.origin === text.toLowerCase() ? url : null;
  } catch {
    return null;
  }
}

/** A Host header's `host[:port]` as a URL of this scheme would have it (no default port), or null when it is none. */
function hostOf(protocol: string, host: string): string | null {
  try {
    const url = new URL(`${protocol}//${host}`);
    return url.pathname === '/' && !url.search && !url.hash && !url.username && !url.password ? url.host : null;
  } catch {
    return null;
  }
}

const header = (request: FastifyRequest, name: string): string | undefined => {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(',') : value;
};

/**
 * Refuses (403 CSRF_REFUSED, as a bad CSRF token) a POST that a browser says came from a page of another origin: a
 * `Sec-Fetch-Site` other than `same-origin` (or `none`: typed or reloaded by the user, which no page can cause), or an
 * `Origin` that is not this server's own. A sibling subdomain is same-site, so SameSite cookies and the double-submit
 * sign-in token (whose cookie such a site can plant) do not stop it; this does. This server's own origin is the host
 * the request was sent to (Host, or X-Forwarded-Host with --trust-proxy) with https when the request says it came over
 * TLS; when it does not (plain HTTP, or TLS that does not say so: `--secure-cookies`) an https or http Origin of that
 * host is taken. Browsers send both headers with every POST; a request with neither (curl, a script) is no browser's
 * and passes on to the CSRF token checks, which it must pass as before.
 */
export function requireSameOrigin(request: FastifyRequest): void {
  const refused = () =>
    new ApiError(403, 'CSRF_REFUSED', "the form was sent from a page of another site: open this site's own page and try again");
  const site = header(request, 'sec-fetch-site');
  if (site !== undefined && site !== 'same-origin' && site !== 'none') throw refused();
  const origin = header(request, 'origin');
  if (origin === undefined) return;
  const from = originOf(origin);
  const tls = requestSaysTls(request);
  const own = from && (!tls || from.protocol === 'https:') ? hostOf(from.protocol, request.host) : null;
  if (!from || own === null || own !== from.host) throw refused();
}

export function addCookie(reply: FastifyReply, cookie: string): void {
  const existing = reply.getHeader('set-cookie');
  const list = existing === undefined ? [] : Array.isArray(existing) ? existing.map(String) : [String(existing)];
  void reply.header('set-cookie', [...list, cookie]);
}

/** The signed-in session of a request: its token, its id (sessionIdOf) and when it expires. */
export interface LoadedSession {
  token: string;
  id: string;
  expiresAt: Date;
}

/** Session ids seen valid in the last minute (at most 10,000, the oldest forgotten first). */
export class RecentSessions {
  private readonly seen = new Map<string, number>();

  has(id: string): boolean {
    const at = this.seen.get(id);
    return at !== undefined && Date.now() - at < 60_000;
  }

  add(id: string): void {
    this.seen.delete(id);
    this.seen.set(id, Date.now());
    if (this.seen.size > 10_000) this.seen.delete(this.seen.keys().next().value!);
  }

  delete(id: string): void {
    this.seen.delete(id);
  }
}

/** The rate limit a session lookup is held to (server.ts): an address at its limit is refused before the lookup. */
export interface SessionLimit {
  /** 429 when the address is at its limit already. */
  refuseWhileLimited(request: FastifyRequest): Promise<void>;
  /** Sessions seen valid lately: not held back by their address's limit. */
  recentSessions: RecentSessions;
}

/**
 * The signed-in session of the request, or null (sets request.apiKey to the session's key), looked up behind the
 * address's limit, as the API looks up a key: an address at its limit is refused (429) before
 * the lookup, so bad cookies cost no database work once over — but not a session seen valid in the last minute (as
 * the API serves a key it verified lately from its cache), so one client sending bad cookies from behind a shared NAT
 * does not lock out the operators signed in from the same address. The session is still looked up every time, so
 * sign-out and revocation hold; one whose lookup fails is forgotten at once.
 */
export async function loadSessionWithinLimit(db: Queryable, request: FastifyRequest, limit: SessionLimit): Promise<LoadedSession | null> {
  const token = readAdminCookie(request, SESSION_COOKIE);
  if (!token) {
    await limit.refuseWhileLimited(request);
    return null;
  }
  const id = sessionIdOf(token);
  if (!limit.recentSessions.has(id)) await limit.refuseWhileLimited(request);
  const session = await findAdminSession(db, token);
  if (!session) {
    limit.recentSessions.delete(id);
    return null;
  }
  limit.recentSessions.add(id);
  request.apiKey = session.key;
  return { token, id, expiresAt: session.expiresAt };
}

/** Refuses a POST whose CSRF token is not the session's (403, nothing done). */
export function requireCsrf(sessionToken: string, body: unknown): void {
  const submitted = (body as Record<string, unknown> | null | undefined)?.[CSRF_FIELD];
  if (!csrfTokenMatches(sessionToken, submitted)) {
    throw new ApiError(403, 'CSRF_REFUSED', 'the form was not sent by a page of this session (missing or wrong CSRF token): reload the page and try again');
  }
}

/** Why a page or a form of an ended session goes to the sign-in form. */
export const SESSION_ENDED = 'Your session ended (signed out, expired, or its key was revoked): sign in again.';

export const DUPLICATED_COOKIES_MESSAGE =
  'your browser sends two admin cookies of one name: another site under the same domain set one. Clear the cookies of this site and sign in again';

/** A fresh token for the sign-in form (and its cookie). */
export const newSignInToken = (): string => randomBytes(24).toString('base64url');

/**
 * The sign-in form's token: the browser's own still-valid one when it has it, so that a second sign-in page open in
 * another tab does not void the first one's form (each would replace the one cookie); else a fresh one.
 */
export function signInTokenFor(request: FastifyRequest): string {
  const current = readAdminCookie(request, SIGN_IN_COOKIE);
  return current !== undefined && /^[A-Za-z0-9_-]{32}$/.test(current) ? current : newSignInToken();
}

/**
 * Where a sign-in goes afterwards: the admin page asked for (`next`), only as a path of these pages — never another
 * site (`//host`, `/\host`, a scheme) — else the runs.
 */
export function afterSignIn(next: unknown): string {
  if (typeof next !== 'string' || next.length > 2_000) return '/admin/runs';
  if (!/^\/admin\/[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*$/.test(next)) return '/admin/runs';
  // As the browser will read it: dot segments (`..`, `%2e%2e`) resolved, so none leads out of the admin pages.
  const resolved = new URL(next, 'http://admin.invalid');
  const path = resolved.pathname;
  if (resolved.origin !== 'http://admin.invalid' || !path.startsWith('/admin/') || path.startsWith('/admin/sign-') || path.startsWith('/admin//')) {
    return '/admin/runs';
  }
  return path + resolved.search;
}

export function requireSignInToken(request: FastifyRequest, body: unknown): void {
  const cookie = readAdminCookie(request, SIGN_IN_COOKIE) ?? '';
  const submitted = (body as Record<string, unknown> | null | undefined)?.[CSRF_FIELD];
  const a = Buffer.from(cookie);
  const b = Buffer.from(typeof submitted === 'string' ? submitted : '');
  if (duplicatedCookies(request).length > 0) {
    throw new ApiError(403, 'CSRF_REFUSED', DUPLICATED_COOKIES_MESSAGE);
  }
  if (a.length < 16 || a.length !== b.length || !timingSafeEqual(a, b)) {
    throw new ApiError(403, 'CSRF_REFUSED', 'the sign-in form expired or was not sent by this site: open the sign-in page again');
  }
}
