// The alarms that page on-call for the bulk-import worker, and the topic they notify when none is given. Metric
// names, job kinds and outcomes come from the worker modules that publish them (queue gauges, per-run metrics, the
// handler registry, the audit handler), so a rename there is a compile error here instead of an alarm that silently
// reads nothing. Each alarm has a section in docs/RUNBOOK.md ("Alarm: …") that says what to do.
import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import { AUDIT_KIND, BACKFILL_KIND, CSV_FINALIZE_KIND, CSV_IMPORT_KIND, MASS_IMPORT_KIND } from '../worker/handlers/kinds.js';
import { AUDIT_FINDINGS_METRIC } from '../worker/handlers/audit.js';
import { defaultRegistry } from '../worker/handlers/registry.js';
import { JOBS_FINISHED_METRIC, outcomeOf } from '../worker/ops/metrics.js';
import { GAUGE_METRICS } from '../worker/ops/queue-gauges.js';

/** A queue total the worker publishes without dimensions (the series alarms and autoscaling read). */
export type QueueGauge = keyof typeof GAUGE_METRICS;

/** The dimensionless total of one queue gauge (`QueuedJobs`, `OldestQueuedAgeSeconds`, …), as its maximum. */
export function queueGaugeMetric(metricsNamespace: string, gauge: QueueGauge, period: Duration): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: metricsNamespace,
    metricName: GAUGE_METRICS[gauge].name,
    statistic: cloudwatch.Stats.MAXIMUM,
    period,
  });
}

/** Threshold of the long-running alarm per kind, in minutes (setting `longRunningAlarmMinutes` overrides each). */
export const DEFAULT_LONG_RUNNING_ALARM_MINUTES: Readonly<Record<string, number>> = {
  // A campaign imports for hours; past half a day a run is hanging while its heartbeats go on.
  [MASS_IMPORT_KIND]: 12 * 60,
  // A CSV file validates and finalizes in minutes (bench:csv: a million rows finalize in about ten seconds).
  [CSV_IMPORT_KIND]: 30,
  [CSV_FINALIZE_KIND]: 30,
  // A backfill walks a large table in keyset batches.
  [BACKFILL_KIND]: 6 * 60,
  // The audit walks every product (bench:audit: ten million in under a minute).
  [AUDIT_KIND]: 60,
};
/** The threshold of a kind without a default of its own, so a kind added later is watched at once. */
export const FALLBACK_LONG_RUNNING_ALARM_MINUTES = 60;
/** Defaults of the failure alarms: this many failures of a kind within the window; this many attempts in a row. */
export const DEFAULT_REPEATED_FAILURES_ALARM_COUNT = 5;
export const DEFAULT_REPEATED_FAILURES_WINDOW_MINUTES = 60;
export const DEFAULT_CONSECUTIVE_FAILURES_ALARM_COUNT = 3;
/** JobsFinished outcomes that mean "failed again": a retry, a run ended failed or dead, a lost lease, a failure the
 * database did not take (the rescuer requeues that run). */
export const FAILURE_OUTCOMES = [
  outcomeOf('queued'),
  outcomeOf('failed'),
  outcomeOf('dead'),
  outcomeOf('lost'),
  outcomeOf('unrecorded'),
] as const;

/** Every kind this build of the worker runs (its handler registry): each gets a long-running and a failures alarm. */
export function workerKinds(): string[] {
  return defaultRegistry().kinds();
}

/** The long-running threshold of every kind the worker runs: the given ones over the defaults. */
export function longRunningAlarmMinutes(overrides: Readonly<Record<string, number>> = {}): Record<string, number> {
  return Object.fromEntries(
    workerKinds().map((kind) => [kind, overrides[kind] ?? DEFAULT_LONG_RUNNING_ALARM_MINUTES[kind] ?? FALLBACK_LONG_RUNNING_ALARM_MINUTES]),
  );
}

/** Where an alarm goes: `page` the on-call topic, or `notify` the notice topic (the on-call topic when none). */
export type AlarmRouting = 'page' | 'notify';
export const ALARM_ROUTINGS = ['page', 'notify'] as const satisfies readonly AlarmRouting[];

