// Child process that hosts s3rver (a real S3 REST server on local disk). It runs in its own process because s3rver's
// continuation tokens use a cipher OpenSSL 3 only offers with --openssl-legacy-provider, a flag we do not want on the
// worker or the tests. It prints one JSON line with its port, and exits when its parent goes away (stdin closes).
import S3rver from 's3rver';

const directory = process.argv[2];
const port = Number(process.argv[3] ?? 0);
if (!directory) {
  process.stderr.write('usage: s3-server-process <directory> [port]\n');
  process.exit(2);
}
const server = new S3rver({ address: '127.0.0.1', port, directory, silent: true, resetOnClose: false });
const address = (await server.run()) as { port: number };
process.stdout.write(`${JSON.stringify({ port: address.port })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
