// CloudWatch metrics: the client factory, a publisher that batches PutMetricData calls, and the per-job metrics
// (outcome, duration, the handler's own figures) taken from the runner's `jobFinished` events. Everything here is
// off when METRICS_NAMESPACE is unset, and a failed publication is logged and dropped: metrics never stop the worker.
import { CloudWatchClient, PutMetricDataCommand, type MetricDatum, type StandardUnit } from '@aws-sdk/client-cloudwatch';
import type { MetricsConfig } from '../config.js';
import type { Logger } from '../logger.js';
import type { JobFinishedEvent, Worker } from '../runner/worker.js';

/**
 * A CloudWatch client for METRICS_NAMESPACE (undefined when metrics are off); CLOUDWATCH_ENDPOINT overrides AWS.
 * Credentials come from the SDK's default chain (the task role on ECS) unless given.
 */
export function createCloudWatchClient(
  metrics: MetricsConfig,
  region: string,
  credentials?: { accessKeyId: string; secretAccessKey: string },
): CloudWatchClient | undefined {
  if (!metrics.namespace) return undefined;
  return new CloudWatchClient({ region, endpoint: metrics.cloudWatchEndpoint, credentials, maxAttempts: 3 });
}

export interface MetricPoint {
  name: string;
  value: number;
  unit: StandardUnit;
  /** No dimensions gives the fleet-wide series the alarms read. */
  dimensions?: Record<string, string>;
}

// PutMetricData takes up to 1,000 data points and 1 MB per call; 500 points of ours stay far below both.
const MAX_POINTS_PER_CALL = 500;

interface Aggregate {
  name: string;
  unit: StandardUnit;
  dimensions: Record<string, string>;
  count: number;
  sum: number;
  min: number;
  max: number;
}

export interface MetricsPublisherOptions {
  /** How often aggregated job metrics are sent. */
  flushIntervalMs?: number;
  /** How long one PutMetricData (with the SDK's retries) may take; default PUT_METRIC_DATA_TIMEOUT_MS. */
  callTimeoutMs?: number;
  /** How long stop() waits for the last calls; default STOP_TIMEOUT_MS. */
  stopTimeoutMs?: number;
}

/**
 * A PutMetricData that has not answered in this long is abandoned and its points dropped. The SDK's own socket timeout
 * is minutes: a call that hung held the queue gauges' round, and stop() with it.
 */
export const PUT_METRIC_DATA_TIMEOUT_MS = 5_000;

/**
 * stop() abandons what is still in flight after this long. It runs in the shutdown's last 20 s (after the drain, with
 * the notification publisher, the maintenance services and the pool still to close before ECS's SIGKILL), so the
 * last metrics get a few seconds, not the rest of that time.
 */
export const STOP_TIMEOUT_MS = 5_000;

/**
 * Sends metric points to one namespace. `record` aggregates points per name, unit and dimensions into statistic
 * sets sent every flush interval (ten thousand short jobs a minute cost a few data points, not ten thousand);
 * `publish` sends points at once (gauges).
 */
export class MetricsPublisher {
  private pending = new Map<string, Aggregate>();
  private timer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private failing = false;
  /** Aborted by stop() once its time is up: calls still in flight are abandoned. */
  private readonly stopping = new AbortController();

  constructor(
    private readonly client: CloudWatchClient,
    readonly namespace: string,
    private readonly log: Logger,
    private readonly options: MetricsPublisherOptions = {},
  ) {}

  start(): this {
    this.timer = setInterval(() => void this.flush(), this.options.flushIntervalMs ?? 10_000);
    this.timer.unref();
    return this;
  }

  record(point: MetricPoint): void {
    if (!Number.isFinite(point.value)) return;
    const dimensions = point.dimensions ?? {};
    const key = JSON.stringify([point.name, point.unit, Object.entries(dimensions).sort()]);
    const aggregate = this.pending.get(key);
    if (aggregate) {
      aggregate.count += 1;
      aggregate.sum += point.value;
      aggregate.min = Math.min(aggregate.min, point.value);
      aggregate.max = Math.max(aggregate.max, point.value);
    } else {
      this.pending.set(key, { name: point.name, unit: point.unit, dimensions, count: 1, sum: point.value, min: point.value, max: point.value });
    }
  }

  /** Sends the aggregated points now. */
  async flush(): Promise<void> {
    if (this.pending.size === 0) return;
    const timestamp = new Date();
    const data: MetricDatum[] = [...this.pending.values()].map((aggregate) => ({
      MetricName: aggregate.name,
      Unit: aggregate.unit,
      Timestamp: timestamp,
      Dimensions: toDimensions(aggregate.dimensions),
      StatisticValues: { SampleCount: aggregate.count, Sum: aggregate.sum, Minimum: aggregate.min, Maximum: aggregate.max },
    }));
    this.pending = new Map();
    await this.send(data);
  }

