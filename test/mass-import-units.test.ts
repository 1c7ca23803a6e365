// The pure parts of the mass import: object key encoding (safe, injective, reversible), the adaptive concurrency
// (halve on throttling, hold, grow back), the ceiling messages, and payload validation.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../worker/config.js';
import { massImportHandler } from '../worker/handlers/mass-import.js';
import { AdaptiveConcurrency } from '../worker/imports/mass-import/adaptive-concurrency.js';
import { checkCeiling } from '../worker/imports/mass-import/ceiling.js';
import { encodeKeySegment, isValidPrefix, keyPrefixFor, objectKeyFor } from '../worker/imports/object-key.js';
import { normaliseSource } from '../worker/imports/mass-import/import-plan.js';
import { resolveTenant } from '../worker/imports/tenant.js';
import { partSizeFor } from '../worker/storage/s3-upload.js';

describe('object keys', () => {
  it('keep readable names and encode what S3 asks to avoid, reversibly', () => {
    expect(objectKeyFor('imports', 'acme', 'Verträge/2024/Überweisung 17.pdf')).toBe('imports/acme/Verträge/2024/Überweisung 17.pdf');
    expect(encodeKeySegment('見積書 (v2).docx')).toBe('見積書 (v2).docx');
    expect(encodeKeySegment('new\nline\ttab')).toBe('new%0Aline%09tab');
    expect(encodeKeySegment('100% #1 {a} [b] <c> "d" \\e ^f |g ~h `i')).toBe(
      '100%25 %231 %7Ba%7D %5Bb%5D %3Cc%3E %22d%22 %5Ce %5Ef %7Cg %7Eh %60i',
    );
    expect(encodeKeySegment('zero\u200bwidth\u0085nel')).toBe('zero%E2%80%8Bwidth%C2%85nel');
  });

  it('never give two different names the same key (the encoding is injective and decodes back)', () => {
    const names = ['a%20b', 'a b', 'a%2520b', 'é', 'e\u0301', 'x\ny', 'x%0Ay', '%', '%25', 'ü.pdf', 'u\u0308.pdf'];
    const encoded = names.map(encodeKeySegment);
    expect(new Set(encoded).size).toBe(names.length);
    for (const [index, name] of names.entries()) expect(decodeURIComponent(encoded[index]!)).toBe(name);
  });

  it('never give two different (prefix, tenant, path) the same key, though prefixes may have several segments', () => {
    // The collision of the review: prefix imports/acme + tenant x + f against prefix imports + tenant acme + x/f.
    expect(objectKeyFor('imports/acme', 'x', 'f')).not.toBe(objectKeyFor('imports', 'acme', 'x/f'));
    // The default (one-segment) prefix keeps the keys the task role's `imports/` grant covers.
    expect(objectKeyFor('imports', 'acme', 'x/f')).toBe('imports/acme/x/f');
    expect(objectKeyFor('imports/2024-q4', 'acme', 'x/f')).toBe('imports/_2024-q4/acme/x/f');
    expect(keyPrefixFor('imports/2024-q4', 'acme')).toBe('imports/_2024-q4/acme/');
    // Every combination of segments that could imitate one another: all keys distinct, and no run's key prefix is
    // a prefix of another (prefix, tenant)'s keys (what `audit --prefix` and the documents count rely on).
    const words = ['imports', 'acme', 'x', '_x', 'x_', 'a.b'];
    const prefixes = ['imports', 'imports/acme', 'imports/x', 'imports/acme/x', 'acme', 'x/imports', 'imports/_x'].filter(isValidPrefix);
    expect(prefixes).toEqual(['imports', 'imports/acme', 'imports/x', 'imports/acme/x', 'acme', 'x/imports']);
    const tenants = ['acme', 'x', 'imports', 'a.b'];
    const paths = ['f', 'x/f', 'acme/x/f', '_x/f', 'x_/f', 'imports/acme/x/f', ...words.map((word) => `${word}/_acme/f`)];
    const keys = new Map<string, string>();
    for (const prefix of prefixes) {
      for (const tenant of tenants) {
        for (const path of paths) {
          const key = objectKeyFor(prefix, tenant, path);
          const owner = `${prefix} | ${tenant} | ${path}`;
          expect(keys.get(key), `${owner} collides`).toBeUndefined();
          keys.set(key, owner);
        }
      }
    }
    expect(keys.size).toBe(prefixes.length * tenants.length * paths.length);
    for (const prefix of prefixes) {
      for (const tenant of tenants) {
        const own = keyPrefixFor(prefix, tenant);
        const intruders = [...keys].filter(([key, owner]) => key.startsWith(own) && !owner.startsWith(`${prefix} | ${tenant} | `));
        expect(intruders, `${prefix} | ${tenant}`).toEqual([]);
      }
    }
  });

  it('accept only plain prefixes and sources below the root', () => {
    expect(isValidPrefix('imports/2024-q4')).toBe(true);
    expect(isValidPrefix('../x')).toBe(false);
    expect(isValidPrefix('a//b')).toBe(false);
    expect(isValidPrefix('imports/_acme')).toBe(false); // would imitate the mark of a prefix's further segments
    expect(isValidPrefix('imports/')).toBe(false);
    expect(normaliseSource('campaign/2024/')).toBe('campaign/2024');
    expect(normaliseSource('')).toBe('.');
    expect(normaliseSource('a/../b')).toBe('b');
    expect(normaliseSource('../etc')).toBeUndefined();
    expect(normaliseSource('/etc')).toBeUndefined();
  });
});

