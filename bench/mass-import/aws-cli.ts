// The peer: `aws s3 cp --recursive` from the Debian package `awscli`. Installed here when missing and running as
// root (apt-get); otherwise the benchmark says how to install it and skips that column.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { ensureDebianPackage } from '../support/debian-package.js';

const exec = promisify(execFile);
export const DEBIAN_AWS = '/usr/bin/aws';

export interface AwsCli {
  path: string;
  version: string;
}

/** The Debian aws CLI, installing it if needed and allowed; undefined (with the reason logged) when unavailable. */
export async function ensureAwsCli(log: (line: string) => void): Promise<AwsCli | undefined> {
  if (!(await ensureDebianPackage('awscli', DEBIAN_AWS, 'The aws CLI column', log))) return undefined;
  const { stdout, stderr } = await exec(DEBIAN_AWS, ['--version']);
  return { path: DEBIAN_AWS, version: (stdout || stderr).trim().split(' ')[0] ?? 'aws-cli' };
}
