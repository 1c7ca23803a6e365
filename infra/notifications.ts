// Optional run-outcome notifications: an SNS topic the worker publishes one message to per run that ends in one of
// NOTIFY_STATES (the backend subscribes and tells the user whose import died). The topic is created here
// (KMS-encrypted with its own key, publishing without TLS denied, like the alarm topic) or imported by ARN; the task
// role may publish to that one topic and use that one key through SNS, nothing else.
import { Stack } from 'aws-cdk-lib';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import { type JobState, TERMINAL_STATES } from '../worker/queue/types.js';

/** The outcomes worth telling a user about by default: the run ended and did not (fully) succeed. */
export const DEFAULT_NOTIFY_STATES: readonly JobState[] = ['dead', 'failed', 'partial'];
/** The states NOTIFY_STATES may name: terminal ones (a notification says how a run ended). */
export const NOTIFIABLE_STATES: readonly JobState[] = TERMINAL_STATES;

/** Where notifications go: a topic this stack creates, or an existing one (and its key when it is encrypted). */
export type NotificationsTopic = { kind: 'create' } | { kind: 'import'; topicArn: string; kmsKeyArn?: string | undefined };

export interface NotificationsProps {
  readonly environmentName: string;
  readonly topic: NotificationsTopic;
  /** Terminal states that produce a message (NOTIFY_STATES). */
  readonly notifyStates: readonly JobState[];
  /** Base URL of the admin pages; messages link to the run there (ADMIN_BASE_URL). */
  readonly adminBaseUrl?: string | undefined;
}

export interface Notifications {
  readonly topic: sns.ITopic;
  /** The topic's key: the created one, the imported one, or undefined (an unencrypted imported topic). */
  readonly key: kms.IKey | undefined;
}

/** Creates or imports the topic, gives `worker` its three variables and lets `taskRole` publish to that topic only. */
export function addNotifications(
  scope: Construct,
  worker: ecs.ContainerDefinition,
  taskRole: iam.IRole,
  props: NotificationsProps,
): Notifications {
  const { topic, key } = props.topic.kind === 'create' ? createTopic(scope, props.environmentName) : importTopic(scope, props.topic);
  worker.addEnvironment('NOTIFICATIONS_TOPIC_ARN', topic.topicArn);
  worker.addEnvironment('NOTIFY_STATES', props.notifyStates.join(','));
  if (props.adminBaseUrl) worker.addEnvironment('ADMIN_BASE_URL', props.adminBaseUrl);
  taskRole.addToPrincipalPolicy(
    new iam.PolicyStatement({ sid: 'PublishRunNotifications', actions: ['sns:Publish'], resources: [topic.topicArn] }),
  );
  if (key) {
    const stack = Stack.of(scope);
    taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'NotificationsTopicKey',
        // What SNS needs from a publisher of an encrypted topic, and only when SNS asks on its behalf.
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: [key.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `sns.${stack.region}.${stack.urlSuffix}` } },
      }),
    );
  }
  return { topic, key };
}

function createTopic(scope: Construct, environmentName: string): Notifications {
  const key = new kms.Key(scope, 'NotificationsTopicKey', {
    description: `Encrypts the bulk-import run notifications topic (${environmentName})`,
    enableKeyRotation: true,
  });
  const topic = new sns.Topic(scope, 'NotificationsTopic', {
    displayName: `bulk-import run notifications (${environmentName})`,
    masterKey: key,
    enforceSSL: true,
  });
  return { topic, key };
}

function importTopic(scope: Construct, topic: { topicArn: string; kmsKeyArn?: string | undefined }): Notifications {
  return {
    topic: sns.Topic.fromTopicArn(scope, 'NotificationsTopic', topic.topicArn),
    key: topic.kmsKeyArn ? kms.Key.fromKeyArn(scope, 'NotificationsTopicKey', topic.kmsKeyArn) : undefined,
  };
}

/** The states of `states` that are not terminal (empty when all may be notified). */
export function unnotifiableStates(states: readonly string[]): string[] {
  return states.filter((state) => !(NOTIFIABLE_STATES as readonly string[]).includes(state));
}