describe('adaptive concurrency', () => {
  it('halves on throttling, holds, then grows back by one per step', async () => {
    let now = 10_000;
    const limiter = new AdaptiveConcurrency(8, { holdMs: 10_000, growStepMs: 2_000, now: () => now });
    for (let i = 0; i < 8; i += 1) await limiter.acquire();
    expect(limiter.inFlight).toBe(8);
    limiter.throttled();
    limiter.throttled(); // the same burst: one halving
    expect(limiter.limit).toBe(4);
    now += 1_500;
    limiter.throttled();
    expect(limiter.limit).toBe(2);
    let ninth = false;
    void limiter.acquire().then(() => (ninth = true));
    for (let i = 0; i < 6; i += 1) limiter.release();
    await Promise.resolve();
    expect(ninth).toBe(false); // 2 still in flight, the limit is 2
    now += 9_000; // still within the hold
    limiter.release();
    await Promise.resolve();
    expect(ninth).toBe(true);
    expect(limiter.limit).toBe(2);
    now += 2_000;
    limiter.release();
    expect(limiter.limit).toBe(3);
    expect(limiter.lowest).toBe(2);
    expect(limiter.throttleSignals).toBe(3);
  });
});

describe('ceiling and payload', () => {
  const config = loadConfig({}).massImport;

  it('names each exceeded limit, the measured value and how to raise it', () => {
    const violations = checkCeiling(config, { maxFiles: 10, maxTotalBytes: 10 * 1024 ** 4, maxFileBytes: 60 * 1024 ** 3 }, {
      files: 2_000_000,
      totalBytes: 1,
      largestFile: { path: 'a.bin', size: 1 },
    });
    expect(violations).toHaveLength(1);
    expect(violations[0]!.message).toBe(
      'files: 2,000,000 > maxFiles = 10; to raise it, raise MASS_IMPORT_HARD_CAP_FILES (now 1,000,000) in the ' +
        'worker\'s configuration — a reviewed change — then enqueue with "maxFiles": 2000000',
    );
  });

  it('refuses bad payloads with a message naming the field', () => {
    expect(() => massImportHandler.parsePayload({ source: '../up' })).toThrow(/"source" must be a directory relative to the import root/);
    expect(() => massImportHandler.parsePayload({ tenant: 'a b' })).toThrow(/"tenant"/);
    expect(() => massImportHandler.parsePayload({ prefix: '/abs' })).toThrow(/"prefix"/);
    expect(() => massImportHandler.parsePayload({ maxFiles: 0 })).toThrow(/"maxFiles" must be a whole number/);
    expect(() => massImportHandler.parsePayload({ sourse: 'x' })).toThrow(/unknown field\(s\) sourse/);
    expect(massImportHandler.parsePayload({ source: 'a/b/', dryRun: true })).toMatchObject({ source: 'a/b', prefix: 'imports', dryRun: true });
  });

  it('resolves the tenant from the payload or the job, refusing a mismatch or none', () => {
    expect(resolveTenant('mass-import', undefined, 'acme')).toBe('acme');
    expect(resolveTenant('mass-import', 'acme', null)).toBe('acme');
    expect(resolveTenant('mass-import', 'acme', 'acme')).toBe('acme');
    expect(() => resolveTenant('mass-import', 'acme', 'other')).toThrow(
      'mass-import payload tenant "acme" differs from the job\'s tenant "other"; give one or make them equal',
    );
    expect(() => resolveTenant('csv-import', undefined, null)).toThrow(/^csv-import needs a tenant: set "tenant" in the payload or enqueue with --tenant/);
    expect(() => resolveTenant('mass-import', undefined, 'not a tenant')).toThrow(/needs a tenant/);
  });

  it('sizes multipart parts within S3 limits', () => {
    const MiB = 1024 ** 2;
    expect(partSizeFor(6 * MiB, 5 * MiB)).toBe(5 * MiB);
    expect(partSizeFor(100 * MiB, 8 * MiB)).toBe(8 * MiB);
    expect(partSizeFor(100 * MiB, 64 * MiB)).toBe(8 * MiB);
    const huge = 200 * 1024 ** 3;
    expect(Math.ceil(huge / partSizeFor(huge, 8 * MiB))).toBeLessThanOrEqual(10_000);
  });
});
