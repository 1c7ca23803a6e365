// A PostgreSQL server from Debian's packages, for the test project that runs the queue's tests on an older major
// version than the embedded one (18): the distribution's release (15 on bookworm), the oldest that production may run
// (README, "PostgreSQL versions"). Installed with apt-get when missing (CI's fresh machine), once per machine.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../worker/dev/free-port.js';

const run = promisify(execFile);
const PACKAGES = '/usr/lib/postgresql';
const USER = 'postgres';
const PASSWORD = 'postgres';

export interface DebianPostgres {
  /** URL of the `postgres` maintenance database. */
  adminUrl: string;
  /** The major version the server runs. */
  major: number;
  stop(): Promise<void>;
}

/** The bin directory of the oldest PostgreSQL Debian has installed, installing the release's default when none is. */
export function debianPostgresBinaries(): { binDir: string; major: number } {
  const installed = () =>
    (existsSync(PACKAGES) ? readdirSync(PACKAGES) : [])
      .filter((name) => /^\d+$/.test(name) && existsSync(join(PACKAGES, name, 'bin', 'postgres')))
      .map(Number)
      .sort((a, b) => a - b);
  if (installed().length === 0) {
    if (process.getuid?.() !== 0) throw new Error(`no PostgreSQL under ${PACKAGES}: install Debian's postgresql package (apt-get needs root)`);
    // Several runs may ask at once: one install at a time (flock), the later ones find it there.
    const install = 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql';
    execFileSync('sh', ['-c', `flock /tmp/bulk-import-postgresql.lock sh -c 'ls ${PACKAGES}/*/bin/postgres >/dev/null 2>&1 || (${install})'`], {
      stdio: 'inherit',
      timeout: 600_000,
    });
  }
  const major = installed()[0];
  if (major === undefined) throw new Error(`no PostgreSQL under ${PACKAGES} after apt-get install postgresql`);
  return { binDir: join(PACKAGES, String(major), 'bin'), major };
}

/**
 * Starts a throw-away cluster in `baseDir` (which must exist and be traversable by the `postgres` user when running as
 * root: Postgres refuses root), with the embedded server's user, password and fast settings.
 */
export async function startDebianPostgres(baseDir: string): Promise<DebianPostgres> {
  const { binDir, major } = debianPostgresBinaries();
  const asRoot = process.getuid?.() === 0;
  const dataDir = join(baseDir, 'data');
  const passwordFile = join(baseDir, 'password');
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
  const port = await freePort();
  const settings = [`-p ${port}`, '-c listen_addresses=127.0.0.1', `-c unix_socket_directories=${baseDir}`, '-c max_connections=300',
    '-c fsync=off', '-c synchronous_commit=off', '-c full_page_writes=off', '-c max_wal_size=8GB'].join(' ');
  const pgCtl = join(binDir, 'pg_ctl');
  await as(pgCtl, ['-D', dataDir, '-o', settings, '-l', join(baseDir, 'server.log'), '-w', 'start']);
  return {
    adminUrl: `postgres://${USER}:${PASSWORD}@127.0.0.1:${port}/postgres`,
    major,
    stop: async () => {
      await as(pgCtl, ['-D', dataDir, '-m', 'fast', '-w', 'stop']).catch(() => {});
      await rm(baseDir, { recursive: true, force: true });
    },
  };
}
