// Queue gauges to CloudWatch, published every METRICS_GAUGE_INTERVAL_MS by one elected worker (not by every task,
// which would multiply the data points and the cost by desiredCount). Per kind with the dimension `Kind`, and as
// dimensionless totals — the series the infrastructure's alarms and autoscaling read:
//   QueuedJobs, DueJobs, OldestQueuedAgeSeconds, RunningJobs, OldestRunningAgeSeconds, DeadJobs, MaxConsecutiveFailures.
// `bulk-import gauges --once` publishes the same points from a scheduled task, so they exist while no worker runs.
import type { DatabaseStatusSink } from '../db/pool.js';
import type { Logger } from '../logger.js';
import { PeriodicService } from '../maintenance/periodic-service.js';
import { readQueueGauges, totalGauges, type KindGauges } from '../queue/gauges.js';
import type { GaugeLeadership } from './gauge-leadership.js';
import type { MetricPoint, MetricsPublisher } from './metrics.js';

export const GAUGE_METRICS = {
  queued: { name: 'QueuedJobs', unit: 'Count' },
  due: { name: 'DueJobs', unit: 'Count' },
  oldestQueuedAgeSeconds: { name: 'OldestQueuedAgeSeconds', unit: 'Seconds' },
  running: { name: 'RunningJobs', unit: 'Count' },
  oldestRunningAgeSeconds: { name: 'OldestRunningAgeSeconds', unit: 'Seconds' },
  dead: { name: 'DeadJobs', unit: 'Count' },
  maxConsecutiveFailures: { name: 'MaxConsecutiveFailures', unit: 'Count' },
} as const satisfies Record<keyof Omit<KindGauges, 'kind'>, { name: string; unit: MetricPoint['unit'] }>;

/** The data points of one publication: each gauge per kind, and each as a total without dimensions. */
export function gaugePoints(perKind: readonly KindGauges[]): MetricPoint[] {
  const points: MetricPoint[] = [];
  const add = (gauges: Omit<KindGauges, 'kind'>, dimensions?: Record<string, string>) => {
    for (const [field, metric] of Object.entries(GAUGE_METRICS) as Array<[keyof typeof GAUGE_METRICS, (typeof GAUGE_METRICS)[keyof typeof GAUGE_METRICS]]>) {
      points.push({ name: metric.name, unit: metric.unit, value: gauges[field], ...(dimensions ? { dimensions } : {}) });
    }
  };
  for (const gauges of perKind) add(gauges, { Kind: gauges.kind });
  add(totalGauges(perKind));
  return points;
}

export interface QueueGaugePublisherOptions {
  leadership: GaugeLeadership;
  publisher: MetricsPublisher;
  /** Kinds always published (zeros when idle): the worker's registered kinds. */
  knownKinds: readonly string[];
  intervalMs: number;
  log: Logger;
  /** Where a round failed by a database outage goes: the worker's one "database unavailable" line, not one per round. */
  status?: DatabaseStatusSink;
}

export class QueueGaugePublisher {
  private readonly service: PeriodicService;

  constructor(private readonly options: QueueGaugePublisherOptions) {
    this.service = new PeriodicService(
      'queue-gauges',
      options.intervalMs,
      async () => {
        await this.publishIfLeader();
      },
      options.log,
      options.status,
    );
  }

  start(): this {
    this.service.start();
    return this;
  }

  /** One round: publish when this worker leads (or just took the lead). Resolves true when it published. */
  async publishIfLeader(): Promise<boolean> {
    const session = await this.options.leadership.lead();
    if (!session) return false;
    let gauges: KindGauges[];
    try {
      gauges = await readQueueGauges(session, this.options.knownKinds);
    } catch (error) {
      // The session is suspect: let the lock go with it, so a healthy worker can lead.
      await this.options.leadership.drop(error);
      throw error;
    }
    return this.options.publisher.publish(gaugePoints(gauges));
  }

  async stop(): Promise<void> {
    await this.service.stop();
    await this.options.leadership.close();
  }
}

/** What one stand-alone round did: published, left to a worker that leads, or refused by CloudWatch. */
export type GaugeRoundOutcome = 'published' | 'skipped' | 'failed';

export interface GaugeRound {
  outcome: GaugeRoundOutcome;
  /** The gauges read (empty when skipped: a leading worker reads and publishes them). */
  gauges: KindGauges[];
}

/**
 * One publication without a worker (`bulk-import gauges --once`, from a scheduled task, so the gauges exist while
 * the service runs 0 tasks). It takes the same leadership as the workers: while a worker leads, that worker
 * publishes and this round is skipped, so the series never gets two points per interval.
 */
export async function publishGaugesOnce(options: Omit<QueueGaugePublisherOptions, 'intervalMs' | 'log' | 'status'>): Promise<GaugeRound> {
  try {
    const session = await options.leadership.lead();
    if (!session) return { outcome: 'skipped', gauges: [] };
    const gauges = await readQueueGauges(session, options.knownKinds);
    const published = await options.publisher.publish(gaugePoints(gauges));
    return { outcome: published ? 'published' : 'failed', gauges };
  } finally {
    await options.leadership.close();
  }
}
