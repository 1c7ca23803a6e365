// Wires one worker process together from the configuration: pool, S3 client, handlers, runner, maintenance
// services, signal handling. The `worker` CLI command and the local run both start workers through this.
import { setTimeout as sleep } from 'node:timers/promises';
import type pg from 'pg';
import type { Config } from '../config.js';
import { requireDatabase } from '../config.js';
import { DatabaseStatus } from '../db/database-status.js';
import { createPool } from '../db/pool.js';
import { SilentConnectionWatch, type SilentConnectionWatchOptions } from '../db/silent-connections.js';
import { waitForDatabase } from '../db/readiness.js';
import { defaultRegistry, type HandlerRegistry } from '../handlers/registry.js';
import type { HandlerServices } from '../handlers/types.js';
import type { Logger } from '../logger.js';
import { createRescuer } from '../maintenance/rescuer.js';
import { createArchiver } from '../maintenance/archiver.js';
import { createRetention } from '../maintenance/retention.js';
import type { PeriodicService } from '../maintenance/periodic-service.js';
import { startNotifications, type NotificationPublisher } from '../notifications/outbox-publisher.js';
import { startOperations, type Operations } from '../ops/operations.js';
import { createS3Client } from '../storage/s3-client.js';
import { stateNotificationOption, Worker } from './worker.js';

export interface WorkerProcessOptions {
  config: Config;
  log: Logger;
  concurrency?: number;
  kinds?: string[];
  exitWhenIdle?: boolean;
  /** Claim only these runs (Worker's option); undefined claims any. */
  onlyJobs?: readonly number[];
  registry?: HandlerRegistry;
  /** How the main pool's connections are checked for silence (tests shorten it); default SILENT_CONNECTION_DEFAULTS. */
  silentConnections?: SilentConnectionWatchOptions;
}

export interface RunningWorker {
  worker: Worker;
  services: HandlerServices;
  maintenance: PeriodicService[];
  /** Health heartbeat, metrics, queue gauges, task scale-in protection (worker/ops/). */
  operations: Operations;
  /** Publishes terminal-outcome notifications to SNS (NOTIFICATIONS_TOPIC_ARN); undefined when unset. */
  notifications: NotificationPublisher | undefined;
  /** What the worker's sessions report about the database (ok, unavailable, misconfigured). */
  databaseStatus: DatabaseStatus;
  /** Stops everything in order: runner (drain + release), maintenance, clients. */
  stop(): Promise<void>;
  /** Resolves once the worker has stopped and everything is closed. */
  closed: Promise<void>;
}

