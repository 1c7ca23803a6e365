// Publishes the outbox of terminal-outcome notifications to SNS. Every worker with NOTIFICATIONS_TOPIC_ARN runs one:
// a round claims due rows with FOR UPDATE SKIP LOCKED in a transaction, publishes them, marks each sent (or records
// the failure and when to try again), and commits. Exactly once per transition as far as the database can see:
// the row exists if and only if the transition committed, and is sent until marked. A worker killed before it
// published leaves the row unsent and, its session gone, unlocked: the next round anywhere sends it. The one
// window left — SNS accepted the message, the worker died before its commit — repeats the message with the same
// notification id (a FIFO topic drops it by its deduplication id; other subscribers compare `notificationId`).
// Rounds run every NOTIFICATIONS_POLL_MS, and at once when this worker finished a run in a terminal state. A message
// SNS refuses for what it says is tried again later without holding up the others, and set aside (parked) after a few
// tries; any other failure ends the round (one failed call per round in an outage) and parks a row only after hours.
import { context, ROOT_CONTEXT } from '@opentelemetry/api';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import type { NotificationsConfig } from '../config.js';
import type { Pool, Queryable } from '../db/pool.js';
import type { Logger } from '../logger.js';
import {
  claimDueNotifications,
  deleteSentNotifications,
  markNotificationFailed,
  markNotificationParked,
  markNotificationSent,
  readNotifiedStates,
  setNotifiedStates,
  type OutboxNotification,
} from '../queue/notification-outbox.js';
import { TERMINAL_STATES, type JobState } from '../queue/types.js';
import type { JobFinishedEvent, Worker } from '../runner/worker.js';
import { publishRequest } from './sns-message.js';

/** Rows per round's transaction. */
const BATCH = 20;
const RETRY_BASE_MS = 1_000;
const RETRY_MAX_MS = 300_000;
const CLEANUP_EVERY_MS = 3_600_000;

/**
 * Tries after which a notification is parked (markNotificationParked): set aside, tried no more, logged at warn. A
 * message SNS refuses for what it says (an attribute value it cannot carry: InvalidParameter) is parked after a few —
 * sending it again cannot help; other failures (an outage, throttling, a missing permission) go on for hours first,
 * 100 tries at most 5 minutes apart.
 */
export const PARK_AFTER_TRIES = { refused: 5, failed: 100 } as const;

/** The errors with which SNS refuses one message for its content, not the publisher, the topic or the service. */
const MESSAGE_REFUSALS = new Set([
  'InvalidParameterException', 'InvalidParameterValueException', 'ValidationException', 'InvalidParameter', 'ParameterValueInvalid',
]);

function refusesMessage(error: unknown): boolean {
  return MESSAGE_REFUSALS.has(String((error as { name?: unknown } | null)?.name));
}

