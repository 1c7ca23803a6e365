// The worker as the production image runs it: the compiled layout (worker/dev/compiled-layout.ts: dist/ from
// tsconfig.build.json, bin/, migrations/), started through bin/bulk-import.js, not the TypeScript sources through tsx
// (whose on-the-fly compilation at start-up is a development convenience). bin/ also starts the trace SDK when the
// OTEL_* variables ask for it, in the same module graph as the worker's spans (worker/tracing/sdk.ts).
import { DEFAULTS } from '../../infra/bulk-import-worker-props.js';
import { buildCompiledLayout } from '../../worker/dev/compiled-layout.js';

/** Builds the image's layout in `dir` (without worker/dev, as the image) and returns its bin/bulk-import.js. */
export async function buildCompiledWorker(dir: string, log: (line: string) => void): Promise<string> {
  const { cliEntry, diagnostics } = await buildCompiledLayout({ dir, withoutDev: true });
  // tsc still emits JavaScript when some file of the tree has a type error; the worker only needs what it imports.
  if (diagnostics) log(`  note: tsc reported type errors in the tree; using the JavaScript it emitted anyway:\n${diagnostics}`);
  return cliEntry;
}

/** The node flags the production worker runs with (the task definition's default command), for benchmarks to match. */
export function productionNodeFlags(): string[] {
  const [, ...args] = DEFAULTS.workerCommand;
  return args.filter((arg) => arg.startsWith('--'));
}
