// The HTTP API of `bulk-import serve` in the test process, listening on a loopback port, against the test's database
// and bucket: requests go over real HTTP (fetch), its log lines are kept for the tests to read.
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { inject } from 'vitest';
import { createApiKey, type ApiKeyRole } from '../../worker/auth/api-keys.js';
import { loadConfig } from '../../worker/config.js';
import { JobEventHub } from '../../worker/http/event-hub.js';
import type { ApiLimits } from '../../worker/http/limits.js';
import { buildApiServer, type ApiServerOptions } from '../../worker/http/server.js';
import { createLogger } from '../../worker/logger.js';
import { createS3Client } from '../../worker/storage/s3-client.js';
import type { TestEnvironment } from '../harness.js';

export interface TestApi {
  url: string;
  app: FastifyInstance;
  /** The server's event hub (what its event streams follow). */
  events: JobEventHub;
  /** Every log line the server wrote, as text. */
  logText(): string;
  close(): Promise<void>;
}

/** `settings`: more configuration variables for the server (e.g. ADMISSION_TENANT_QUEUED_RUNS). */
export async function startTestApi(
  env: TestEnvironment,
  limits: Partial<ApiLimits> = {},
  settings: Record<string, string> = {},
  server: Pick<ApiServerOptions, 'trustProxy'> = {},
): Promise<TestApi> {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(chunk.toString('utf8'));
      callback();
    },
  });
  const log = createLogger({ level: 'debug', format: 'json', destination });
  const config = loadConfig({ DATABASE_URL: env.databaseUrl, S3_BUCKET: env.bucket, S3_ENDPOINT: env.s3Endpoint, ...settings });
  const s3 = createS3Client({ region: inject('s3Region'), endpoint: settings.S3_ENDPOINT ?? env.s3Endpoint, credentials: inject('s3Credentials'), checksumsWhenRequired: true });
  const events = new JobEventHub({ database: env.databaseUrl, pool: env.pool, log, pollMs: limits.eventPollMs ?? 200 });
  await events.start();
  const app = await buildApiServer({ pool: env.pool, config, log, s3, bucket: env.bucket, events, limits: { eventPollMs: 200, ...limits }, ...server });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    url,
    app,
    events,
    logText: () => lines.join(''),
    async close() {
      await app.close();
      await events.stop();
      s3.destroy();
    },
  };
}

export async function makeKey(env: TestEnvironment, name: string, role: ApiKeyRole, tenantId?: string): Promise<string> {
  return (await createApiKey(env.pool, { name, role, tenantId: tenantId ?? null })).key;
}

export interface ApiResponse<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
  text: string;
}

/** One request; `body` objects are sent as JSON. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- response bodies are read field by field in tests
export async function call<T = any>(
  api: TestApi,
  method: string,
  path: string,
  options: { key?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key) headers.authorization = `Bearer ${options.key}`;
  let body: string | undefined;
  if (options.body !== undefined) {
    headers['content-type'] ??= 'application/json';
    body = typeof options.body === 'string' ? options.body : JSON.stringify(options.body);
  }
  const response = await fetch(`${api.url}${path}`, { method, headers, body });
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON (CSV, event streams)
  }
  return { status: response.status, headers: response.headers, body: parsed as T, text };
}