/** What became of one notification in a round. */
type PublishOutcome = 'sent' | 'refused' | 'failed';

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
  /** SNS has taken a message from this publisher: the topic, the region and the role work. */
  private accepted = false;
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
    // Rounds run in no trace. A timer set while a run's span is active (its `jobFinished` is emitted inside it) would
    // carry that span on, each round scheduling the next from it: every later statement and Publish would join that
    // run's trace, and SNS messages about other runs — other tenants' too — would carry its traceparent.
    this.timer = setTimeout(context.bind(ROOT_CONTEXT, () => this.round()), delayMs);
    this.timer.unref();
  }

  private round(): void {
    this.timer = undefined;
    this.running = this.publishDue()
      .then(() => undefined, (error: unknown) => this.reportFailure(error))
      .finally(() => {
        this.running = undefined;
        const next = this.again ? 0 : this.options.config.pollIntervalMs;
        this.again = false;
        this.schedule(next);
      });
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
      const cleanup = await deleteSentNotifications(this.options.pool, this.options.retentionDays);
      // A backlog larger than one call's budget is worked off in the rounds that follow, not an hour later.
      if (cleanup.done) this.lastCleanup = Date.now();
    }
    return sent;
  }

  private async publishBatch(): Promise<{ claimed: number } & Record<PublishOutcome, number>> {
    const { pool, log } = this.options;
    const session = await pool.connect();
    let released = false;
    try {
      await session.query('BEGIN');
      const due = await claimDueNotifications(session, BATCH);
      const round = { claimed: due.length, sent: 0, refused: 0, failed: 0 };
      // One at a time: a batch is small, and an SNS outage then costs one failed call per round, not twenty. A message
      // refused for what it says does not stop the round: the others behind it are sent.
      for (const notification of due) {
        const outcome = await this.publishOne(session, notification);
        round[outcome] += 1;
        if (outcome === 'failed') break;
      }
      await session.query('COMMIT');
      if (round.sent > 0 && round.failed === 0 && this.failing) {
        this.failing = false;
        log.info('publishing outcome notifications works again');
      }
      return round;
    } catch (error) {
      await session.query('ROLLBACK').catch(() => {});
      session.release(error as Error);
      released = true;
      throw error;
    } finally {
      if (!released) session.release();
    }
  }

  /** Publishes one claimed notification and records what became of it, in the round's transaction. */
  private async publishOne(session: Queryable, notification: OutboxNotification): Promise<PublishOutcome> {
    const { config, log } = this.options;
    try {
      const abortSignal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.options.publishTimeoutMs ?? PUBLISH_TIMEOUT_MS)]);
      const answer = await this.client.send(new PublishCommand(publishRequest(config.topicArn, notification, config.adminBaseUrl)), { abortSignal });
      await markNotificationSent(session, notification.id, answer.MessageId);
      this.accepted = true;
      log.debug({ job_id: notification.jobId, state: notification.state, notification_id: notification.id }, 'outcome notification published');
      return 'sent';
    } catch (error) {
      // A refusal is the message's own only once SNS has taken others from this publisher: a topic the client cannot
      // reach as configured (another region's) is refused as an invalid parameter too, for every message.
      const refused = this.accepted && refusesMessage(error);
      const tries = notification.publishAttempts + 1;
      const about = { job_id: notification.jobId, notification_id: notification.id, tries };
      if (tries >= (refused ? PARK_AFTER_TRIES.refused : PARK_AFTER_TRIES.failed)) {
        await markNotificationParked(session, notification.id, describe(error));
        log.warn({ err: error, ...about }, 'outcome notification parked: it is tried no more and stays unsent until an operator sends or drops it');
      } else {
        const retryInMs = notificationRetryDelayMs(notification.publishAttempts);
        await markNotificationFailed(session, notification.id, describe(error), retryInMs);
        const retry = { ...about, retry_in_ms: Math.round(retryInMs) };
        if (refused) log.info({ err: error, ...retry }, 'SNS refused an outcome notification; it is tried again later');
        else this.reportFailure(error, retry);
      }
      return refused ? 'refused' : 'failed';
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
 * Starts the publisher of a worker with a topic, which writes its NOTIFY_STATES for every session's transitions (the
 * last worker started wins). A worker without one publishes nothing and leaves the settings as they are — an
 * operator's ad-hoc worker must not turn notifications off for the workers that publish them — unless it is started
 * with NOTIFY_STATES=none, the way to turn them off for the database (so that nothing piles up unpublished). Every
 * worker calls this at start-up, and warns when the stored settings are not what its own configuration says.
 */
export async function startNotifications(
  options: Omit<NotificationPublisherOptions, 'config'> & { config: NotificationsConfig; worker: Worker },
): Promise<NotificationPublisher | undefined> {
  const { config, pool, log } = options;
  const stored = await readNotifiedStates(pool);
  if (!config.topicArn && config.states.length > 0) {
    if (stored.length > 0) {
      log.warn(
        { notified_states: stored },
        'this worker has no NOTIFICATIONS_TOPIC_ARN: it publishes no outcome notifications, and leaves the database\'s ' +
          'settings as they are (workers with a topic publish them; NOTIFY_STATES=none turns them off)',
      );
    }
    return undefined;
  }
  if (!sameStates(stored, config.states) && stored.length > 0) {
    log.warn(
      { notified_states: stored, own_states: config.states },
      config.states.length === 0
        ? 'NOTIFY_STATES=none: turning outcome notifications off for every worker of the database'
        : 'the database notified other states than this worker\'s NOTIFY_STATES; it now notifies this worker\'s (the last worker started wins)',
    );
  }
  if (!config.topicArn) {
    await setNotifiedStates(pool, []);
    return undefined;
  }
  const publisher = new NotificationPublisher({ ...options, config: { ...config, topicArn: config.topicArn } });
  publisher.follow(options.worker);
  return publisher.start();
}

function sameStates(a: readonly JobState[], b: readonly JobState[]): boolean {
  return a.length === b.length && a.every((state) => b.includes(state));
}