  /** Sends these points now, each as one value with the same timestamp. Resolves false when a call failed. */
  async publish(points: MetricPoint[], timestamp = new Date()): Promise<boolean> {
    return this.send(
      points
        .filter((point) => Number.isFinite(point.value))
        .map((point) => ({
          MetricName: point.name,
          Unit: point.unit,
          Timestamp: timestamp,
          Dimensions: toDimensions(point.dimensions ?? {}),
          Value: point.value,
        })),
    );
  }

  private async send(data: MetricDatum[]): Promise<boolean> {
    let ok = true;
    for (let start = 0; start < data.length; start += MAX_POINTS_PER_CALL) {
      const abortSignal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.options.callTimeoutMs ?? PUT_METRIC_DATA_TIMEOUT_MS)]);
      const call = this.client
        .send(new PutMetricDataCommand({ Namespace: this.namespace, MetricData: data.slice(start, start + MAX_POINTS_PER_CALL) }), { abortSignal })
        .then(() => {
          if (this.failing) this.log.info({ namespace: this.namespace }, 'publishing metrics works again');
          this.failing = false;
        })
        .catch((error: unknown) => {
          ok = false;
          // Logged once per outage; the points are dropped (metrics are a view, not a record).
          if (!this.failing) this.log.warn({ err: error, namespace: this.namespace }, 'could not publish metrics; dropping them');
          this.failing = true;
        });
      this.inFlight.add(call);
      await call.finally(() => this.inFlight.delete(call));
    }
    return ok;
  }

  /** Sends what is pending and waits for calls in flight, for at most stopTimeoutMs: then they are abandoned. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    const timeUp = setTimeout(() => this.stopping.abort(new Error('metrics publisher stopped')), this.options.stopTimeoutMs ?? STOP_TIMEOUT_MS);
    try {
      await this.flush();
      // Calls started before stop() (a gauge, a flush of the interval): each ends by its timeout or by the abort.
      await Promise.all([...this.inFlight]);
    } finally {
      clearTimeout(timeUp);
    }
  }
}

function toDimensions(dimensions: Record<string, string>): MetricDatum['Dimensions'] {
  const entries = Object.entries(dimensions);
  return entries.length === 0 ? undefined : entries.map(([Name, Value]) => ({ Name, Value }));
}

/** What `Outcome` says for each way a run can leave the worker's hands. */
export function outcomeOf(state: JobFinishedEvent['state']): string {
  switch (state) {
    case 'queued':
      return 'retry';
    case 'waiting':
      return 'outage_wait';
    case 'lost':
      return 'lease_lost';
    case 'unrecorded':
      return 'failure_unrecorded';
    default:
      return state;
  }
}

const METRIC_NAME = /^[A-Za-z][A-Za-z0-9._-]{0,254}$/;
/** One point per finished run, by Kind and Outcome (and by Outcome alone); the stack's failure alarms sum it. */
export const JOBS_FINISHED_METRIC = 'JobsFinished';

/**
 * The metrics of one finished run:
 * - `JobsFinished` (Count) by Kind and Outcome, and by Outcome alone;
 * - `JobDuration` (Milliseconds) by Kind, for runs that ended or were retried (not for shutdown releases);
 * - each figure the handler returned in `metrics` (Files, Bytes, Rows, FailedItems …) by Kind, in its declared unit.
 */
export function jobMetricPoints(event: JobFinishedEvent): MetricPoint[] {
  const kind = event.job.kind;
  const outcome = outcomeOf(event.state);
  const points: MetricPoint[] = [
    { name: JOBS_FINISHED_METRIC, value: 1, unit: 'Count', dimensions: { Kind: kind, Outcome: outcome } },
    { name: JOBS_FINISHED_METRIC, value: 1, unit: 'Count', dimensions: { Outcome: outcome } },
  ];
  if (event.state !== 'released') {
    points.push({ name: 'JobDuration', value: event.durationMs, unit: 'Milliseconds', dimensions: { Kind: kind } });
  }
  for (const [name, { value, unit }] of Object.entries(event.metrics ?? {})) {
    if (METRIC_NAME.test(name) && typeof value === 'number' && Number.isFinite(value)) {
      points.push({ name, value, unit, dimensions: { Kind: kind } });
    }
  }
  return points;
}

/** Records the metrics of every run the worker finishes; returns a function that detaches it. */
export function publishJobMetrics(worker: Worker, publisher: MetricsPublisher): () => void {
  const onFinished = (event: JobFinishedEvent) => {
    for (const point of jobMetricPoints(event)) publisher.record(point);
  };
  worker.on('jobFinished', onFinished);
  return () => worker.off('jobFinished', onFinished);
}
