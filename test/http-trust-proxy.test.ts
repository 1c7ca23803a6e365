// Behind the admin API's load balancer every request comes from the balancer's address. Requests without a key (the
// admin sign-in) are rate limited per address, so without --trust-proxy all clients share one bucket and one client
// can lock everyone out of signing in; with it, each client's X-Forwarded-For address has its own. The real CLI's
// flag is checked too.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useTestEnvironment } from './harness.js';
import { call, startTestApi, type TestApi } from './support/api-server.js';
import { runCli } from './support/cli-runner.js';

const env = useTestEnvironment();
let trusting: TestApi;
let plain: TestApi;

beforeAll(async () => {
  trusting = await startTestApi(env, { rateLimitPerMinute: 2 }, {}, { trustProxy: 1 });
  plain = await startTestApi(env, { rateLimitPerMinute: 2 });
});
afterAll(async () => {
  await trusting?.close();
  await plain?.close();
});

const signIn = (api: TestApi, client: string) => call(api, 'GET', '/admin/sign-in', { headers: { 'x-forwarded-for': client } });

describe('--trust-proxy', () => {
  it("rate limits requests without a key per client address behind a trusted proxy, not per the proxy's", async () => {
    for (const api of [trusting, plain]) {
      expect((await signIn(api, '203.0.113.1')).status).toBe(200);
      expect((await signIn(api, '203.0.113.1')).status).toBe(200);
      expect((await signIn(api, '203.0.113.1')).status).toBe(429);
    }
    // Another client behind the same proxy: its own bucket when the proxy is trusted, the exhausted one otherwise.
    expect((await signIn(trusting, '203.0.113.2')).status).toBe(200);
    expect((await signIn(plain, '203.0.113.2')).status).toBe(429);
    // One hop: what a client wrote before the address the proxy appended is not believed.
    expect((await signIn(trusting, '198.51.100.9, 203.0.113.1')).status).toBe(429);
  });

  it('serve refuses a --trust-proxy that is not addresses or ranges, naming it', async () => {
    const refused = await runCli(env, ['serve', '--port', '0', '--trust-proxy', '10.0.0.0/16,everyone']);
    // (A number is a count of proxies; addresses and ranges are the other form.)
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('not everyone');
  });
});