export async function startWorkerProcess(options: WorkerProcessOptions): Promise<RunningWorker> {
  const { config, log } = options;
  const database = requireDatabase(config);
  const concurrency = options.concurrency ?? config.worker.concurrency;
  const databaseStatus = new DatabaseStatus(log);
  // Handler statements have no client-side bound (they may rightly run for minutes): a connection that goes silent
  // under one is found by asking the server instead (silent-connections.ts).
  const silence = new SilentConnectionWatch(database, log, options.silentConnections);
  // Handler work (item transactions, progress) and maintenance; claims, heartbeats and outcomes have sessions of their own.
  const pool = createPool(database, {
    max: Math.max(config.databasePoolSize, Math.min(concurrency + 4, 50)),
    sessionOptions: stateNotificationOption(config.worker.stateNotifications),
    status: databaseStatus,
    sessionName: 'pool',
    onConnect: silence.onConnect,
  });
  const s3 = config.s3Bucket
    ? createS3Client({
        region: config.awsRegion,
        endpoint: config.s3Endpoint,
        forcePathStyle: config.s3ForcePathStyle,
        credentialSourceConfigured: config.awsCredentialsConfigured,
      })
    : undefined;
  const services: HandlerServices = { config, pool, s3, bucket: config.s3Bucket };
  const registry = options.registry ?? defaultRegistry();
  // What failed to start is closed before the error goes up: an open pool would keep the process alive until its idle
  // connections time out (10 s) after the one-line error.
  const abandon = async (error: unknown): Promise<never> => {
    s3?.destroy();
    await silence.stop();
    await endPool(pool, log);
    throw error;
  };
  let worker: Worker;
  try {
    // The worker checks its kinds and ceilings first: a misconfigured worker fails at once, not after the database
    // wait (DATABASE_STARTUP_TIMEOUT_MS) and not after it connected.
    worker = new Worker(
      pool,
      registry,
      services,
      {
        ...config.worker,
        tenantKindConcurrency: config.queue.tenantKindConcurrency,
        concurrency,
        kinds: options.kinds ?? config.worker.kinds,
        exitWhenIdle: options.exitWhenIdle ?? false,
        ...(options.onlyJobs ? { onlyJobs: options.onlyJobs } : {}),
      },
      log,
      { database, status: databaseStatus, claimSession: true, listen: true },
    );
    await waitForDatabase(pool, {
      timeoutMs: config.databaseStartupTimeoutMs,
      onWaiting: (reason) => log.warn({ err: reason }, 'database not reachable yet; waiting before the first claim'),
    });
  } catch (error) {
    return abandon(error);
  }
  const maintenance = [
    createRescuer(pool, config.worker.rescueIntervalMs, log, { status: databaseStatus, holdAfterOutageMs: config.worker.leaseMs }),
    createRetention(pool, config.worker.retentionDays, config.worker.retentionIntervalMs, log, { status: databaseStatus }),
    createArchiver(pool, config.worker.archiveAfterSeconds, config.worker.archiveIntervalMs, config.worker.retentionDays, log, {
      status: databaseStatus,
    }),
  ];
  let operations: Operations | undefined;
  let notifications: NotificationPublisher | undefined;
  try {
    operations = startOperations({
      config,
      database,
      databaseStatus,
      worker,
      kinds: registry.kinds(),
      log,
    });
    notifications = await startNotifications({
      pool,
      config: config.notifications,
      region: config.awsRegion,
      retentionDays: config.worker.retentionDays,
      log,
      worker,
    });
    await worker.start();
  } catch (error) {
    await worker.stop().catch(() => {});
    await notifications?.stop().catch(() => {});
    await operations?.stop().catch(() => {});
    return abandon(error);
  }
  for (const service of maintenance) service.start();
  silence.start();
  log.info(
    { worker_id: config.worker.workerId, concurrency, kinds: options.kinds?.length ? options.kinds : registry.kinds() },
    'worker started',
  );

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      await worker.stop();
      await operations.stop();
      await notifications?.stop();
      await Promise.all(maintenance.map((service) => service.stop()));
      s3?.destroy();
      await silence.stop();
      await endPool(pool, log);
      log.info('worker stopped');
    })());
  const closed = worker.finished().then(() => stop());
  return { worker, services, maintenance, operations, notifications, databaseStatus, stop, closed };
}

/** How long closing the pool waits for connections still checked out once everything else has stopped. */
const POOL_CLOSE_TIMEOUT_MS = 2_000;

/**
 * Closes the pool, waiting at most POOL_CLOSE_TIMEOUT_MS for connections still checked out. `pool.end()` resolves only
 * once every client is back, and a handler still running after the grace time (the drain does not wait for it: its
 * lease is released and its late writes fenced) may hold one for as long as it runs — an S3 call retrying through an
 * outage, a stuck statement. Its connection is closed with the process (Postgres rolls its transaction back).
 */
async function endPool(pool: pg.Pool, log: Logger): Promise<void> {
  // An unref'd timer: it does not hold a process whose pool did close in time.
  const closed = await Promise.race([pool.end().then(() => true), sleep(POOL_CLOSE_TIMEOUT_MS, false, { ref: false })]);
  if (!closed) {
    log.warn({ in_use: pool.totalCount - pool.idleCount, waited_ms: POOL_CLOSE_TIMEOUT_MS }, 'database connections still in use after the drain; closing them with the process');
  }
}

/** SIGTERM (ECS stop) and SIGINT (Ctrl-C) start a graceful shutdown; a second signal exits at once. */
export function stopOnSignals(running: RunningWorker, log: Logger): void {
  let received = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (received) {
      log.warn({ signal }, 'second signal: exiting without waiting for the drain');
      process.exit(130);
    }
    received = true;
    log.info({ signal }, 'shutting down: draining running jobs');
    void running.stop();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}
