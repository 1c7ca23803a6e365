// A handler's own figures for a finished run (Files, BytesImported, Rows …), published as CloudWatch metrics by
// Kind (ops/metrics.ts). Each figure declares its unit here, where it is made, instead of the publisher guessing it.

/** The CloudWatch units handlers' figures come in. */
export type MetricUnit = 'Count' | 'Bytes';

export interface JobMetric {
  value: number;
  unit: MetricUnit;
}

/** A run's figures by metric name. */
export type JobMetrics = Record<string, JobMetric>;

/** A number of things: files, rows, findings … */
export function countMetric(value: number): JobMetric {
  return { value, unit: 'Count' };
}

/** A size in bytes. */
export function bytesMetric(value: number): JobMetric {
  return { value, unit: 'Bytes' };
}

/** The figures as plain numbers (for logs and span attributes). */
export function metricValues(metrics: JobMetrics): Record<string, number> {
  return Object.fromEntries(Object.entries(metrics).map(([name, metric]) => [name, metric.value]));
}