export interface AlarmsProps {
  readonly environmentName: string;
  /** Prefix of the alarm names: bulk-import-worker-<environment>. */
  readonly baseName: string;
  readonly metricsNamespace: string;
  readonly cluster: ecs.ICluster;
  readonly service: ecs.IBaseService;
  readonly oldestQueuedAgeAlarmSeconds: number;
  /** Threshold of the long-running alarm of each kind, in minutes (see `resolveJobAlarmSettings`). */
  readonly longRunningAlarmMinutes: Readonly<Record<string, number>>;
  readonly repeatedFailuresAlarmCount: number;
  readonly repeatedFailuresWindowMinutes: number;
  readonly consecutiveFailuresAlarmCount: number;
  /** Minutes between gauge publications while no worker runs (the scheduled task): the gauge alarms' period. */
  readonly gaugesScheduleMinutes: number;
  /** Whether the two "worker down" alarms page (`topic`) or notify (`noticeTopic`). */
  readonly workerDownAlarms: AlarmRouting;
  /** Notified on ALARM and on OK. */
  readonly topic: sns.ITopic;
  /**
   * Where `notify` alarms go.
   * @default `topic`
   */
  readonly noticeTopic?: sns.ITopic | undefined;
}

export interface WorkerAlarms {
  /** Fewer tasks running than desired (live counts of Container Insights). */
  readonly runningBelowDesired: cloudwatch.Alarm;
  /** Jobs queued while the service runs no task. */
  readonly workWaitsNoTask: cloudwatch.Alarm;
  readonly deadJobs: cloudwatch.Alarm;
  readonly oldestQueuedAge: cloudwatch.Alarm;
  readonly auditFindings: cloudwatch.Alarm;
  /** Per job kind. */
  readonly longRunning: Readonly<Record<string, cloudwatch.Alarm>>;
  readonly repeatedFailures: Readonly<Record<string, cloudwatch.Alarm>>;
  readonly consecutiveFailures: cloudwatch.Alarm;
  /**
   * Every alarm, in creation order: running below desired, work waits with no task, dead jobs, oldest queued age,
   * audit findings, consecutive failures, then long-running and repeated failures per kind.
   */
  readonly all: cloudwatch.Alarm[];
}

