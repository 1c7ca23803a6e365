// The queue gauges without a running worker: an EventBridge Scheduler schedule starts a task of the worker's task
// definition every few minutes that publishes the gauges once (`bulk-import gauges --once`) and exits. With the
// service at 0 tasks nothing else publishes them, and the alarm "work waits but no task runs" (infra/alarms.ts) reads
// exactly these points. The schedule names the task definition family, so each run takes its latest ACTIVE revision,
// the image scripts/deploy.sh deployed (infra/scheduled-task.ts); the scheduler's role may start revisions of that one
// family in the worker's cluster and pass the task's two roles, nothing more.
import { Duration, Stack } from 'aws-cdk-lib';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as schedulerTargets from 'aws-cdk-lib/aws-scheduler-targets';
import type { Construct } from 'constructs';
import { scheduledTaskRole, taskFamilyArn } from './scheduled-task.js';

/** The scheduled task's command: publish the queue gauges once and exit. */
export const GAUGES_TASK_COMMAND = ['node', 'bin/bulk-import.js', 'gauges', '--once'];
/** Minutes between two scheduled gauge publications (setting `gaugesScheduleMinutes`). */
export const DEFAULT_GAUGES_SCHEDULE_MINUTES = 5;

export interface GaugesScheduleProps {
  readonly environmentName: string;
  readonly cluster: ecs.ICluster;
  readonly taskDefinition: ecs.FargateTaskDefinition;
  /** The container whose command is replaced (the worker's). */
  readonly containerName: string;
  readonly subnets: ec2.SubnetSelection;
  readonly securityGroup: ec2.ISecurityGroup;
  /** Whole minutes between runs, 1 or more. */
  readonly intervalMinutes: number;
}

/** The schedule and the role it runs tasks with. */
export interface GaugesSchedule {
  readonly schedule: scheduler.Schedule;
  readonly role: iam.Role;
}

export function createGaugesSchedule(scope: Construct, props: GaugesScheduleProps): GaugesSchedule {
  const interval = Duration.minutes(props.intervalMinutes);
  const role = new iam.Role(scope, 'GaugesScheduleRole', {
    // Only schedules of this account may assume it (the confused-deputy guard EventBridge Scheduler documents).
    assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
      conditions: { StringEquals: { 'aws:SourceAccount': Stack.of(scope).account } },
    }),
    description: `Starts the bulk-import worker's queue-gauges task every ${props.intervalMinutes} min (${props.environmentName})`,
  });
  const target = new schedulerTargets.EcsRunFargateTask(props.cluster, {
    // ecs:RunTask on the family's revisions in this cluster, iam:PassRole on the task and execution roles to ECS tasks.
    role: scheduledTaskRole(role, props.taskDefinition, props.cluster),
    taskDefinition: props.taskDefinition,
    taskCount: 1,
    vpcSubnets: props.subnets,
    securityGroups: [props.securityGroup],
    assignPublicIp: false,
    input: scheduler.ScheduleTargetInput.fromObject({
      containerOverrides: [{ name: props.containerName, command: GAUGES_TASK_COMMAND }],
    }),
    // A start that fails (capacity, throttling) is retried while it is still worth it: before the next run is due.
    retryAttempts: 2,
    maxEventAge: Duration.seconds(Math.max(60, interval.toSeconds())),
  });
  const schedule = new scheduler.Schedule(scope, 'GaugesSchedule', {
    description: `Publishes the bulk-import queue gauges every ${props.intervalMinutes} min, also while the service is at 0 tasks (${props.environmentName})`,
    schedule: scheduler.ScheduleExpression.rate(interval),
    target,
    timeWindow: scheduler.TimeWindow.off(),
  });
  (schedule.node.defaultChild as scheduler.CfnSchedule).addPropertyOverride(
    'Target.EcsParameters.TaskDefinitionArn',
    taskFamilyArn(props.taskDefinition),
  );
  return { schedule, role };
}
