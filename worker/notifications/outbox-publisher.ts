// Publishes the outbox of terminal-outcome notifications to SNS. Every worker with NOTIFICATIONS_TOPIC_ARN runs one:
// a round claims due rows with FOR UPDATE SKIP LOCKED in a transaction, publishes them, marks each sent (or records
// the failure and when to try again), and commits. Exactly once per transition as far as the database can see:
// the row exists if and only if the transition committed, and is sent until marked. A worker killed before it
// published leaves the row unsent and, its session gone, unlocked: the next round anywhere sends it. The one
// window left — SNS accepted the message, the worker died before its commit — repeats the message with the same
// notification id (a FIFO topic drops it by its deduplication id; other subscribers compare `notificationId`).
// Rounds run every NOTIFICATIONS_POLL_MS, and at once when this worker finished a run in a terminal state.
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import type { NotificationsConfig } from '../config.js';
import type { Pool } from '../db/pool.js';
import type { Logger } from '../logger.js';
import {
  claimDueNotifications,
  deleteSentNotifications,
  markNotificationFailed,
  markNotificationSent,
  setNotifiedStates,
} from '../queue/notification-outbox.js';
import { TERMINAL_STATES } from '../queue/types.js';
import type { JobFinishedEvent, Worker } from '../runner/worker.js';
import { publishRequest } from './sns-message.js';

/** Rows per round's transaction. */
const BATCH = 20;
const RETRY_BASE_MS = 1_000;
const RETRY_MAX_MS = 300_000;
const CLEANUP_EVERY_MS = 3_600_000;

/** The wait before try `tries + 1`: doubling from 1 s up to 5 min, equal jitter. */
export function notificationRetryDelayMs(tries: number, random = Math.random): number {
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(tries, 20));
  return ceiling / 2 + random() * (ceiling / 2);
}

export interface NotificationPublisherOptions {
  pool: Pool;
  config: NotificationsConfig & { topicArn: string };
  region: string;
  /** Sent notifications are deleted after this many days (RETENTION_DAYS). */
  retentionDays: number;
  log: Logger;
  /** How long one Publish (with the SDK's retries) may take; default PUBLISH_TIMEOUT_MS. */
  publishTimeoutMs?: number;
}

/**
 * A Publish that has not answered in this long is abandoned and the notification tried again later. The batch's
 * rows stay locked in a transaction meanwhile: without a bound, one call that hangs (the SDK's own socket timeout is
 * minutes) outlived the session's idle_in_transaction_session_timeout (2 min), the server rolled back the marks of the
 * messages already sent in the batch, and every later round sent them again.
 */
export const PUBLISH_TIMEOUT_MS = 10_000;

export class NotificationPublisher {
  private readonly client: SNSClient;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = true;
  private failing = false;
  private lastCleanup = 0;
  /** Aborted by stop(): a call in flight is abandoned (its notification stays due) instead of holding the shutdown. */
  private readonly stopping = new AbortController();

  constructor(private readonly options: NotificationPublisherOptions) {
    this.client = new SNSClient({ region: options.region, endpoint: options.config.snsEndpoint, maxAttempts: 3 });
  }

  /** Writes the notified states for every session's transitions, then starts publishing. */
  async start(): Promise<this> {
    await setNotifiedStates(this.options.pool, this.options.config.states);
    this.stopped = false;
    this.schedule(0);
    return this;
  }

  /** Starts a round now (or right after the one in progress). */
  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.schedule(0);
  }

  /** Wakes the publisher whenever the worker finishes a run in a terminal state; returns the detach. */
  follow(worker: Worker): () => void {
    const onFinished = (event: JobFinishedEvent) => {
      if ((TERMINAL_STATES as readonly string[]).includes(event.state)) this.wake();
    };
    worker.on('jobFinished', onFinished);
    return () => worker.off('jobFinished', onFinished);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.publishDue()
        .then(() => undefined, (error: unknown) => this.reportFailure(error))
        .finally(() => {
          this.running = undefined;
          const next = this.again ? 0 : this.options.config.pollIntervalMs;
          this.again = false;
          this.schedule(next);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** Publishes every due notification; resolves with how many were sent. */
  async publishDue(): Promise<number> {
    let sent = 0;
    for (;;) {
      const round = await this.publishBatch();
      sent += round.sent;
      if (round.claimed < BATCH || round.failed > 0) break;
    }
    if (Date.now() - this.lastCleanup > CLEANUP_EVERY_MS) {
      this.lastCleanup = Date.now();
      await deleteSentNotifications(this.options.pool, this.options.retentionDays);
    }
    return sent;
  }

  private async publishBatch(): Promise<{ claimed: number; sent: number; failed: number }> {
    const { pool, config, log } = this.options;
    const session = await pool.connect();
    let released = false;
    try {
      await session.query('BEGIN');
      const due = await claimDueNotifications(session, BATCH);
      let sent = 0;
      let failed = 0;
      // One at a time: a batch is small, and an SNS outage then costs one failed call per round, not twenty.
      for (const notification of due) {
        if (failed > 0) break;
        try {
          const abortSignal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.options.publishTimeoutMs ?? PUBLISH_TIMEOUT_MS)]);
          const answer = await this.client.send(new PublishCommand(publishRequest(config.topicArn, notification, config.adminBaseUrl)), { abortSignal });
          await markNotificationSent(session, notification.id, answer.MessageId);
          sent += 1;
          log.debug({ job_id: notification.jobId, state: notification.state, notification_id: notification.id }, 'outcome notification published');
        } catch (error) {
          failed += 1;
          const retryInMs = notificationRetryDelayMs(notification.publishAttempts);
          await markNotificationFailed(session, notification.id, describe(error), retryInMs);
          this.reportFailure(error, { job_id: notification.jobId, notification_id: notification.id, retry_in_ms: Math.round(retryInMs) });
        }
      }
      await session.query('COMMIT');
      if (sent > 0 && failed === 0 && this.failing) {
        this.failing = false;
        log.info('publishing outcome notifications works again');
      }
      return { claimed: due.length, sent, failed };
    } catch (error) {
      await session.query('ROLLBACK').catch(() => {});
      session.release(error as Error);
      released = true;
      throw error;
    } finally {
      if (!released) session.release();
    }
  }

  private reportFailure(error: unknown, context: Record<string, unknown> = {}): void {
    // Once per outage at warn; the rows wait in the outbox and are tried again with backoff.
    if (!this.failing) this.options.log.warn({ err: error, ...context }, 'could not publish an outcome notification; it stays in the outbox');
    this.failing = true;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.stopping.abort();
    await this.running;
    this.client.destroy();
  }
}

function describe(error: unknown): string {
  const named = error as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const status = named.$metadata?.httpStatusCode ? ` (HTTP ${named.$metadata.httpStatusCode})` : '';
  return `${named.name ?? 'Error'}: ${named.message ?? String(error)}${status}`;
}

/**
 * Without a topic, no outbox rows are written (the states are set empty, so nothing piles up unpublished); with
 * one, the publisher. Every worker calls this at start-up.
 */
export async function startNotifications(
  options: Omit<NotificationPublisherOptions, 'config'> & { config: NotificationsConfig; worker: Worker },
): Promise<NotificationPublisher | undefined> {
  const { config } = options;
  if (!config.topicArn) {
    await setNotifiedStates(options.pool, []);
    return undefined;
  }
  const publisher = new NotificationPublisher({ ...options, config: { ...config, topicArn: config.topicArn } });
  publisher.follow(options.worker);
  return publisher.start();
}
