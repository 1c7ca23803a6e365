// The alarms that page on-call for the bulk-import worker, and the topic they notify when none is given. Metric
// names come from the worker modules that publish them (queue gauges, the audit handler), so a rename there is a
// compile error here instead of an alarm that silently reads nothing.
import { ArnFormat, Duration, Stack } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import { AUDIT_FINDINGS_METRIC, auditHandler } from '../worker/handlers/audit.js';
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

export interface AlarmsProps {
  readonly environmentName: string;
  /** Prefix of the alarm names: bulk-import-worker-<environment>. */
  readonly baseName: string;
  readonly metricsNamespace: string;
  readonly cluster: ecs.ICluster;
  readonly service: ecs.IBaseService;
  /**
   * Tasks that should always run (desiredCount, or the autoscaling minimum). The no-running-tasks alarm exists in
   * prod when this is above 0.
   */
  readonly runningFloor: number;
  readonly oldestQueuedAgeAlarmSeconds: number;
  /** Notified on ALARM and on OK. */
  readonly topic: sns.ITopic;
}

export interface WorkerAlarms {
  readonly runningTasks: cloudwatch.Alarm | undefined;
  readonly deadJobs: cloudwatch.Alarm;
  readonly oldestQueuedAge: cloudwatch.Alarm;
  readonly auditFindings: cloudwatch.Alarm;
  /** The alarms that exist, in creation order: no running tasks, dead jobs, oldest queued age, audit findings. */
  readonly all: cloudwatch.Alarm[];
}

/** Creates the worker's alarms in `scope`, each notifying `topic` on ALARM and OK. */
export function createAlarms(scope: Construct, props: AlarmsProps): WorkerAlarms {
  const { baseName, environmentName: env, metricsNamespace } = props;
  let runningTasks: cloudwatch.Alarm | undefined;
  if (env === 'prod' && props.runningFloor > 0) {
    runningTasks = new cloudwatch.Alarm(scope, 'NoRunningTasksAlarm', {
      alarmName: `${baseName}-no-running-tasks`,
      alarmDescription:
        `No bulk-import worker task has run for 5 minutes although ${props.runningFloor} should (${env}). ` +
        'Missing data counts as breaching: with tasks expected, no datapoint means none reported. ' +
        'See docs/DEPLOYMENT.md §5.',
      metric: new cloudwatch.Metric({
        namespace: 'ECS/ContainerInsights',
        metricName: 'RunningTaskCount',
        dimensionsMap: { ClusterName: props.cluster.clusterName, ServiceName: props.service.serviceName },
        statistic: cloudwatch.Stats.MAXIMUM,
        period: Duration.minutes(1),
      }),
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
      evaluationPeriods: 5,
      datapointsToAlarm: 5,
      treatMissingData: cloudwatch.TreatMissingData.BREACHING,
    });
  }
  const deadJobs = new cloudwatch.Alarm(scope, 'DeadJobsAlarm', {
    alarmName: `${baseName}-dead-jobs`,
    alarmDescription:
      `Jobs reached the dead-letter state (${env}): they used up their attempts and need an operator ` +
      '(bulk-import dead list / replay / purge). See docs/DEPLOYMENT.md §5.',
    metric: queueGaugeMetric(metricsNamespace, 'dead', Duration.minutes(1)),
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
    metric: queueGaugeMetric(metricsNamespace, 'oldestQueuedAgeSeconds', Duration.minutes(1)),
    threshold: props.oldestQueuedAgeAlarmSeconds,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 3,
    datapointsToAlarm: 3,
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
      dimensionsMap: { Kind: auditHandler.kind },
      statistic: cloudwatch.Stats.MAXIMUM,
      period: Duration.hours(1),
    }),
    threshold: 0,
    comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
    evaluationPeriods: 1,
    treatMissingData: cloudwatch.TreatMissingData.IGNORE,
  });
  const action = new cloudwatchActions.SnsAction(props.topic);
  const all: cloudwatch.Alarm[] = [];
  for (const alarm of [runningTasks, deadJobs, oldestQueuedAge, auditFindings]) {
    if (!alarm) continue;
    alarm.addAlarmAction(action);
    alarm.addOkAction(action);
    all.push(alarm);
  }
  return { runningTasks, deadJobs, oldestQueuedAge, auditFindings, all };
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
