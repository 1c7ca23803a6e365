// Tracing for the in-process benchmarks (bench:queue runs its worker in the bench process): loaded with --import
// before the bench, so the pg instrumentation is in place when pg loads, as bin/bulk-import.js does for the CLI.
// Off unless the standard variables ask for traces (worker/tracing/sdk.ts).
//
//   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 OTEL_EXPORTER_OTLP_PROTOCOL=http/json \
//     node --import tsx --import ./bench/tracing-preload.ts bench/queue.ts
import { startTracing, stopTracing } from '../worker/tracing/sdk.js';

if (await startTracing()) {
  console.log('tracing on: exporting to the OTLP endpoint of the environment');
  process.once('beforeExit', () => void stopTracing());
}
