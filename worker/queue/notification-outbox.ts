// The outbox of terminal-outcome notifications (migration 20261205103839): rows written by a trigger in the same
// transaction as the state change, claimed and marked by the worker's publisher (worker/notifications/).
import type { Queryable } from '../db/pool.js';
import type { JobState } from './types.js';

/** One transition waiting to be published. */
export interface OutboxNotification {
  id: number;
  jobId: number;
  kind: string;
  tenantId: string | null;
  fromState: JobState;
  state: JobState;
  attempt: number;
  errorCode: string | null;
  finishedAt: Date | null;
  createdAt: Date;
  /** Tries before this one. */
  publishAttempts: number;
}

/**
 * Sets which terminal states get an outbox row from now on (empty: none). Workers with a topic do this at start-up, and
 * so does one started with NOTIFY_STATES=none (outbox-publisher.ts, startNotifications).
 */
export async function setNotifiedStates(db: Queryable, states: readonly JobState[]): Promise<void> {
  await db.query(
    `UPDATE job_notification_settings SET states = $1::text[], updated_at = now() WHERE states IS DISTINCT FROM $1::text[]`,
    [states],
  );
}

/** The terminal states that get an outbox row now, as the settings row says. */
export async function readNotifiedStates(db: Queryable): Promise<JobState[]> {
  const { rows } = await db.query<{ states: JobState[] }>('SELECT states FROM job_notification_settings');
  return rows[0]?.states ?? [];
}

/**
 * Locks up to `limit` due notifications for this transaction (`db` must be inside one), oldest first. Rows another
 * publisher holds are skipped; its transaction ends — and frees them — when it commits or its session dies.
 */
export async function claimDueNotifications(db: Queryable, limit: number): Promise<OutboxNotification[]> {
  const { rows } = await db.query(
    `SELECT id, job_id, kind, tenant_id, from_state, state, attempt, error_code, finished_at, created_at, publish_attempts
     FROM job_notifications WHERE sent_at IS NULL AND next_attempt_at <= now()
     ORDER BY next_attempt_at, id LIMIT $1
     FOR UPDATE SKIP LOCKED`,
    [limit],
  );
  return rows.map((row) => ({
    id: Number(row.id),
    jobId: Number(row.job_id),
    kind: row.kind as string,
    tenantId: (row.tenant_id as string | null) ?? null,
    fromState: row.from_state as JobState,
    state: row.state as JobState,
    attempt: row.attempt as number,
    errorCode: (row.error_code as string | null) ?? null,
    finishedAt: (row.finished_at as Date | null) ?? null,
    createdAt: row.created_at as Date,
    publishAttempts: row.publish_attempts as number,
  }));
}

export async function markNotificationSent(db: Queryable, id: number, messageId: string | undefined): Promise<void> {
  await db.query(
    `UPDATE job_notifications SET sent_at = now(), message_id = $2, publish_attempts = publish_attempts + 1, last_error = NULL,
       parked_at = NULL
     WHERE id = $1`,
    [id, messageId ?? null],
  );
}

/**
 * Records a failed try; the next one is due after `retryInMs`. A row parked before and sent again by an operator is an
 * ordinary failure again (not parked) until it is parked anew.
 */
export async function markNotificationFailed(db: Queryable, id: number, error: string, retryInMs: number): Promise<void> {
  await db.query(
    `UPDATE job_notifications SET publish_attempts = publish_attempts + 1, last_error = left($2, 1000),
       next_attempt_at = now() + $3 * interval '1 millisecond', parked_at = NULL
     WHERE id = $1`,
    [id, error, Math.max(0, Math.round(retryInMs))],
  );
}

/**
 * Records a failed try and sets the notification aside for good (migration 20261207130000): `parked_at` says when, and
 * a due time of 'infinity' keeps it out of every claim. An operator sends it again (docs/RUNBOOK.md) or drops it.
 */
export async function markNotificationParked(db: Queryable, id: number, error: string): Promise<void> {
  await db.query(
    `UPDATE job_notifications SET publish_attempts = publish_attempts + 1, last_error = left($2, 1000),
       parked_at = now(), next_attempt_at = 'infinity'
     WHERE id = $1`,
    [id, error],
  );
}

/** How deleteSentNotifications works through a backlog. */
export interface SentNotificationsCleanup {
  /** Rows per DELETE statement (each commits on its own, so locks and WAL stay small). */
  chunk?: number;
  /** No new statement starts after this long: one call ends, and the caller goes on later. */
  budgetMs?: number;
}

/**
 * Deletes notifications sent more than `days` ago, a chunk per statement, until a statement finds fewer than a chunk
 * (done) or the time budget is spent (not done: the caller calls again). Rows another session is deleting are
 * skipped, so publishers that clean at the same time share the work instead of waiting on each other.
 */
export async function deleteSentNotifications(
  db: Queryable,
  days: number,
  { chunk = 5_000, budgetMs = 5_000 }: SentNotificationsCleanup = {},
): Promise<{ deleted: number; done: boolean }> {
  const started = performance.now();
  let deleted = 0;
  for (;;) {
    const { rowCount } = await db.query(
      `DELETE FROM job_notifications WHERE id IN (
         SELECT id FROM job_notifications WHERE sent_at IS NOT NULL AND sent_at < now() - $1 * interval '1 day'
         LIMIT $2 FOR UPDATE SKIP LOCKED)`,
      [days, chunk],
    );
    deleted += rowCount ?? 0;
    if ((rowCount ?? 0) < chunk) return { deleted, done: true };
    if (performance.now() - started >= budgetMs) return { deleted, done: false };
  }
}

/** Notifications not sent yet (for tests and the CLI). */
export async function countUnsentNotifications(db: Queryable): Promise<number> {
  const { rows } = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM job_notifications WHERE sent_at IS NULL');
  return rows[0]!.n;
}
