// The peer: `aws s3 cp --recursive` from the Debian package `awscli`. Installed here when missing and running as
// root (apt-get); otherwise the benchmark says how to install it and skips that column.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const exec = promisify(execFile);
export const DEBIAN_AWS = '/usr/bin/aws';

export interface AwsCli {
  path: string;
  version: string;
}

async function installed(): Promise<boolean> {
  try {
    await exec('dpkg-query', ['-W', '-f=${Status}', 'awscli']).then(({ stdout }) => {
      if (!stdout.includes('install ok installed')) throw new Error('not installed');
    });
    return existsSync(DEBIAN_AWS);
  } catch {
    return false;
  }
}

async function aptInstall(log: (line: string) => void): Promise<void> {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  try {
    await exec('apt-get', ['install', '-y', '-q', 'awscli'], { env, maxBuffer: 64 * 1024 * 1024 });
  } catch {
    log('  apt-get install failed; refreshing the package lists (apt-get update) and trying once more');
    await exec('apt-get', ['update', '-q'], { env, maxBuffer: 64 * 1024 * 1024 });
    await exec('apt-get', ['install', '-y', '-q', 'awscli'], { env, maxBuffer: 64 * 1024 * 1024 });
  }
}

/** The Debian aws CLI, installing it if needed and allowed; undefined (with the reason logged) when unavailable. */
export async function ensureAwsCli(log: (line: string) => void): Promise<AwsCli | undefined> {
  if (!(await installed())) {
    if (process.getuid?.() !== 0) {
      log('The aws CLI column needs the Debian package awscli: run `sudo apt-get install -y awscli` and run the benchmark again. Skipping it.');
      return undefined;
    }
    log('Installing the Debian package awscli (apt-get install -y awscli) …');
    try {
      await aptInstall(log);
    } catch (error) {
      log(`Could not install awscli (${(error as Error).message.split('\n')[0]}); skipping the aws CLI column.`);
      return undefined;
    }
    if (!(await installed())) {
      log('awscli did not install; skipping the aws CLI column.');
      return undefined;
    }
  }
  const { stdout, stderr } = await exec(DEBIAN_AWS, ['--version']);
  return { path: DEBIAN_AWS, version: (stdout || stderr).trim().split(' ')[0] ?? 'aws-cli' };
}
