// What an outcome notification says: the SNS Publish request of one outbox row. The body is JSON for programs; the
// attributes (tenant, kind, state) let a subscriber filter with an SNS filter policy; the subject serves e-mail.
import type { PublishCommandInput } from '@aws-sdk/client-sns';
import type { OutboxNotification } from '../queue/notification-outbox.js';

/** The JSON body of a notification (docs/RUNBOOK.md, "Outcome notifications"). */
export interface OutcomeMessage {
  type: 'bulk-import.run-ended';
  /** The outbox row: the same for every try of one transition, so subscribers can drop a repeat. */
  notificationId: number;
  runId: number;
  kind: string;
  tenant: string | null;
  state: string;
  previousState: string;
  attempt: number;
  errorCode: string | null;
  finishedAt: string | null;
  /** The run in the admin pages; null when ADMIN_BASE_URL is unset. */
  link: string | null;
}

export function outcomeMessage(notification: OutboxNotification, adminBaseUrl: string | undefined): OutcomeMessage {
  return {
    type: 'bulk-import.run-ended',
    notificationId: notification.id,
    runId: notification.jobId,
    kind: notification.kind,
    tenant: notification.tenantId,
    state: notification.state,
    previousState: notification.fromState,
    attempt: notification.attempt,
    errorCode: notification.errorCode,
    finishedAt: notification.finishedAt?.toISOString() ?? null,
    link: adminBaseUrl ? `${adminBaseUrl}/admin/runs/${notification.jobId}` : null,
  };
}

/** SNS subjects: printable ASCII, one line, at most 100 characters. */
function subjectOf(message: OutcomeMessage): string {
  const text = `bulk-import run ${message.runId} ${message.state}: ${message.kind}${message.tenant ? `, tenant ${message.tenant}` : ''}`;
  return text.replace(/[^\x20-\x7e]/g, '?').slice(0, 100);
}

/** The Publish request. FIFO topics (`.fifo`) also get a deduplication id, so a repeated try is dropped by SNS. */
export function publishRequest(topicArn: string, notification: OutboxNotification, adminBaseUrl: string | undefined): PublishCommandInput {
  const message = outcomeMessage(notification, adminBaseUrl);
  const attribute = (value: string) => ({ DataType: 'String', StringValue: value });
  return {
    TopicArn: topicArn,
    Subject: subjectOf(message),
    Message: JSON.stringify(message),
    MessageAttributes: {
      ...(message.tenant ? { tenant: attribute(message.tenant) } : {}),
      kind: attribute(message.kind),
      state: attribute(message.state),
      notification_id: { DataType: 'Number', StringValue: String(message.notificationId) },
    },
    ...(topicArn.endsWith('.fifo')
      ? { MessageGroupId: `run-${message.runId}`, MessageDeduplicationId: `bulk-import-notification-${message.notificationId}` }
      : {}),
  };
}
