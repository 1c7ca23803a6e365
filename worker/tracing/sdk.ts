// The OpenTelemetry SDK, set up once per process by the CLI entry (bin/bulk-import.js) before the rest of the code
// loads, and only when the standard variables ask for traces: OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_TRACES_EXPORTER (OTEL_SDK_DISABLED=true wins). Everything else is the
// SDK's own reading of the standard variables: protocol, headers, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER(_ARG), OTEL_BSP_*. Off, nothing of the SDK is even loaded and @opentelemetry/api stays a no-op.
//
// The pg and @aws-sdk packages are CommonJS: the instrumentations patch them through the CommonJS loader when they are
// first loaded, which is why this runs before worker/cli/main.ts is imported (ESM imports of them go through it too).
/** What the entry point keeps to flush the spans still buffered when the command ends. */
export interface TracingHandle {
  shutdown(): Promise<void>;
}

type Env = Record<string, string | undefined>;

let running: TracingHandle | undefined;

/** True when the standard OTel variables ask for traces (this module is where the process decides). */
export function tracingRequested(env: Env): boolean {
  if (env.OTEL_SDK_DISABLED?.trim().toLowerCase() === 'true') return false;
  const exporters = env.OTEL_TRACES_EXPORTER?.split(',').map((name) => name.trim()).filter(Boolean) ?? [];
  if (exporters.length > 0) return !exporters.every((name) => name === 'none');
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT?.trim() || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT?.trim());
}

/**
 * Starts the trace SDK when asked for (see above); a second call is a no-op. Only traces: metrics stay CloudWatch
 * metrics (worker/ops/) and logs stay JSON lines on stdout, so the SDK's metric and log pipelines are left unset.
 */
export async function startTracing(env: Env = process.env): Promise<TracingHandle | undefined> {
  if (running || !tracingRequested(env)) return running;
  const [{ NodeSDK }, { PgInstrumentation }, { AwsInstrumentation }] = await Promise.all([
    import('@opentelemetry/sdk-node'),
    import('@opentelemetry/instrumentation-pg'),
    import('@opentelemetry/instrumentation-aws-sdk'),
  ]);
  const instrumentations = [
    // Statements only inside a traced operation (a request, a run's step): the poll loop's claims, heartbeats and
    // LISTEN would otherwise make a root trace each, several a second per worker.
    new PgInstrumentation({ requireParentSpan: true, enhancedDatabaseReporting: false }),
    new AwsInstrumentation({ suppressInternalInstrumentation: true }),
  ];
  const sdk = new NodeSDK({
    serviceName: env.OTEL_SERVICE_NAME ?? 'bulk-import-worker',
    instrumentations,
    metricReaders: [],
    logRecordProcessors: [],
  });
  sdk.start();
  running = { shutdown: () => sdk.shutdown() };
  return running;
}

/**
 * Whether the SDK runs in this process. Off, every span is a no-op: the run's spans are then not even made (a claim
 * and a run span, their contexts and attributes cost about 1.8 kB of garbage per job in the black box).
 */
export function tracingStarted(): boolean {
  return running !== undefined;
}

/**
 * How long the last export at exit may take. The OTLP exporter's own timeouts and retries run to about 9 s against a
 * collector that is gone, and a worker stopped by a deploy has its shutdown grace to spend on its runs, not on traces.
 */
export const TRACE_FLUSH_DEADLINE_MS = 5_000;

/**
 * Exports the spans still buffered and stops the SDK (the CLI calls it when its command ends). Never throws: a
 * collector that is down or slow costs the spans still buffered (one line on stderr says so), never the command's
 * exit code. Resolves false when the export was left behind: the exporter's socket or retry timer may still hold the
 * event loop, so the caller ends the process itself.
 */
export async function stopTracing(deadlineMs = TRACE_FLUSH_DEADLINE_MS): Promise<boolean> {
  const handle = running;
  running = undefined;
  if (!handle) return true;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), deadlineMs);
  });
  try {
    const outcome = await Promise.race([handle.shutdown().then(() => 'flushed' as const), deadline]);
    if (outcome === 'flushed') return true;
    process.stderr.write(`traces: the last spans were not exported within ${deadlineMs} ms of exit; left behind\n`);
    return false;
  } catch (error) {
    // The first line only, cut: an exporter's error may carry a collector's whole answer.
    const reason = (error instanceof Error ? error.message : String(error)).split('\n', 1)[0]!.slice(0, 300);
    process.stderr.write(`traces: the last spans were not exported at exit: ${reason}\n`);
    return false;
  } finally {
    clearTimeout(timer);
  }
}
