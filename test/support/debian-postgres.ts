// A PostgreSQL server from Debian's packages, for the test project that runs the queue's tests on an older major
// version than the embedded one (18): the oldest installed from 15 on (the oldest production may run: README,
// "PostgreSQL versions"), else postgresql-15 (bookworm) or the release's default, installed with apt-get, once per
// machine. TEST_DEBIAN_POSTGRES=off leaves the project out (test/projects.ts).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../worker/dev/free-port.js';

const run = promisify(execFile);
const PACKAGES = '/usr/lib/postgresql';
const OLDEST_SUPPORTED = 15;
/** Partitions share their parent's identity from 17: below it, enqueue's own numbering is what the project tests. */
const FIRST_WITH_PARTITION_IDENTITY = 17;
const USER = 'postgres';
const PASSWORD = 'postgres';

export interface DebianPostgres {
  /** URL of the `postgres` maintenance database. */
  adminUrl: string;
  /** The major version the server runs. */
  major: number;
  stop(): Promise<void>;
}

function installedMajors(): number[] {
  return (existsSync(PACKAGES) ? readdirSync(PACKAGES) : [])
    .filter((name) => /^\d+$/.test(name) && existsSync(join(PACKAGES, name, 'bin', 'postgres')))
    .map(Number)
    .filter((major) => major >= OLDEST_SUPPORTED)
    .sort((a, b) => a - b);
}

/** The bin directory of the oldest supported PostgreSQL Debian has installed, installing one when none is. */
function debianPostgresBinaries(): { binDir: string; major: number } {
  if (installedMajors().length === 0) {
    if (process.getuid?.() !== 0) {
      throw new Error(`no PostgreSQL ${OLDEST_SUPPORTED} or later under ${PACKAGES}, and apt-get needs root: install Debian's ` +
        `postgresql package, or leave the debian-postgres project out with TEST_DEBIAN_POSTGRES=off`);
    }
    // Several runs may ask at once: one install at a time (flock), the later ones find it there. Another apt (an
    // unattended upgrade) holding dpkg's lock is waited for.
    const apt = `DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends`;
    const install = `apt-get update -qq && (${apt} postgresql-${OLDEST_SUPPORTED} || ${apt} postgresql)`;
    execFileSync('sh', ['-c', `flock /tmp/bulk-import-postgresql.lock sh -c 'ls ${PACKAGES}/*/bin/postgres >/dev/null 2>&1 || (${install})'`], {
      stdio: 'inherit',
      timeout: 600_000,
    });
  }
  const major = installedMajors()[0];
  if (major === undefined) throw new Error(`no PostgreSQL ${OLDEST_SUPPORTED} or later under ${PACKAGES} after apt-get install`);
  return { binDir: join(PACKAGES, String(major), 'bin'), major };
}

/**
 * Starts a throw-away cluster in `baseDir` with the embedded server's user, password and fast settings. As root the
 * server runs as the `postgres` user (Postgres refuses root), who must be able to traverse `baseDir`'s parents.
 */
export async function startDebianPostgres(baseDir: string): Promise<DebianPostgres> {
  const { binDir, major } = debianPostgresBinaries();
  if (major >= FIRST_WITH_PARTITION_IDENTITY) {
    console.warn(`debian-postgres: PostgreSQL ${major} is the oldest installed; what differs before ${FIRST_WITH_PARTITION_IDENTITY} is not tested`);
  }
  const asRoot = process.getuid?.() === 0;
  const dataDir = join(baseDir, 'data');
  const passwordFile = join(baseDir, 'password');
  const logFile = join(baseDir, 'server.log');
  await mkdir(dataDir, { recursive: true });
  await writeFile(passwordFile, `${PASSWORD}\n`);
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', USER], { encoding: 'utf8' }).trim());
    for (const path of [baseDir, dataDir, passwordFile]) await chown(path, uid, gid);
  }
  await chmod(dataDir, 0o700);
  const as = (command: string, args: string[]) => (asRoot ? run('runuser', ['-u', USER, '--', command, ...args]) : run(command, args));
  await as(join(binDir, 'initdb'), ['-D', dataDir, '-U', USER, `--pwfile=${passwordFile}`, '--auth=scram-sha-256', '-E', 'UTF8', '--locale=C.UTF-8']);
  const pgCtl = join(binDir, 'pg_ctl');
  const stopServer = () => as(pgCtl, ['-D', dataDir, '-m', 'fast', '-w', 'stop']);
  // A port another process takes between freePort and the start fails the start: try another.
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const settings = [`-p ${port}`, '-c listen_addresses=127.0.0.1', `-c unix_socket_directories=${baseDir}`, '-c max_connections=300',
      '-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off', '-c max_wal_size=8GB'].join(' ');
    try {
      await as(pgCtl, ['-D', dataDir, '-o', settings, '-l', logFile, '-w', 'start']);
      return {
        adminUrl: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
        major,
        stop: async () => {
          await stopServer();
          await rm(baseDir, { recursive: true, force: true });
        },
      };
    } catch (error) {
      // pg_ctl may give up waiting while the server still starts: never leave one running behind.
      await stopServer().catch(() => {});
      const log = (await readFile(logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-5).join('\n');
      if (attempt < 3 && /could not bind|Address already in use/.test(log)) continue;
      throw new Error(`PostgreSQL ${major} did not start in ${dataDir}: ${(error as Error).message}\n${log}`);
    }
  }
}