/** Creates the worker's alarms in `scope`, each notifying its topic on ALARM and OK. */
export function createAlarms(scope: Construct, props: AlarmsProps): WorkerAlarms {
  const { baseName, environmentName: env, metricsNamespace } = props;
  const runningBelowDesired = createRunningBelowDesiredAlarm(scope, props);
  const workWaitsNoTask = createWorkWaitsNoTaskAlarm(scope, props);
  const deadJobs = new cloudwatch.Alarm(scope, 'DeadJobsAlarm', {
    alarmName: `${baseName}-dead-jobs`,
    alarmDescription:
      `Jobs reached the dead-letter state (${env}): they used up their attempts and need an operator ` +
      '(bulk-import dead list / replay / purge). See docs/DEPLOYMENT.md §5.',
    // Over the gauges' schedule period, as the alarms below: while the service runs no task the gauges come from the
    // scheduled task only, once a period, and a one-minute period would see the minutes between as not breaching
    // (an alarm flipping to OK and back at every point).
    metric: queueGaugeMetric(metricsNamespace, 'dead', Duration.minutes(props.gaugesScheduleMinutes)),
    threshold: 0,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
  const oldestQueuedAge = new cloudwatch.Alarm(scope, 'OldestQueuedAgeAlarm', {
    alarmName: `${baseName}-oldest-queued-age`,
    alarmDescription:
      `The oldest due job has waited more than ${props.oldestQueuedAgeAlarmSeconds} s (${env}): ` +
      'workers are saturated, stuck or stopped. See docs/DEPLOYMENT.md §5.',
    // The lowest point of a schedule period over the threshold: the age stayed over it the whole period (every minute
    // while tasks run), and it still fires on the one point a period the scheduled task publishes at 0 tasks.
    metric: queueGaugeMetric(metricsNamespace, 'oldestQueuedAgeSeconds', Duration.minutes(props.gaugesScheduleMinutes)).with({
      statistic: cloudwatch.Stats.MINIMUM,
    }),
    threshold: props.oldestQueuedAgeAlarmSeconds,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
  // The audit publishes its findings (dimension Kind = audit) once per run; between runs there is no datapoint and
  // the alarm keeps its state, so it stays in ALARM until an audit finds nothing.
  const auditFindings = new cloudwatch.Alarm(scope, 'AuditFindingsAlarm', {
    alarmName: `${baseName}-audit-findings`,
    alarmDescription:
      `The data-consistency audit found rows that imports wrote and that no longer hold (${env}): dangling reference ids, ` +
      'CSV runs whose rows went missing, documents without objects. bulk-import audit runs; audit findings <id> --csv; ' +
      'docs/RUNBOOK.md "Audit findings".',
    metric: new cloudwatch.Metric({
      namespace: metricsNamespace,
      metricName: AUDIT_FINDINGS_METRIC,
      dimensionsMap: { Kind: AUDIT_KIND },
      statistic: cloudwatch.Stats.MAXIMUM,
      period: Duration.hours(1),
    }),
    threshold: 0,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.IGNORE,
  });
  const consecutiveFailures = new cloudwatch.Alarm(scope, 'ConsecutiveFailuresAlarm', {
    alarmName: `${baseName}-consecutive-failures`,
    alarmDescription:
      `A run has failed ${props.consecutiveFailuresAlarmCount} attempts in a row (${env}): it keeps failing the same way ` +
      'and will end dead. bulk-import jobs --state queued,running; bulk-import show <id>. ' +
      'docs/RUNBOOK.md "Alarm: consecutive failures".',
    metric: queueGaugeMetric(metricsNamespace, 'maxConsecutiveFailures', Duration.minutes(props.gaugesScheduleMinutes)),
    threshold: props.consecutiveFailuresAlarmCount,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
  const kinds = Object.keys(props.longRunningAlarmMinutes).sort();
  const longRunning = Object.fromEntries(kinds.map((kind) => [kind, createLongRunningAlarm(scope, props, kind)]));
  const repeatedFailures = Object.fromEntries(kinds.map((kind) => [kind, createRepeatedFailuresAlarm(scope, props, kind)]));

  const page = new cloudwatchActions.SnsAction(props.topic);
  const workerDown = props.workerDownAlarms === 'page' ? page : new cloudwatchActions.SnsAction(props.noticeTopic ?? props.topic);
  const routed: Array<[cloudwatch.Alarm, cloudwatchActions.SnsAction]> = [
    [runningBelowDesired, workerDown],
    [workWaitsNoTask, workerDown],
    ...[deadJobs, oldestQueuedAge, auditFindings, consecutiveFailures, ...Object.values(longRunning), ...Object.values(repeatedFailures)].map(
      (alarm): [cloudwatch.Alarm, cloudwatchActions.SnsAction] => [alarm, page],
    ),
  ];
  for (const [alarm, action] of routed) {
    alarm.addAlarmAction(action);
    alarm.addOkAction(action);
  }
  return {
    runningBelowDesired,
    workWaitsNoTask,
    deadJobs,
    oldestQueuedAge,
    auditFindings,
    longRunning,
    repeatedFailures,
    consecutiveFailures,
    all: routed.map(([alarm]) => alarm),
  };
}

/**
 * Fewer tasks running than the service wants, for 5 minutes: desired minus running (Container Insights, per minute,
 * a missing point as 0) ≥ 1. The desired count is the live one, so an operator scaling to 0 by hand lowers both and
 * nothing fires, while a task that keeps dying at desired ≥ 1 does. With no point of either series (no Container
 * Insights) the alarm stays OK; the work-waits alarm covers a worker that is gone while jobs wait.
 */
function createRunningBelowDesiredAlarm(scope: Construct, props: AlarmsProps): cloudwatch.Alarm {
  const period = Duration.minutes(1);
  return new cloudwatch.Alarm(scope, 'RunningBelowDesiredAlarm', {
    alarmName: `${props.baseName}-running-below-desired`,
    alarmDescription:
      `Fewer bulk-import worker tasks have run than desired for 5 minutes (${props.environmentName}): tasks die or do ` +
      'not start. Scaling to 0 on purpose does not trigger it. Missing data is not breaching. ' +
      'docs/RUNBOOK.md "Alarm: fewer tasks running than desired".',
    metric: new cloudwatch.MathExpression({
      expression: 'FILL(desired,0) - FILL(running,0)',
      usingMetrics: {
        desired: serviceTaskCount(props, 'DesiredTaskCount', cloudwatch.Stats.MINIMUM, period),
        running: serviceTaskCount(props, 'RunningTaskCount', cloudwatch.Stats.MAXIMUM, period),
      },
      label: 'tasks missing',
      period,
    }),
    threshold: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 5,
    datapointsToAlarm: 5,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
}

/**
 * Jobs wait but no task runs: DueJobs > 0 (runs due now; not those scheduled for later or in a retry's backoff) while
 * the service ran no task in the period and no run was running. The period is the scheduled gauges interval, so each
 * period holds a gauge even at 0 tasks; two periods in a row. A period without any queue gauge (the scheduled task
 * fails too) means nothing watches the queue: missing data is breaching. RunningJobs (the queue's own gauge, from the
 * same round as DueJobs) is there for a cluster without Container Insights: its RunningTaskCount is always missing,
 * read as 0, and a backlog that tasks are working through would page.
 */
function createWorkWaitsNoTaskAlarm(scope: Construct, props: AlarmsProps): cloudwatch.Alarm {
  const period = Duration.minutes(props.gaugesScheduleMinutes);
  return new cloudwatch.Alarm(scope, 'WorkWaitsNoTaskAlarm', {
    alarmName: `${props.baseName}-work-waits-no-task`,
    alarmDescription:
      `Jobs are due but the bulk-import worker service runs no task and no job runs (${props.environmentName}); nothing will run ` +
      'them. Missing data (no queue gauge at all) is breaching. docs/RUNBOOK.md "Alarm: work waits but no task runs".',
    metric: new cloudwatch.MathExpression({
      // A service without tasks may have no Container Insights point: that is 0 running. The gauges are not filled.
      expression: 'IF(due > 0 AND FILL(running,0) == 0 AND runningJobs == 0, 1, 0)',
      usingMetrics: {
        due: queueGaugeMetric(props.metricsNamespace, 'due', period),
        running: serviceTaskCount(props, 'RunningTaskCount', cloudwatch.Stats.MAXIMUM, period),
        runningJobs: queueGaugeMetric(props.metricsNamespace, 'running', period),
      },
      label: 'work waits, no task',
      period,
    }),
    threshold: 1,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 2,
    datapointsToAlarm: 2,
    treatMissingData: cloudwatch.TreatMissingData.BREACHING,
  });
}

/** A run of `kind` has been running longer than its kind's threshold (OldestRunningAgeSeconds, dimension Kind). */
function createLongRunningAlarm(scope: Construct, props: AlarmsProps, kind: string): cloudwatch.Alarm {
  const minutes = props.longRunningAlarmMinutes[kind]!;
  return new cloudwatch.Alarm(scope, `LongRunningAlarm-${kind}`, {
    alarmName: `${props.baseName}-long-running-${kind}`,
    alarmDescription:
      `A run of kind ${kind} has been running for more than ${minutes} min (${props.environmentName}): it may hang while its ` +
      'heartbeats go on. bulk-import jobs --state running --kind ' +
      `${kind}; bulk-import watch <id>. docs/RUNBOOK.md "Alarm: long-running run".`,
    metric: new cloudwatch.Metric({
      namespace: props.metricsNamespace,
      metricName: GAUGE_METRICS.oldestRunningAgeSeconds.name,
      dimensionsMap: { Kind: kind },
      statistic: cloudwatch.Stats.MAXIMUM,
      period: Duration.minutes(props.gaugesScheduleMinutes),
    }),
    threshold: minutes * 60,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
}

/**
 * Runs of `kind` failed again and again over the window: retries, runs ended failed or dead, lost leases and
 * unrecorded failures (JobsFinished by Kind and Outcome, summed; an outcome without a point counts 0).
 */
function createRepeatedFailuresAlarm(scope: Construct, props: AlarmsProps, kind: string): cloudwatch.Alarm {
  const window = Duration.minutes(props.repeatedFailuresWindowMinutes);
  const usingMetrics = Object.fromEntries(
    FAILURE_OUTCOMES.map((outcome) => [
      `m_${outcome}`,
      new cloudwatch.Metric({
        namespace: props.metricsNamespace,
        metricName: JOBS_FINISHED_METRIC,
        dimensionsMap: { Kind: kind, Outcome: outcome },
        statistic: cloudwatch.Stats.SUM,
        period: window,
      }),
    ]),
  );
  return new cloudwatch.Alarm(scope, `RepeatedFailuresAlarm-${kind}`, {
    alarmName: `${props.baseName}-repeated-failures-${kind}`,
    alarmDescription:
      `${kind} runs failed ${props.repeatedFailuresAlarmCount} times or more within ${props.repeatedFailuresWindowMinutes} min ` +
      `(${props.environmentName}): retries, failed or dead runs, lost leases, unrecorded failures. bulk-import stats; bulk-import jobs --kind ` +
      `${kind} --since 2h. docs/RUNBOOK.md "Alarm: repeated failures".`,
    metric: new cloudwatch.MathExpression({
      expression: Object.keys(usingMetrics)
        .map((id) => `FILL(${id},0)`)
        .join('+'),
      usingMetrics,
      label: `${kind} failures`,
      period: window,
    }),
    threshold: props.repeatedFailuresAlarmCount,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
  });
}

/** A Container Insights task count of the worker service. */
function serviceTaskCount(props: AlarmsProps, metricName: string, statistic: string, period: Duration): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: 'ECS/ContainerInsights',
    metricName,
    dimensionsMap: { ClusterName: props.cluster.clusterName, ServiceName: props.service.serviceName },
    statistic,
    period,
  });
}

/** A KMS-encrypted on-call topic that denies publishing without TLS and lets CloudWatch alarms publish. */
export function createAlarmTopic(scope: Construct, environmentName: string): sns.Topic {
  const key = new kms.Key(scope, 'AlarmTopicKey', {
    description: `Encrypts the bulk-import worker alarm topic (${environmentName})`,
    enableKeyRotation: true,
  });
  // CloudWatch encrypts the notifications it publishes to the topic with this key: without this statement every
  // alarm action fails with a KMS AccessDenied and nobody is paged (AWS-managed SNS keys cannot be used at all).
  key.addToResourcePolicy(
    new iam.PolicyStatement({
      sid: 'CloudWatchAlarmsUseKey',
      principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
      actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
      resources: ['*'],
    }),
  );
  const topic = new sns.Topic(scope, 'AlarmTopic', {
    displayName: `bulk-import worker alarms (${environmentName})`,
    masterKey: key,
    // A topic policy (the TLS deny) replaces SNS's default policy, so CloudWatch needs its own Allow below.
    enforceSSL: true,
  });
  const stack = Stack.of(scope);
  topic.addToResourcePolicy(
    new iam.PolicyStatement({
      sid: 'CloudWatchAlarmsPublish',
      principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
      actions: ['sns:Publish'],
      resources: [topic.topicArn],
      conditions: {
        ArnLike: { 'aws:SourceArn': stack.formatArn({ service: 'cloudwatch', resource: 'alarm', resourceName: '*', arnFormat: ArnFormat.COLON_RESOURCE_NAME }) },
        StringEquals: { 'aws:SourceAccount': stack.account },
      },
    }),
  );
  return topic;
}
