// A local collector stand-in for the tracing overhead runs: an OTLP/HTTP receiver that answers every export like a
// collector and counts what it got. Prints its endpoint at start and the totals when it stops (SIGINT/SIGTERM).
//
//   node --import tsx bench/otlp-sink.ts 4318 &
//   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/json npm run bench:mass-import
import { createServer } from 'node:http';
import { gunzipSync } from 'node:zlib';

const port = Number(process.argv[2] ?? 4318);
const totals = { exports: 0, spans: 0, bytes: 0, undecoded: 0 };

const server = createServer((request, response) => {
  const chunks: Buffer[] = [];
  request.on('data', (chunk: Buffer) => chunks.push(chunk));
  request.on('end', () => {
    const raw = Buffer.concat(chunks);
    totals.exports += 1;
    totals.bytes += raw.length;
    try {
      const body = (request.headers['content-encoding'] ?? '').includes('gzip') ? gunzipSync(raw) : raw;
      const decoded = JSON.parse(body.toString('utf8')) as { resourceSpans?: Array<{ scopeSpans: Array<{ spans?: unknown[] }> }> };
      for (const resource of decoded.resourceSpans ?? []) for (const scope of resource.scopeSpans) totals.spans += scope.spans?.length ?? 0;
    } catch {
      // protobuf (the SDK's default protocol): counted in bytes only
      totals.undecoded += 1;
    }
    response.writeHead(200, { 'content-type': 'application/json' });
    response.end('{}');
  });
});

server.listen(port, '127.0.0.1', () => console.log(`otlp sink listening on http://127.0.0.1:${port}`));
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.log(`otlp sink: ${JSON.stringify(totals)}`);
    server.close();
    process.exit(0);
  });
}
