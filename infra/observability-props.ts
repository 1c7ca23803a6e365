// The construct's observability props (issue 16): thresholds of the job alarms, the scheduled gauges, where the
// "worker down" alarms go, the tracing sidecar and the run-notifications topic. Typed and documented here, with their
// defaults and the checks that refuse values which would deploy but not work; BulkImportWorkerProps extends them.
import type * as sns from 'aws-cdk-lib/aws-sns';
import type { JobState } from '../worker/queue/types.js';
import {
  type AlarmRouting,
  DEFAULT_CONSECUTIVE_FAILURES_ALARM_COUNT,
  DEFAULT_REPEATED_FAILURES_ALARM_COUNT,
  DEFAULT_REPEATED_FAILURES_WINDOW_MINUTES,
  longRunningAlarmMinutes,
  workerKinds,
} from './alarms.js';
import { DEFAULT_GAUGES_SCHEDULE_MINUTES } from './gauges-schedule.js';
import { DEFAULT_NOTIFY_STATES, type NotificationsTopic, unnotifiableStates } from './notifications.js';
import { DEFAULT_COLLECTOR_IMAGE } from './tracing.js';

/** CloudWatch evaluates an alarm over at most one day: the longest failure window. */
const MAX_WINDOW_MINUTES = 24 * 60;

export interface ObservabilityProps {
  /**
   * Minutes a run of a kind may run before its long-running alarm fires (`OldestRunningAgeSeconds`, dimension Kind),
   * per kind; kinds not given keep their default.
   * @default mass-import 720, csv-import and csv-finalize 30, backfill 360, audit 60, any other kind 60
   */
  readonly longRunningAlarmMinutes?: Readonly<Record<string, number>>;
  /**
   * The repeated-failures alarm of a kind fires at this many retries, failed or dead runs and lost leases of that kind
   * within `repeatedFailuresWindowMinutes`.
   * @default 5
   */
  readonly repeatedFailuresAlarmCount?: number;
  /**
   * The window of the repeated-failures alarms, in minutes (at most 1440).
   * @default 60
   */
  readonly repeatedFailuresWindowMinutes?: number;
  /**
   * The consecutive-failures alarm fires when a run has failed this many attempts in a row (`MaxConsecutiveFailures`).
   * @default 3
   */
  readonly consecutiveFailuresAlarmCount?: number;
  /**
   * Minutes between two runs of the scheduled task that publishes the queue gauges (`bulk-import gauges --once`), so
   * they exist while the service runs 0 tasks; also the period of the alarms on the gauges.
   * @default 5
   */
  readonly gaugesScheduleMinutes?: number;
  /**
   * Whether the two "worker down" alarms (fewer tasks running than desired; work waits but no task runs) page the
   * alarm topic or notify the notice topic.
   * @default 'page' in prod, 'notify' elsewhere
   */
  readonly workerDownAlarms?: AlarmRouting;
  /**
   * Where `notify` alarms go (a team channel that does not page).
   * @default the alarm topic
   */
  readonly noticeTopic?: sns.ITopic;
  /**
   * Traces: an AWS Distro for OpenTelemetry collector sidecar exporting the worker's spans to X-Ray, and the worker's
   * OTEL_* variables pointing at it.
   * @default false
   */
  readonly tracing?: boolean;
  /**
   * The collector image (a public ADOT image reference, pinned).
   * @default 'public.ecr.aws/aws-observability/aws-otel-collector:v0.49.0'
   */
  readonly tracingCollectorImage?: string;
  /**
   * Run notifications (NOTIFICATIONS_TOPIC_ARN): a topic created here or an existing one (with its KMS key when it is
   * encrypted).
   * @default off
   */
  readonly notificationsTopic?: NotificationsTopic;
  /**
   * The terminal states that produce a notification (NOTIFY_STATES).
   * @default dead, failed, partial
   */
  readonly notifyStates?: readonly JobState[];
  /**
   * Base URL of the admin pages, for the link to the run in each notification (ADMIN_BASE_URL); https only.
   * @default none: messages carry no link
   */
  readonly adminBaseUrl?: string;
}

export interface ResolvedObservability {
  longRunningAlarmMinutes: Record<string, number>;
  repeatedFailuresAlarmCount: number;
  repeatedFailuresWindowMinutes: number;
  consecutiveFailuresAlarmCount: number;
  gaugesScheduleMinutes: number;
  workerDownAlarms: AlarmRouting;
  tracingCollectorImage: string | undefined;
  notifyStates: readonly JobState[];
}

/** Applies the defaults; `fail` throws the construct's props error with the message. */
export function resolveObservability(
  props: ObservabilityProps & { readonly environmentName: string },
  fail: (message: string) => never,
): ResolvedObservability {
  const kinds = workerKinds();
  for (const [kind, minutes] of Object.entries(props.longRunningAlarmMinutes ?? {})) {
    if (!kinds.includes(kind)) fail(`longRunningAlarmMinutes names ${JSON.stringify(kind)}, not a kind the worker runs (known kinds: ${kinds.join(', ')})`);
    if (!Number.isInteger(minutes) || minutes < 1) fail(`longRunningAlarmMinutes.${kind} must be a whole number of minutes ≥ 1, got ${minutes}`);
  }
  const wholeAtLeast = (name: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    if (!Number.isInteger(value) || value < min || value > max) fail(`${name} must be a whole number from ${min} to ${max}, got ${value}`);
    return value;
  };
  const notifyStates = props.notifyStates ?? DEFAULT_NOTIFY_STATES;
  const wrong = unnotifiableStates(notifyStates);
  if (wrong.length > 0 || notifyStates.length === 0) fail(`notifyStates must name terminal states only, got ${notifyStates.join(', ') || 'none'}`);
  if (props.adminBaseUrl !== undefined && !/^https:\/\/[^\s/]+(\/\S*)?$/.test(props.adminBaseUrl)) {
    fail(`adminBaseUrl must be an https URL, got ${props.adminBaseUrl}`);
  }
  return {
    longRunningAlarmMinutes: longRunningAlarmMinutes(props.longRunningAlarmMinutes),
    repeatedFailuresAlarmCount: wholeAtLeast('repeatedFailuresAlarmCount', props.repeatedFailuresAlarmCount ?? DEFAULT_REPEATED_FAILURES_ALARM_COUNT, 1),
    repeatedFailuresWindowMinutes: wholeAtLeast(
      'repeatedFailuresWindowMinutes',
      props.repeatedFailuresWindowMinutes ?? DEFAULT_REPEATED_FAILURES_WINDOW_MINUTES,
      1,
      MAX_WINDOW_MINUTES,
    ),
    consecutiveFailuresAlarmCount: wholeAtLeast(
      'consecutiveFailuresAlarmCount',
      props.consecutiveFailuresAlarmCount ?? DEFAULT_CONSECUTIVE_FAILURES_ALARM_COUNT,
      1,
    ),
    // Two alarm periods of the gauges must fit in CloudWatch's one-day evaluation range.
    gaugesScheduleMinutes: wholeAtLeast('gaugesScheduleMinutes', props.gaugesScheduleMinutes ?? DEFAULT_GAUGES_SCHEDULE_MINUTES, 1, 60),
    workerDownAlarms: props.workerDownAlarms ?? (props.environmentName === 'prod' ? 'page' : 'notify'),
    tracingCollectorImage: props.tracing ? (props.tracingCollectorImage ?? DEFAULT_COLLECTOR_IMAGE) : undefined,
    notifyStates,
  };
}
