// Starts the operational services of a worker process from the configuration and stops them in order:
// health heartbeat (always), per-job metrics and queue gauges (when METRICS_NAMESPACE is set), task scale-in
// protection (when ECS_AGENT_URI is set, i.e. inside an ECS task).
import type { Config } from '../config.js';
import type { DatabaseTarget } from '../db/connection.js';
import type { DatabaseStatus } from '../db/database-status.js';
import type { Logger } from '../logger.js';
import type { Worker } from '../runner/worker.js';
import { GaugeLeadership } from './gauge-leadership.js';
import { HealthHeartbeat } from './health-heartbeat.js';
import { createCloudWatchClient, MetricsPublisher, publishJobMetrics } from './metrics.js';
import { QueueGaugePublisher } from './queue-gauges.js';
import { TaskProtection } from './task-protection.js';

export interface OperationsOptions {
  config: Config;
  database: DatabaseTarget;
  /** Reported by the health heartbeat, so the health check can tell an outage from a configuration error. */
  databaseStatus?: DatabaseStatus;
  worker: Worker;
  /** The kinds this build knows: the gauges publish them even when idle (zeros). */
  kinds: readonly string[];
  log: Logger;
}

export interface Operations {
  heartbeat: HealthHeartbeat;
  metrics: MetricsPublisher | undefined;
  gauges: QueueGaugePublisher | undefined;
  protection: TaskProtection | undefined;
  /** Call after the worker has stopped: releases protection, sends the last metrics, removes the heartbeat. */
  stop(): Promise<void>;
}

/** Attach before `worker.start()`, so the first loop turn already refreshes the heartbeat. */
export function startOperations(options: OperationsOptions): Operations {
  const { config, log, worker } = options;
  const heartbeat = new HealthHeartbeat({ file: config.health.heartbeatFile, maxAgeMs: config.health.maxAgeMs }, log).attach(
    worker,
    options.databaseStatus,
  );

  const cloudWatch = createCloudWatchClient(config.metrics, config.awsRegion);
  let metrics: MetricsPublisher | undefined;
  let gauges: QueueGaugePublisher | undefined;
  let detachJobMetrics = () => {};
  if (cloudWatch && config.metrics.namespace) {
    metrics = new MetricsPublisher(cloudWatch, config.metrics.namespace, log).start();
    detachJobMetrics = publishJobMetrics(worker, metrics);
    gauges = new QueueGaugePublisher({
      leadership: new GaugeLeadership(options.database, config.worker.workerId, log),
      publisher: metrics,
      knownKinds: options.kinds,
      intervalMs: config.metrics.gaugeIntervalMs,
      log,
      ...(options.databaseStatus ? { status: options.databaseStatus } : {}),
    }).start();
  }

  const protection = config.ecsAgentUri ? new TaskProtection({ agentUri: config.ecsAgentUri }, log).attach(worker) : undefined;

  return {
    heartbeat,
    metrics,
    gauges,
    protection,
    async stop() {
      detachJobMetrics();
      await Promise.allSettled([heartbeat.stop(), gauges?.stop(), protection?.stop()]);
      await metrics?.stop();
      cloudWatch?.destroy();
    },
  };
}
