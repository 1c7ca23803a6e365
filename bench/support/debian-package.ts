// A Debian package a benchmark needs (a peer to compare with, a load generator): installed with apt-get when missing
// and running as root; otherwise the benchmark is told how to install it, and goes on without it.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const exec = promisify(execFile);

async function installed(pkg: string, binary: string): Promise<boolean> {
  try {
    const { stdout } = await exec('dpkg-query', ['-W', '-f=${Status}', pkg]);
    return stdout.includes('install ok installed') && existsSync(binary);
  } catch {
    return false;
  }
}

async function aptInstall(pkg: string, log: (line: string) => void): Promise<void> {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    await exec('apt-get', ['install', '-y', '-q', pkg], { env, maxBuffer: 64 * 1024 * 1024 });
  } catch {
    log(`  apt-get install failed; refreshing the package lists (apt-get update) and trying once more`);
    await exec('apt-get', ['update', '-q'], { env, maxBuffer: 64 * 1024 * 1024 });
    await exec('apt-get', ['install', '-y', '-q', pkg], { env, maxBuffer: 64 * 1024 * 1024 });
  }
}

/**
 * True when `binary` from the Debian package `pkg` is there, installing the package first if it is missing and this
 * process may (root). False, with the reason logged, when it cannot be had; `purpose` says what goes without it.
 */
export async function ensureDebianPackage(pkg: string, binary: string, purpose: string, log: (line: string) => void): Promise<boolean> {
  if (await installed(pkg, binary)) return true;
  if (process.getuid?.() !== 0) {
    log(`${purpose} needs the Debian package ${pkg}: run \`sudo apt-get install -y ${pkg}\` and run the benchmark again. Going on without it.`);
    return false;
  }
  log(`Installing the Debian package ${pkg} (apt-get install -y ${pkg}) …`);
  try {
    await aptInstall(pkg, log);
  } catch (error) {
    log(`Could not install ${pkg} (${(error as Error).message.split('\n')[0]}); going on without it.`);
    return false;
  }
  if (await installed(pkg, binary)) return true;
  log(`${pkg} did not install; going on without it.`);
  return false;
}
