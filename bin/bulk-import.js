#!/usr/bin/env node
// Entry point of the `bulk-import` CLI. In a source checkout it runs the TypeScript sources through tsx; in a built
// image (Dockerfile) only `dist/` exists and the compiled JavaScript runs, so production never compiles at start-up.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

// The pinned AWS SDK warns on every start that its future releases will need Node 22; we pin versions, so the
// warning is noise in operators' logs. An explicit setting in the environment still wins.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

// Tracing (worker/tracing/sdk.ts) starts before the rest of the code loads, so that the pg and AWS SDK packages are
// instrumented when they are first imported; it stays off unless the standard OTEL_* variables ask for it.
const sourceEntry = fileURLToPath(new URL('../worker/cli/main.ts', import.meta.url));
if (existsSync(sourceEntry)) {
  // tsx is a devDependency and must stay one: the image has no sources and no tsx (`npm ci --omit=dev`). The
  // specifier is a variable so that the production dependency check (`knip --production`, .ci/run) does not count
  // this checkout-only path as production use of tsx, and so fails if tsx is ever listed in `dependencies` again.
  const tsxApi = 'tsx/esm/api';
  const { register } = await import(tsxApi);
  register();
  await (await import('../worker/tracing/sdk.ts')).startTracing();
  await import('../worker/cli/main.ts');
} else {
  await (await import('../dist/worker/tracing/sdk.js')).startTracing();
  await import('../dist/worker/cli/main.js');
}
