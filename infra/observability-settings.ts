// The context keys of the stack's observability (issue 16), read into typed settings by the same reader as every
// other key (infra/settings.ts): job-alarm thresholds, the scheduled gauges, paging or notifying, tracing, run
// notifications. Unset keys stay undefined and take the construct's defaults (infra/observability-props.ts).
import type { JobState } from '../worker/queue/types.js';
import { ALARM_ROUTINGS, type AlarmRouting, workerKinds } from './alarms.js';
import type { NotificationsTopic } from './notifications.js';
import { NOTIFIABLE_STATES } from './notifications.js';
import type { ContextReader } from './settings.js';

export const OBSERVABILITY_SETTINGS_KEYS = [
  'longRunningAlarmMinutes',
  'repeatedFailuresAlarmCount',
  'repeatedFailuresWindowMinutes',
  'consecutiveFailuresAlarmCount',
  'gaugesScheduleMinutes',
  'workerDownAlarms',
  'noticeTopicArn',
  'tracing',
  'tracingCollectorImage',
  'notificationsTopic',
  'notificationsTopicKmsKeyArn',
  'notifyStates',
  'adminBaseUrl',
] as const;

export interface ObservabilitySettings {
  /** Per-kind minutes over the defaults (only the kinds given). */
  longRunningAlarmMinutes: Record<string, number> | undefined;
  repeatedFailuresAlarmCount: number | undefined;
  repeatedFailuresWindowMinutes: number | undefined;
  consecutiveFailuresAlarmCount: number | undefined;
  gaugesScheduleMinutes: number | undefined;
  workerDownAlarms: AlarmRouting | undefined;
  noticeTopicArn: string | undefined;
  tracing: boolean;
  tracingCollectorImage: string | undefined;
  notificationsTopic: NotificationsTopic | undefined;
  notifyStates: JobState[] | undefined;
  adminBaseUrl: string | undefined;
}

const SNS_TOPIC_ARN = /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$/;
const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/;
/** registry/repository:tag or @sha256 digest, e.g. public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0. */
const IMAGE_REFERENCE = /^[a-z0-9.-]+(:\d+)?(\/[a-z0-9._-]+)+(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$/;

export function readObservabilitySettings(read: ContextReader): ObservabilitySettings {
  const notificationsTopic = readNotificationsTopic(read);
  const notifyStates = read.list('notifyStates', /^[a-z_]+$/, 'job states');
  if (notifyStates?.some((state) => !(NOTIFIABLE_STATES as readonly string[]).includes(state))) {
    read.fail('notifyStates', notifyStates.join(','), `terminal states only: some of ${NOTIFIABLE_STATES.join(', ')}`);
  }
  return {
    longRunningAlarmMinutes: readKindMinutes(read),
    repeatedFailuresAlarmCount: read.integer('repeatedFailuresAlarmCount', { min: 1, max: 1_000_000 }),
    repeatedFailuresWindowMinutes: read.integer('repeatedFailuresWindowMinutes', { min: 1, max: 1440 }),
    consecutiveFailuresAlarmCount: read.integer('consecutiveFailuresAlarmCount', { min: 1, max: 1000 }),
    gaugesScheduleMinutes: read.integer('gaugesScheduleMinutes', { min: 1, max: 60 }),
    workerDownAlarms: read.oneOf('workerDownAlarms', ALARM_ROUTINGS),
    noticeTopicArn: read.string('noticeTopicArn', SNS_TOPIC_ARN, 'an SNS topic ARN'),
    tracing: read.boolean('tracing') ?? false,
    tracingCollectorImage: read.string('tracingCollectorImage', IMAGE_REFERENCE, 'an image reference with a tag or digest'),
    notificationsTopic,
    notifyStates: notifyStates as JobState[] | undefined,
    adminBaseUrl: read.string('adminBaseUrl', /^https:\/\/[^\s/]+(\/\S*)?$/, 'an https URL such as https://admin.example.com'),
  };
}

/** `create` (or true) creates a topic; an SNS ARN imports one; false or unset: no notifications. */
function readNotificationsTopic(read: ContextReader): NotificationsTopic | undefined {
  const raw = read.raw('notificationsTopic');
  const kmsKeyArn = read.string('notificationsTopicKmsKeyArn', KMS_KEY_ARN, 'a KMS key ARN');
  const text = typeof raw === 'string' ? raw.trim() : raw;
  let topic: NotificationsTopic | undefined;
  if (text === true || (typeof text === 'string' && /^(create|true|1|yes|on)$/i.test(text))) topic = { kind: 'create' };
  else if (text === undefined || text === false || (typeof text === 'string' && /^(false|0|no|off)$/i.test(text))) topic = undefined;
  else if (typeof text === 'string' && SNS_TOPIC_ARN.test(text)) topic = { kind: 'import', topicArn: text, kmsKeyArn };
  else read.fail('notificationsTopic', raw, '"create" (a topic made by this stack), an SNS topic ARN, or false');
  if (kmsKeyArn && topic?.kind !== 'import') {
    read.fail('notificationsTopicKmsKeyArn', kmsKeyArn, 'only together with notificationsTopic=<an existing topic ARN>');
  }
  return topic;
}

/** `mass-import=720,csv-import=20` (`-c`) or `{"mass-import": 720}` (cdk.json): minutes per kind the worker runs. */
function readKindMinutes(read: ContextReader): Record<string, number> | undefined {
  const key = 'longRunningAlarmMinutes';
  const raw = read.raw(key);
  if (raw === undefined) return undefined;
  const kinds = workerKinds();
  const expected = `kind=minutes pairs such as mass-import=720,csv-import=30 (known kinds: ${kinds.join(', ')}; 1 to 10080 minutes)`;
  const entries: Array<[string, unknown]> =
    typeof raw === 'string' && raw.trim().startsWith('{')
      ? Object.entries(parseObject(read, key, raw))
      : typeof raw === 'string'
        ? raw.split(',').map((pair) => {
            const [kind = '', minutes, ...rest] = pair.split('=').map((part) => part.trim());
            return [kind, rest.length === 0 && minutes !== undefined && /^\d+$/.test(minutes) ? Number(minutes) : NaN];
          })
        : typeof raw === 'object' && raw !== null && !Array.isArray(raw)
          ? Object.entries(raw)
          : [['', NaN]];
  const result: Record<string, number> = {};
  for (const [kind, minutes] of entries) {
    if (!kinds.includes(kind) || typeof minutes !== 'number' || !Number.isInteger(minutes) || minutes < 1 || minutes > 10_080) {
      read.fail(key, raw, expected);
    }
    result[kind] = minutes;
  }
  return result;
}

function parseObject(read: ContextReader, key: 'longRunningAlarmMinutes', text: string): Record<string, unknown> {
  try {
    const parsed = JSON.parse(text) as unknown;
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) return parsed as Record<string, unknown>;
  } catch {
    // reported below
  }
  return read.fail(key, text, 'a JSON object of kind: minutes');
}
