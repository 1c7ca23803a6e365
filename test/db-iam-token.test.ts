// IAM database authentication, as far as it can run here: every new connection asks for a password (a token), a
// token is reused only while it has more than the refresh margin left of its 15 minutes, and the real signer makes a
// token of the form RDS expects without any network call. (That RDS accepts it cannot be tested here.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, requireDatabase } from '../worker/config.js';
import { createPool } from '../worker/db/pool.js';
import { IAM_TOKEN_LIFETIME_MS, IAM_TOKEN_REFRESH_MARGIN_MS, IamTokenSource, iamTokenSourceFor } from '../worker/db/iam-token.js';
import { useTestEnvironment } from './harness.js';

const env = useTestEnvironment();
const ROLE = `iam_${Math.random().toString(36).slice(2, 8)}`;
const TOKEN_PASSWORD = 'token-of-the-test';

beforeAll(async () => {
  // A role whose password is what the test's signer returns, standing in for RDS's check of the token.
  await env.pool.query(`CREATE ROLE ${ROLE} LOGIN PASSWORD '${TOKEN_PASSWORD}'`);
});
afterAll(async () => {
  await env.pool.query(`DROP ROLE IF EXISTS ${ROLE}`).catch(() => {});
});

describe('IAM tokens', () => {
  it('each new connection asks the source; a token is signed again once it nears the end of its 15 minutes', async () => {
    let now = 1_000_000;
    const signed: number[] = [];
    const source = new IamTokenSource({
      hostname: 'db.example', port: 5432, username: ROLE, region: 'eu-west-1',
      sign: async () => {
        signed.push(now);
        return TOKEN_PASSWORD;
      },
      now: () => now,
    });
    const asked: number[] = [];
    const counting = { token: () => (asked.push(now), source.token()) } as IamTokenSource;
    const url = new URL(env.databaseUrl);
    url.username = ROLE;
    url.password = '';
    const pool = createPool({ url: url.toString(), sslMode: 'disable', iamToken: counting }, { max: 3 });
    try {
      // Three connections at once: three asks, one signature (concurrent callers share it).
      const clients = await Promise.all([pool.connect(), pool.connect(), pool.connect()]);
      const { rows } = await clients[0]!.query<{ user: string }>('SELECT current_user AS user');
      expect(rows[0]!.user).toBe(ROLE);
      for (const client of clients) client.release(new Error('discard: the next connect is a new connection'));
      expect(asked).toHaveLength(3);
      expect(signed).toHaveLength(1);

      // Still well inside the token's life: reused.
      now += IAM_TOKEN_LIFETIME_MS - IAM_TOKEN_REFRESH_MARGIN_MS - 1_000;
      (await pool.connect()).release(new Error('discard'));
      expect(signed).toHaveLength(1);

      // Within the margin of its end: a new connection gets a freshly signed token.
      now += 2_000;
      (await pool.connect()).release(new Error('discard'));
      expect(asked).toHaveLength(5);
      expect(signed).toEqual([1_000_000, now]);
    } finally {
      await pool.end();
    }
  });

  it('the real signer makes an RDS connect token for the URL\'s host, port and user, locally', async () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://app_user@db.cluster-abc.eu-west-1.rds.amazonaws.com:5433/app',
      DATABASE_IAM_AUTH: 'true',
      DATABASE_SSL_MODE: 'verify-full',
      AWS_REGION: 'eu-west-1',
    });
    expect(config.databaseIamAuth).toBe(true);
    const connection = requireDatabase(config);
    expect(connection.iamToken).toBeInstanceOf(IamTokenSource);
    expect(requireDatabase(config)).toBe(connection); // one source per process
    const previous = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = 'AKIDEXAMPLE';
    process.env.AWS_SECRET_ACCESS_KEY = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';
    try {
      const token = await iamTokenSourceFor(config.databaseUrl!, 'eu-west-1').token();
      expect(token).toMatch(/^db\.cluster-abc\.eu-west-1\.rds\.amazonaws\.com:5433\/\?Action=connect&DBUser=app_user&/);
      expect(token).toContain('X-Amz-Expires=900');
      expect(token).toContain('X-Amz-Credential=AKIDEXAMPLE%2F');
      expect(token).not.toContain('wJalrXUtnFEMI');
    } finally {
      if (previous.id === undefined) delete process.env.AWS_ACCESS_KEY_ID;
      else process.env.AWS_ACCESS_KEY_ID = previous.id;
      if (previous.secret === undefined) delete process.env.AWS_SECRET_ACCESS_KEY;
      else process.env.AWS_SECRET_ACCESS_KEY = previous.secret;
    }
  });

  it('IAM authentication without TLS is refused at start-up', () => {
    expect(() => loadConfig({ DATABASE_URL: 'postgres://u@h/db', DATABASE_IAM_AUTH: 'true' })).toThrow(/needs TLS.*DATABASE_SSL_MODE=verify-full/);
  });
});
