// Container health check (ECS runs `node dist/scripts/healthcheck.js`; in a checkout `node --import tsx
// scripts/healthcheck.ts`). Healthy while the worker's poll loop keeps touching HEALTH_HEARTBEAT_FILE: its age must
// be below HEALTH_MAX_AGE_MS. With --check-database it also logs in and checks that the schema has every migration
// of this build. --database-only does that check alone, without a worker: the operator's check by hand from a one-off
// task or an admin host during a database incident.
//
// During a database outage (restart, failover) the worker's loop keeps turning and the check stays healthy: the line
// says the database is unavailable and since when. Replacing tasks would not bring the database back, and the jobs
// resume by themselves when it returns. A database that refuses the worker's configuration (wrong password, no
// schema, TLS refused) is different: waiting cannot fix it, so the check fails (exit 4) and ECS replaces the task or
// rolls the deployment back.
//
// It runs every few seconds in every task, so it starts fast: it loads only the config module and node:fs, and pg
// only when --check-database asks for it.
//
// Prints one line and exits with:
//   0  healthy
//   1  heartbeat too old (the poll loop is stuck, the event loop blocked, or the process frozen)
//   2  no heartbeat file (the worker has not started, has stopped, or writes elsewhere)
//   3  database check failed (unreachable, refused, or slower than the timeout)
//   4  the worker reports that the database refuses its configuration (authentication, missing schema, TLS)
//   64 bad command-line arguments
//   78 bad configuration (an environment variable has an invalid value)
import { readFile, stat } from 'node:fs/promises';
import { ConfigError, loadConfig, requireDatabase, type Config } from '../worker/config.js';
import { connectionConfig, urlSecrets } from '../worker/db/connection.js';
import { describeDatabaseError, scrubSecrets } from '../worker/db/database-errors.js';
import { parseHeartbeatContent } from '../worker/ops/health-heartbeat.js';

const EXIT = { healthy: 0, stale: 1, missing: 2, database: 3, misconfigured: 4, usage: 64, config: 78 } as const;

const USAGE = `usage: healthcheck [--check-database | --database-only] [--timeout-ms <n>]
  exits 0 while HEALTH_HEARTBEAT_FILE is younger than HEALTH_MAX_AGE_MS (--database-only: while the database answers
  and has this build's schema, with no worker needed);
  1 stale heartbeat, 2 no heartbeat, 3 database check failed, 4 the database refuses the worker's configuration,
  64 bad arguments, 78 bad configuration`;

interface Arguments {
  checkDatabase: boolean;
  /** Only the database check: no heartbeat is looked at. */
  databaseOnly: boolean;
  timeoutMs: number;
}

function parseArguments(argv: string[]): Arguments | string {
  const parsed: Arguments = { checkDatabase: false, databaseOnly: false, timeoutMs: 3_000 };
  for (let index = 0; index < argv.length; index += 1) {
    const argument = argv[index];
    if (argument === '--check-database') parsed.checkDatabase = true;
    else if (argument === '--database-only') parsed.databaseOnly = true;
    else if (argument === '--timeout-ms') {
      const value = argv[++index] ?? '';
      if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 60_000) return `--timeout-ms expects 1 to 60000, got ${JSON.stringify(value)}`;
      parsed.timeoutMs = Number(value);
    } else return `unknown argument ${JSON.stringify(argument)}`;
  }
  return parsed;
}

async function checkHeartbeat(file: string, maxAgeMs: number): Promise<{ code: number; line: string }> {
  let modifiedMs: number;
  try {
    modifiedMs = (await stat(file)).mtimeMs;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    return { code: EXIT.missing, line: `unhealthy: no heartbeat file ${file} (${code ?? String(error)}): the worker is not running its poll loop` };
  }
  const ageMs = Math.max(0, Math.round(Date.now() - modifiedMs));
  if (ageMs > maxAgeMs) {
    return { code: EXIT.stale, line: `unhealthy: heartbeat ${file} is ${ageMs} ms old (limit ${maxAgeMs} ms): the poll loop has stopped turning` };
  }
  const content = parseHeartbeatContent(await readFile(file, 'utf8').catch(() => ''));
  const database = content?.database;
  if (database?.state === 'misconfigured') {
    return { code: EXIT.misconfigured, line: `unhealthy: the database refuses this worker since ${database.since}: ${database.error}` };
  }
  const note = database?.state === 'unavailable' ? `; database unavailable since ${database.since} (${database.error}), jobs wait for it` : '';
  return { code: EXIT.healthy, line: `healthy: heartbeat ${ageMs} ms old (limit ${maxAgeMs} ms)${note}` };
}

async function checkDatabase(config: Config, timeoutMs: number): Promise<string | undefined> {
  if (!config.databaseUrl) return 'DATABASE_URL is not set';
  const [{ default: pg }, { checkSchema }] = await Promise.all([import('pg'), import('../worker/db/readiness.js')]);
  const client = new pg.Client(
    connectionConfig(requireDatabase(config), {
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
      application_name: 'bulk-import-healthcheck',
    }),
  );
  client.on('error', () => {});
  const deadline = new Promise<never>((_, reject) => {
    setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs).unref();
  });
  try {
    await Promise.race([client.connect().then(() => checkSchema(client)), deadline]);
    return undefined;
  } catch (error) {
    return scrubSecrets(describeDatabaseError(error), urlSecrets(config.databaseUrl));
  } finally {
    void client.end().catch(() => {});
  }
}

async function main(argv: string[]): Promise<number> {
  const args = parseArguments(argv);
  if (argv.includes('--help') || typeof args === 'string') {
    process.stdout.write(`${typeof args === 'string' ? `healthcheck: ${args}\n` : ''}${USAGE}\n`);
    return typeof args === 'string' ? EXIT.usage : EXIT.healthy;
  }
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    process.stdout.write(`unhealthy: ${(error as Error).message}\n`);
    return error instanceof ConfigError ? EXIT.config : EXIT.usage;
  }
  if (args.databaseOnly) {
    const failure = await checkDatabase(config, args.timeoutMs);
    process.stdout.write(failure ? `unhealthy: database check failed: ${failure}\n` : 'healthy: the database answered and has this build\'s schema\n');
    return failure ? EXIT.database : EXIT.healthy;
  }
  const heartbeat = await checkHeartbeat(config.health.heartbeatFile, config.health.maxAgeMs);
  if (heartbeat.code !== EXIT.healthy) {
    process.stdout.write(`${heartbeat.line}\n`);
    return heartbeat.code;
  }
  if (args.checkDatabase) {
    const failure = await checkDatabase(config, args.timeoutMs);
    if (failure) {
      process.stdout.write(`unhealthy: database check failed: ${failure}\n`);
      return EXIT.database;
    }
    process.stdout.write(`${heartbeat.line}; database answered\n`);
    return EXIT.healthy;
  }
  process.stdout.write(`${heartbeat.line}\n`);
  return EXIT.healthy;
}

process.exitCode = await main(process.argv.slice(2));
