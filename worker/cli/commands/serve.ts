// `bulk-import serve`: the HTTP/JSON API (worker/http/), in the worker's image, with the worker's configuration
// (DATABASE_*, S3_*, AWS_REGION, LOG_*). Waits for the database and a current schema like a worker, then listens until
// SIGTERM/SIGINT, when it stops taking requests, lets the ones in flight finish and closes its sessions.
import { InvalidArgumentError, type Command } from 'commander';
// A type only (erased): Fastify itself loads with the server, below.
import type { FastifyInstance } from 'fastify';
import { loadConfig, requireDatabase } from '../../config.js';
import { createPool } from '../../db/pool.js';
import { waitForDatabase } from '../../db/readiness.js';
import { DEFAULT_ADMIN_OPTIONS } from '../../http/admin/options.js';
import { JobEventHub } from '../../http/event-hub.js';
import { DEFAULT_LIMITS, type ApiLimits } from '../../http/limits.js';
import { createLogger } from '../../logger.js';
import { createS3Client } from '../../storage/s3-client.js';
import { integerIn } from '../parse.js';

interface ServeOptions {
  port: number;
  host: string;
  rateLimit: number;
  bodyLimit: number;
  streamsPerKey?: number;
  secureCookies?: boolean;
  sessionHours?: number;
  trustProxy?: string[] | number;
}

// An IPv4 or IPv6 address, optionally with a prefix length (10.0.0.0/16, fd00::/8).
const ADDRESS_OR_RANGE = /^[0-9A-Fa-f:.]+(?:\/\d{1,3})?$/;

/** --trust-proxy: a number of proxy hops (1: the address the nearest proxy saw), or addresses and CIDR ranges. */
function trustedProxies(value: string): string[] | number {
  if (/^\d{1,2}$/.test(value.trim()) && Number(value) >= 1) return Number(value);
  const list = value.split(',').map((part) => part.trim()).filter((part) => part !== '');
  const bad = list.find((part) => !ADDRESS_OR_RANGE.test(part));
  if (list.length === 0 || bad !== undefined) {
    throw new InvalidArgumentError(`expected a number of proxies (1), or addresses or CIDR ranges separated by commas (10.0.0.0/16,10.1.0.0/16)${bad ? `, not ${bad}` : ''}`);
  }
  return list;
}

/** Statements of one request are cut off after this long (the server's own timeout, set per session). */
const STATEMENT_TIMEOUT_MS = 10_000;

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('serve the HTTP/JSON API (docs/API.md) until SIGTERM/SIGINT')
    .option('--port <n>', 'TCP port', integerIn(0, 65_535), 8080)
    .option('--host <address>', 'address to listen on', '0.0.0.0')
    .option('--rate-limit <n>', 'requests per minute per API key', integerIn(1, 1_000_000), DEFAULT_LIMITS.rateLimitPerMinute)
    .option('--body-limit <bytes>', 'largest request body', integerIn(1_024, 16 * 1024 * 1024), DEFAULT_LIMITS.bodyLimitBytes)
    .option('--streams-per-key <n>', 'event streams one API key may hold open on this process', integerIn(1, 100_000), DEFAULT_LIMITS.eventStreamsPerKey)
    .option('--secure-cookies', 'admin pages: always mark cookies Secure (TLS ends before a proxy that sends no X-Forwarded-Proto)')
    .option('--trust-proxy <hops|addresses>', "believe X-Forwarded-For for this many proxies in front (1: a load balancer), or from these addresses or CIDR ranges: rate limits and logs then see the client's address", trustedProxies)
    .option('--session-hours <n>', 'admin pages: how long a sign-in lasts', integerIn(1, 24 * 30), DEFAULT_ADMIN_OPTIONS.sessionTtlMs / 3_600_000)
    .action(async (options: ServeOptions) => {
      const running = await startApiServer(options);
      if (process.stdout.isTTY) process.stdout.write(`bulk-import API listening on ${running.url}\n`);
      await new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          running.log.info({ signal }, 'stopping the API');
          void running.close().then(resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
    });
}

export interface RunningApi {
  url: string;
  log: ReturnType<typeof createLogger>;
  close(): Promise<void>;
}

export async function startApiServer(options: Partial<ServeOptions> & { limits?: Partial<ApiLimits> } = {}): Promise<RunningApi> {
  // Loaded here, not with the command tree: every command (a worker's start, `bulk-import show`) registers them all,
  // and Fastify with its plugins is a fifth of the CLI's start-up. Started now, it loads while the database is awaited.
  const serverModule = import('../../http/server.js');
  serverModule.catch(() => {}); // awaited below, where a failure to load is thrown
  const config = loadConfig();
  const log = createLogger({ level: config.logLevel, format: config.logFormat, name: 'bulk-import-api' });
  const database = requireDatabase(config);
  const pool = createPool(database, {
    max: config.databasePoolSize,
    applicationName: 'bulk-import-api',
    statementTimeoutMs: STATEMENT_TIMEOUT_MS,
    queryTimeoutMs: STATEMENT_TIMEOUT_MS + 5_000,
  });
  pool.on('error', (error) => log.warn({ err: error.message }, 'database connection lost'));
  try {
    await waitForDatabase(pool, {
      timeoutMs: config.databaseStartupTimeoutMs,
      onWaiting: (reason) => log.warn({ err: reason }, 'database not reachable yet; waiting'),
    });
  } catch (error) {
    await pool.end().catch(() => {});
    throw error;
  }
  const limits = {
    ...options.limits,
    ...(options.rateLimit !== undefined ? { rateLimitPerMinute: options.rateLimit } : {}),
    ...(options.bodyLimit !== undefined ? { bodyLimitBytes: options.bodyLimit } : {}),
    ...(options.streamsPerKey !== undefined ? { eventStreamsPerKey: options.streamsPerKey } : {}),
  };
  const s3 = config.s3Bucket
    ? createS3Client({ region: config.awsRegion, endpoint: config.s3Endpoint, forcePathStyle: config.s3ForcePathStyle, checksumsWhenRequired: true })
    : undefined;
  const events = new JobEventHub({ database, pool, log, pollMs: limits.eventPollMs ?? DEFAULT_LIMITS.eventPollMs });
  await events.start();
  const admin = {
    ...(options.secureCookies ? { secureCookies: true } : {}),
    ...(options.sessionHours !== undefined ? { sessionTtlMs: options.sessionHours * 3_600_000 } : {}),
  };
  let app: FastifyInstance | undefined;
  let address: string;
  try {
    const { buildApiServer } = await serverModule;
    app = await buildApiServer({ pool, config, log, s3, bucket: config.s3Bucket, events, limits, admin, ...(options.trustProxy ? { trustProxy: options.trustProxy } : {}) });
    address = await app.listen({ port: options.port ?? 8080, host: options.host ?? '0.0.0.0' });
  } catch (error) {
    // e.g. EADDRINUSE, or the server that did not load: leave nothing open behind the refusal.
    await app?.close();
    await events.stop();
    s3?.destroy();
    await pool.end().catch(() => {});
    throw error;
  }
  const server = app;
  log.info({ address }, 'API listening');
  return {
    url: address,
    log,
    async close() {
      await server.close();
      await events.stop();
      s3?.destroy();
      await pool.end().catch(() => {});
    },
  };
}
