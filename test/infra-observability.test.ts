// The stack's observability (issue 16): long-running, repeated-failure and consecutive-failure alarms per job kind;
// the scheduled gauges task and the two "worker down" alarms that read it (work waits but no task runs, fewer tasks
// running than desired), paging or notifying per environment; the per-environment metric namespace; the optional
// ADOT collector sidecar exporting to X-Ray; the optional run-notifications topic. Each configuration is synthesized
// once (with cdk-nag: an unacknowledged finding fails the synth) and shared by the tests that read it.
import { runInNewContext } from 'node:vm';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { afterAll, describe, expect, it } from 'vitest';
import {
  DEFAULT_LONG_RUNNING_ALARM_MINUTES,
  FAILURE_OUTCOMES,
  FALLBACK_LONG_RUNNING_ALARM_MINUTES,
  workerKinds,
} from '../infra/alarms.js';
import { GAUGES_TASK_COMMAND } from '../infra/gauges-schedule.js';
import { readWorkerSettings, SettingsError } from '../infra/settings.js';
import { COLLECTOR_CONTAINER_NAME, DEFAULT_COLLECTOR_IMAGE, XRAY_WRITE_ACTIONS } from '../infra/tracing.js';
import { addWorkerStack } from '../infra/worker-app.js';
import { CSV_IMPORT_KIND, MASS_IMPORT_KIND } from '../worker/handlers/kinds.js';
import { JOBS_FINISHED_METRIC, outcomeOf } from '../worker/ops/metrics.js';
import { GAUGE_METRICS } from '../worker/ops/queue-gauges.js';
import {
  actionsOf,
  type CfnResource,
  cleanUp,
  EXISTING,
  iamStatements,
  logicalIdOf,
  newApp,
  REQUIRED_CONTEXT,
  resourcesOfType,
  validationFindings,
} from './fixtures/infra/synth.js';
import { taskDefinitionNamed } from './support/scheduled-task-arn.js';

const SYNTH_TIMEOUT = 60_000;
afterAll(cleanUp);

const NOTICE_TOPIC_ARN = 'arn:aws:sns:eu-west-1:123456789012:team-notices-staging';
const NOTIFICATIONS_TOPIC_ARN = 'arn:aws:sns:eu-west-1:123456789012:backend-run-notifications';

/** The configurations these tests read, as `-c` strings. */
const CONFIGURATIONS = {
  /** prod with every option on: tracing, a created notifications topic, own thresholds, a 10-minute gauges schedule. */
  prodObserved: {
    environment: 'prod',
    desiredCount: '2',
    tracing: 'true',
    notificationsTopic: 'create',
    notifyStates: 'dead,failed,partial,canceled',
    adminBaseUrl: 'https://admin.example.com/bulk-import',
    longRunningAlarmMinutes: `${MASS_IMPORT_KIND}=480`,
    repeatedFailuresAlarmCount: '8',
    repeatedFailuresWindowMinutes: '30',
    consecutiveFailuresAlarmCount: '4',
    gaugesScheduleMinutes: '10',
  },
  /** staging stopped, everything else default except a notice topic and an imported notifications topic. */
  stagingStopped: {
    environment: 'staging',
    desiredCount: '0',
    noticeTopicArn: NOTICE_TOPIC_ARN,
    notificationsTopic: NOTIFICATIONS_TOPIC_ARN,
    notificationsTopicKmsKeyArn: EXISTING.kmsKeyArn,
  },
  /** prod with nothing optional: the defaults. */
  prodDefaults: { environment: 'prod', desiredCount: '1' },
} satisfies Record<string, Record<string, string>>;
type Configuration = keyof typeof CONFIGURATIONS;

const synthesized = new Map<Configuration, { template: Template; findings: string[] }>();
function synth(name: Configuration): Template {
  let entry = synthesized.get(name);
  if (!entry) {
    const app = newApp({ ...REQUIRED_CONTEXT, ...CONFIGURATIONS[name] });
    const { stack } = addWorkerStack(app);
    const template = Template.fromStack(stack);
    entry = { template, findings: validationFindings(app.outdir) };
    synthesized.set(name, entry);
  }
  return entry.template;
}

type Alarm = CfnResource & { Properties: Record<string, unknown> & { Metrics?: MetricDataQuery[] } };
interface MetricDataQuery {
  Id: string;
  Expression?: string;
  ReturnData?: boolean;
  MetricStat?: { Metric: { Namespace: string; MetricName: string; Dimensions?: Array<{ Name: string; Value: unknown }> }; Period: number; Stat: string };
}

function alarmNamed(template: Template, suffix: string): Alarm {
  const matches = resourcesOfType(template, 'AWS::CloudWatch::Alarm').filter(([, alarm]) =>
    String(alarm.Properties.AlarmName).endsWith(`-${suffix}`),
  );
  if (matches.length !== 1) throw new Error(`expected one alarm named …-${suffix}, found ${matches.length}`);
  return matches[0]![1] as Alarm;
}

function alarmNames(template: Template): string[] {
  return resourcesOfType(template, 'AWS::CloudWatch::Alarm')
    .map(([, alarm]) => alarm.Properties.AlarmName)
    .filter((name): name is string => typeof name === 'string');
}

function dimensionsOf(query: MetricDataQuery): Record<string, unknown> {
  return Object.fromEntries((query.MetricStat?.Metric.Dimensions ?? []).map((dimension) => [dimension.Name, dimension.Value]));
}

function containers(template: Template): Array<Record<string, unknown> & { Name: string }> {
  const [[, taskDefinition]] = resourcesOfType(template, 'AWS::ECS::TaskDefinition') as [[string, CfnResource]];
  return taskDefinition.Properties.ContainerDefinitions as Array<Record<string, unknown> & { Name: string }>;
}

function environmentOf(container: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries((container.Environment as Array<{ Name: string; Value: unknown }>).map((entry) => [entry.Name, entry.Value]));
}

function worker(template: Template) {
  return containers(template).find((container) => container.Name === 'worker')!;
}

function taskPolicyStatements(template: Template) {
  const taskPolicy = logicalIdOf(template, 'AWS::IAM::Policy', /^WorkerTaskDefinitionTaskRoleDefaultPolicy/);
  return iamStatements(template).filter((statement) => statement.policy === taskPolicy);
}

/** The topic an alarm notifies (the same on ALARM and OK). */
function actionTopic(alarm: Alarm): unknown {
  expect(alarm.Properties.OKActions).toEqual(alarm.Properties.AlarmActions);
  const actions = alarm.Properties.AlarmActions as unknown[];
  expect(actions).toHaveLength(1);
  return actions[0];
}

/**
 * One evaluation period of a metric-math alarm, the way CloudWatch treats it: an input used without FILL that has no
 * point gives the expression no point, which the alarm's TreatMissingData then decides; FILL(x, v) gives v instead.
 * `values` holds the input points of the period by query id (undefined: no point). Returns whether the period breaches.
 */
function periodBreaches(alarm: Alarm, values: Record<string, number | undefined>): boolean {
  const queries = alarm.Properties.Metrics!;
  const expression = queries.find((query) => query.Expression)!.Expression!;
  const unfilled = expression.replace(/FILL\(\w+,\s*[\d.]+\)/g, '');
  const missing = queries.some((query) => query.MetricStat && new RegExp(`\\b${query.Id}\\b`).test(unfilled) && values[query.Id] === undefined);
  if (missing) return alarm.Properties.TreatMissingData === 'breaching';
  const js = expression
    .replace(/FILL\((\w+),\s*([\d.]+)\)/g, '(v.$1 ?? $2)')
    .replace(/\bAND\b/g, '&&')
    .replace(/\bIF\(/g, 'iff(')
    .replace(/\b(?<![.])([a-z]\w*)\b(?!\s*\()/g, (id: string) => (queries.some((query) => query.Id === id) ? `v.${id}` : id));
  const value = runInNewContext(js, { v: values, iff: (condition: unknown, yes: number, no: number) => (condition ? yes : no) }) as number;
  expect(alarm.Properties.ComparisonOperator).toBe('GreaterThanOrEqualToThreshold');
  return value >= (alarm.Properties.Threshold as number);
}

/** The query id of the input reading `metricName`. */
function inputId(alarm: Alarm, metricName: string): string {
  return alarm.Properties.Metrics!.find((query) => query.MetricStat?.Metric.MetricName === metricName)!.Id;
}

describe('synthesis', () => {
  it.each(Object.keys(CONFIGURATIONS) as Configuration[])(
    '%s: no finding from cdk-nag, the CloudFormation validator or annotations',
    { timeout: SYNTH_TIMEOUT },
    (name) => {
      synth(name);
      expect(synthesized.get(name)!.findings).toEqual([]);
    },
  );
});

describe('metric namespace per environment', () => {
  it('defaults to BulkImport/<environment>: the worker publishes there, may publish only there, and the alarms read it', { timeout: SYNTH_TIMEOUT }, () => {
    for (const [name, namespace] of [
      ['prodDefaults', 'BulkImport/prod'],
      ['stagingStopped', 'BulkImport/staging'],
    ] as const) {
      const template = synth(name);
      expect(environmentOf(worker(template)).METRICS_NAMESPACE).toBe(namespace);
      const metricsStatement = taskPolicyStatements(template).find((statement) => statement.Sid === 'PutMetricsInNamespace')!;
      expect(metricsStatement.Condition).toEqual({ StringEquals: { 'cloudwatch:namespace': namespace } });
      const namespaces = new Set<unknown>();
      for (const [, alarm] of resourcesOfType(template, 'AWS::CloudWatch::Alarm')) {
        if (alarm.Properties.Namespace) namespaces.add(alarm.Properties.Namespace);
        for (const query of (alarm.Properties.Metrics as MetricDataQuery[] | undefined) ?? []) {
          if (query.MetricStat) namespaces.add(query.MetricStat.Metric.Namespace);
        }
      }
      expect([...namespaces].sort()).toEqual([namespace, 'ECS/ContainerInsights'].sort());
    }
  });
});

describe('long-running runs', () => {
  it('one alarm per registered kind on OldestRunningAgeSeconds (Kind), each with its own threshold', { timeout: SYNTH_TIMEOUT }, () => {
    const template = synth('prodObserved');
    const kinds = workerKinds();
    expect(kinds).toContain(MASS_IMPORT_KIND);
    expect(kinds).toContain(CSV_IMPORT_KIND);
    for (const kind of kinds) {
      const alarm = alarmNamed(template, `long-running-${kind}`);
      const minutes =
        kind === MASS_IMPORT_KIND ? 480 : (DEFAULT_LONG_RUNNING_ALARM_MINUTES[kind] ?? FALLBACK_LONG_RUNNING_ALARM_MINUTES);
      expect(alarm.Properties).toMatchObject({
        Namespace: 'BulkImport/prod',
        MetricName: GAUGE_METRICS.oldestRunningAgeSeconds.name,
        Dimensions: [{ Name: 'Kind', Value: kind }],
        Statistic: 'Maximum',
        Period: 600,
        Threshold: minutes * 60,
        ComparisonOperator: 'GreaterThanThreshold',
        EvaluationPeriods: 1,
        TreatMissingData: 'notBreaching',
        AlarmDescription: expect.stringContaining('docs/RUNBOOK.md "Alarm: long-running run"'),
      });
    }
    // Mass imports run for hours, a CSV validation for minutes.
    expect(DEFAULT_LONG_RUNNING_ALARM_MINUTES[MASS_IMPORT_KIND]).toBeGreaterThanOrEqual(4 * 60);
    expect(DEFAULT_LONG_RUNNING_ALARM_MINUTES[CSV_IMPORT_KIND]).toBeLessThanOrEqual(60);
    // Without the setting each kind takes its default.
    expect(alarmNamed(synth('prodDefaults'), `long-running-${MASS_IMPORT_KIND}`).Properties.Threshold).toBe(
      DEFAULT_LONG_RUNNING_ALARM_MINUTES[MASS_IMPORT_KIND]! * 60,
    );
  });
});

describe('repeated failures', () => {
  it('per kind: retries, failed, dead, lost leases and unrecorded failures of JobsFinished summed over the window by metric math', { timeout: SYNTH_TIMEOUT }, () => {
    const template = synth('prodObserved');
    expect([...FAILURE_OUTCOMES].sort()).toEqual(
      [outcomeOf('dead'), outcomeOf('failed'), outcomeOf('lost'), outcomeOf('queued'), outcomeOf('unrecorded')].sort(),
    );
    for (const kind of workerKinds()) {
      const alarm = alarmNamed(template, `repeated-failures-${kind}`);
      expect(alarm.Properties).toMatchObject({
        Threshold: 8,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        EvaluationPeriods: 1,
        TreatMissingData: 'notBreaching',
      });
      const queries = alarm.Properties.Metrics!;
      const inputs = queries.filter((query) => query.MetricStat);
      expect(inputs.map((query) => dimensionsOf(query).Outcome).sort()).toEqual([...FAILURE_OUTCOMES].sort());
      for (const query of inputs) {
        expect(query.MetricStat).toMatchObject({
          Metric: { Namespace: 'BulkImport/prod', MetricName: JOBS_FINISHED_METRIC },
          Period: 1800,
          Stat: 'Sum',
        });
        expect(dimensionsOf(query).Kind).toBe(kind);
        expect(query.ReturnData).toBe(false);
      }
      const [expression] = queries.filter((query) => query.Expression);
      // Every outcome counts, and a missing series (nothing of that outcome) counts as 0, not as "no data".
      for (const query of inputs) expect(expression!.Expression).toContain(`FILL(${query.Id},0)`);
      expect(expression!.Expression!.split('+')).toHaveLength(inputs.length);
    }
  });

  it('a run failing N attempts in a row: MaxConsecutiveFailures ≥ N over the fleet', { timeout: SYNTH_TIMEOUT }, () => {
    const configured = alarmNamed(synth('prodObserved'), 'consecutive-failures');
    expect(configured.Properties).toMatchObject({
      Namespace: 'BulkImport/prod',
      MetricName: GAUGE_METRICS.maxConsecutiveFailures.name,
      Statistic: 'Maximum',
      Period: 600,
      Threshold: 4,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      TreatMissingData: 'notBreaching',
    });
    expect(configured.Properties.Dimensions).toBeUndefined();
    expect(alarmNamed(synth('prodDefaults'), 'consecutive-failures').Properties.Threshold).toBe(3);
  });
});

describe('stopped but needed', () => {
  it('a scheduled Fargate task of the latest revision of the worker family publishes the gauges every N minutes', { timeout: SYNTH_TIMEOUT }, () => {
    for (const [name, minutes, family] of [
      ['prodObserved', 10, 'bulk-import-worker-prod'],
      ['stagingStopped', 5, 'bulk-import-worker-staging'],
    ] as const) {
      const template = synth(name);
      const schedules = resourcesOfType(template, 'AWS::Scheduler::Schedule');
      expect(schedules).toHaveLength(1);
      const schedule = schedules[0]![1].Properties;
      expect(schedule.ScheduleExpression).toBe(`rate(${minutes} minutes)`);
      expect(schedule.State).toBe('ENABLED');
      const target = schedule.Target as Record<string, unknown> & { EcsParameters: Record<string, unknown>; Input: string };
      // The family: each run takes its latest ACTIVE revision, the image scripts/deploy.sh deployed.
      expect(taskDefinitionNamed(target.EcsParameters.TaskDefinitionArn)).toBe(family);
      expect(target.EcsParameters).toMatchObject({
        TaskCount: 1,
        LaunchType: 'FARGATE',
        NetworkConfiguration: { AwsvpcConfiguration: { AssignPublicIp: 'DISABLED', SecurityGroups: [{ 'Fn::GetAtt': [expect.stringMatching(/^WorkerSecurityGroup/), 'GroupId'] }] } },
      });
      expect(target.EcsParameters.PropagateTags).toBeUndefined();
      expect(JSON.parse(target.Input)).toEqual({ containerOverrides: [{ name: 'worker', command: GAUGES_TASK_COMMAND }] });
      expect(GAUGES_TASK_COMMAND.slice(-2)).toEqual(['gauges', '--once']);
    }
  });

  it('the scheduler role may only run revisions of that family in the worker cluster and pass its two roles to ECS tasks', { timeout: SYNTH_TIMEOUT }, () => {
    const template = synth('prodObserved');
    const roleId = logicalIdOf(template, 'AWS::IAM::Role', /^WorkerGaugesScheduleRole/);
    const role = template.toJSON().Resources[roleId] as CfnResource;
    expect(role.Properties.AssumeRolePolicyDocument).toMatchObject({
      Statement: [
        {
          Action: 'sts:AssumeRole',
          Effect: 'Allow',
          Principal: { Service: 'scheduler.amazonaws.com' },
          Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
        },
      ],
    });
    const statements = iamStatements(template).filter((statement) => statement.policy.startsWith('WorkerGaugesScheduleRole'));
    expect(statements.flatMap(actionsOf).sort()).toEqual(['ecs:RunTask', 'iam:PassRole']);
    const runTask = statements.find((statement) => actionsOf(statement).includes('ecs:RunTask'))!;
    expect(taskDefinitionNamed(runTask.Resource)).toBe('bulk-import-worker-prod:*');
    expect(runTask.Condition).toEqual({ ArnEquals: { 'ecs:cluster': { 'Fn::GetAtt': [expect.stringMatching(/^WorkerCluster/), 'Arn'] } } });
    const passRole = statements.find((statement) => actionsOf(statement).includes('iam:PassRole'))!;
    const passed = (passRole.Resource as Array<{ 'Fn::GetAtt': [string, string] }>).map((resource) => resource['Fn::GetAtt']);
    expect(passed.map(([id]) => id.replace(/[0-9A-F]{8}$/, '')).sort()).toEqual(['WorkerTaskDefinitionExecutionRole', 'WorkerTaskDefinitionTaskRole']);
    expect(passed.map(([, attribute]) => attribute)).toEqual(['Arn', 'Arn']);
    expect(passRole.Condition).toEqual({ StringLike: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' } });
  });

  it('work waits but no task runs: DueJobs > 0 while the service runs 0 tasks and no job; no gauges at all breaches', { timeout: SYNTH_TIMEOUT }, () => {
    const template = synth('stagingStopped');
    const alarm = alarmNamed(template, 'work-waits-no-task');
    expect(alarm.Properties).toMatchObject({
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      EvaluationPeriods: 2,
      DatapointsToAlarm: 2,
      // The only way the expression has no value is a period without any queue gauge: then nothing watches the
      // queue (the scheduled task fails too), and that must not stay silent.
      TreatMissingData: 'breaching',
    });
    const queries = alarm.Properties.Metrics!;
    const due = queries.find((query) => query.MetricStat?.Metric.MetricName === GAUGE_METRICS.due.name)!;
    const runningJobs = queries.find((query) => query.MetricStat?.Metric.MetricName === GAUGE_METRICS.running.name)!;
    const running = queries.find((query) => query.MetricStat?.Metric.MetricName === 'RunningTaskCount')!;
    for (const gauge of [due, runningJobs]) {
      expect(gauge.MetricStat).toMatchObject({ Metric: { Namespace: 'BulkImport/staging' }, Period: 300, Stat: 'Maximum' });
      expect(gauge.MetricStat!.Metric.Dimensions).toBeUndefined();
    }
    expect(running.MetricStat).toMatchObject({ Metric: { Namespace: 'ECS/ContainerInsights' }, Period: 300, Stat: 'Maximum' });
    expect(Object.keys(dimensionsOf(running)).sort()).toEqual(['ClusterName', 'ServiceName']);
    const expression = queries.find((query) => query.Expression)!.Expression!;
    // No Container Insights point for a service without tasks means 0 running; the queue gauges are never filled.
    expect(expression).toBe(`IF(${due.Id} > 0 AND FILL(${running.Id},0) == 0 AND ${runningJobs.Id} == 0, 1, 0)`);
  });

  it('missing data, period by period: which combinations of points breach', { timeout: SYNTH_TIMEOUT }, () => {
    const waits = alarmNamed(synth('stagingStopped'), 'work-waits-no-task');
    const [due, runningForWaits, jobsRunning] = [
      inputId(waits, GAUGE_METRICS.due.name),
      inputId(waits, 'RunningTaskCount'),
      inputId(waits, GAUGE_METRICS.running.name),
    ];
    const at = (dueJobs: number | undefined, running: number | undefined, runningJobs: number | undefined = 0) =>
      periodBreaches(waits, { [due]: dueJobs, [runningForWaits]: running, [jobsRunning]: runningJobs });
    expect(at(3, undefined)).toBe(true); // jobs wait, the stopped service has no Container Insights point
    expect(at(3, 0)).toBe(true);
    expect(at(3, 1)).toBe(false); // a task runs: it will claim them
    expect(at(0, 0)).toBe(false); // queued runs only for later (a runAt ahead, a retry's backoff): nothing waits yet
    // A cluster without Container Insights: no RunningTaskCount ever, but tasks are working through the backlog.
    expect(at(3, undefined, 4)).toBe(false);
    expect(at(undefined, undefined, undefined)).toBe(true); // no queue gauge at all: nothing watches the queue
    expect(at(0, undefined)).toBe(false); // stopped, nothing waits: quiet
    expect(at(undefined, undefined)).toBe(true); // no gauge at all: nothing watches the queue
    expect(at(undefined, 2)).toBe(true); // tasks run but publish no gauge either

    const below = alarmNamed(synth('prodDefaults'), 'running-below-desired');
    const [desired, running] = [inputId(below, 'DesiredTaskCount'), inputId(below, 'RunningTaskCount')];
    const tasks = (desiredCount: number | undefined, runningCount: number | undefined) =>
      periodBreaches(below, { [desired]: desiredCount, [running]: runningCount });
    expect(tasks(0, undefined)).toBe(false); // scaled to 0 by hand
    expect(tasks(0, 0)).toBe(false);
    expect(tasks(undefined, undefined)).toBe(false); // no Container Insights points at all
    expect(tasks(1, undefined)).toBe(true); // the one task died
    expect(tasks(2, 1)).toBe(true); // one of two keeps dying
    expect(tasks(2, 2)).toBe(false);
    expect(tasks(2, 3)).toBe(false); // a deployment starts new tasks before stopping old ones
  });

  it('running below desired compares the live counts, so scaling to 0 by hand does not page; missing data does not breach', { timeout: SYNTH_TIMEOUT }, () => {
    for (const name of ['prodDefaults', 'stagingStopped'] as const) {
      const alarm = alarmNamed(synth(name), 'running-below-desired');
      expect(alarm.Properties).toMatchObject({
        Threshold: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        EvaluationPeriods: 5,
        DatapointsToAlarm: 5,
        TreatMissingData: 'notBreaching',
      });
      const queries = alarm.Properties.Metrics!;
      const desired = queries.find((query) => query.MetricStat?.Metric.MetricName === 'DesiredTaskCount')!;
      const running = queries.find((query) => query.MetricStat?.Metric.MetricName === 'RunningTaskCount')!;
      for (const query of [desired, running]) {
        expect(query.MetricStat).toMatchObject({ Metric: { Namespace: 'ECS/ContainerInsights' }, Period: 60 });
        expect(Object.keys(dimensionsOf(query)).sort()).toEqual(['ClusterName', 'ServiceName']);
      }
      expect(queries.find((query) => query.Expression)!.Expression).toBe(`FILL(${desired.Id},0) - FILL(${running.Id},0)`);
    }
    // The static RunningTaskCount < 1 alarm is gone: it paged for an operator's deliberate scale to 0.
    expect(alarmNames(synth('prodDefaults')).filter((name) => name.endsWith('-no-running-tasks'))).toEqual([]);
  });

  it('pages on-call in prod and notifies the notice topic elsewhere', { timeout: SYNTH_TIMEOUT }, () => {
    const prod = synth('prodDefaults');
    const alarmTopic = { Ref: logicalIdOf(prod, 'AWS::SNS::Topic', /^WorkerAlarmTopic/) };
    for (const suffix of ['work-waits-no-task', 'running-below-desired']) {
      expect(actionTopic(alarmNamed(prod, suffix))).toEqual(alarmTopic);
      expect(actionTopic(alarmNamed(synth('stagingStopped'), suffix))).toBe(NOTICE_TOPIC_ARN);
    }
    // Job-level alarms page in every environment, like the dead-jobs alarm.
    const stagingAlarmTopic = { Ref: logicalIdOf(synth('stagingStopped'), 'AWS::SNS::Topic', /^WorkerAlarmTopic/) };
    expect(actionTopic(alarmNamed(synth('stagingStopped'), 'consecutive-failures'))).toEqual(stagingAlarmTopic);
  });

  it('settings: page or notify per environment, a notice topic only as an SNS ARN', () => {
    const read = (context: Record<string, unknown>) => readWorkerSettings((key) => ({ ...REQUIRED_CONTEXT, ...context })[key]);
    expect(read({ environment: 'prod' }).observability.workerDownAlarms).toBeUndefined();
    expect(read({ environment: 'staging', workerDownAlarms: 'page' }).observability.workerDownAlarms).toBe('page');
    expect(() => read({ workerDownAlarms: 'shout' })).toThrow(SettingsError);
    expect(() => read({ noticeTopicArn: 'team-notices' })).toThrow(/noticeTopicArn/);
    expect(() => read({ gaugesScheduleMinutes: '0' })).toThrow(/gaugesScheduleMinutes/);
  });
});

describe('settings of the job alarms', () => {
  const read = (context: Record<string, unknown>) => readWorkerSettings((key) => ({ ...REQUIRED_CONTEXT, ...context })[key]);

  it('longRunningAlarmMinutes: kind=minutes pairs or a JSON object, only kinds the worker runs', () => {
    expect(read({ longRunningAlarmMinutes: `${MASS_IMPORT_KIND}=600,${CSV_IMPORT_KIND}=20` }).observability.longRunningAlarmMinutes).toEqual({
      [MASS_IMPORT_KIND]: 600,
      [CSV_IMPORT_KIND]: 20,
    });
    expect(read({ longRunningAlarmMinutes: { [MASS_IMPORT_KIND]: 90 } }).observability.longRunningAlarmMinutes).toEqual({ [MASS_IMPORT_KIND]: 90 });
    expect(() => read({ longRunningAlarmMinutes: 'mass-imports=600' })).toThrow(/longRunningAlarmMinutes.*known kinds/s);
    expect(() => read({ longRunningAlarmMinutes: `${MASS_IMPORT_KIND}=0` })).toThrow(/longRunningAlarmMinutes/);
  });

  it('notifyStates: terminal states only; adminBaseUrl: an https URL', () => {
    expect(read({ notifyStates: 'dead,failed' }).observability.notifyStates).toEqual(['dead', 'failed']);
    expect(() => read({ notifyStates: 'dead,running' })).toThrow(/notifyStates.*running/s);
    expect(() => read({ adminBaseUrl: 'http://admin.example.com' })).toThrow(/adminBaseUrl/);
    expect(() => read({ notificationsTopicKmsKeyArn: EXISTING.kmsKeyArn })).toThrow(/notificationsTopic/);
  });
});

describe('tracing', () => {
  it('tracing on: an ADOT collector sidecar exporting to X-Ray, started before the worker', { timeout: SYNTH_TIMEOUT }, () => {
    const template = synth('prodObserved');
    const collector = containers(template).find((container) => container.Name === COLLECTOR_CONTAINER_NAME)!;
    expect(collector).toMatchObject({ Image: DEFAULT_COLLECTOR_IMAGE, Essential: false, HealthCheck: { Command: ['CMD', '/healthcheck'] } });
    const config = String(environmentOf(collector).AOT_CONFIG_CONTENT);
    expect(config).toMatch(/receivers:\n {2}otlp:\n {4}protocols:\n {6}http:\n {8}endpoint: 0\.0\.0\.0:4318/);
    expect(config).toMatch(/exporters: \[awsxray\]/);
    expect(config).toMatch(/extensions: \[health_check\]/);
    const workerContainer = worker(template);
    expect(environmentOf(workerContainer)).toMatchObject({
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://localhost:4318',
      OTEL_SERVICE_NAME: 'bulk-import-worker',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment=prod',
    });
    expect(workerContainer.DependsOn).toEqual([{ ContainerName: COLLECTOR_CONTAINER_NAME, Condition: 'HEALTHY' }]);
    const xray = taskPolicyStatements(template).find((statement) => statement.Sid === 'WriteTracesToXRay')!;
    expect(actionsOf(xray).sort()).toEqual([...XRAY_WRITE_ACTIONS].sort());
    expect(xray.Resource).toBe('*');
  });

  it('tracing off (the default): one container, no OTEL variables, no X-Ray permission', { timeout: SYNTH_TIMEOUT }, () => {
    const template = synth('prodDefaults');
    expect(containers(template).map((container) => container.Name)).toEqual(['worker']);
    expect(Object.keys(environmentOf(worker(template))).filter((name) => name.startsWith('OTEL_'))).toEqual([]);
    expect(taskPolicyStatements(template).flatMap(actionsOf).filter((action) => action.startsWith('xray:'))).toEqual([]);
  });
});

describe('run notifications', () => {
  it('a created topic: KMS-encrypted, TLS only; the worker may publish to it and use its key through SNS only', { timeout: SYNTH_TIMEOUT }, () => {
    const template = synth('prodObserved');
    const topicId = logicalIdOf(template, 'AWS::SNS::Topic', /^WorkerNotificationsTopic/);
    const keyId = logicalIdOf(template, 'AWS::KMS::Key', /^WorkerNotificationsTopicKey/);
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: { 'Fn::GetAtt': [keyId, 'Arn'] } });
    template.hasResourceProperties('AWS::KMS::Key', { EnableKeyRotation: true });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      Topics: [{ Ref: topicId }],
      PolicyDocument: {
        Statement: Match.arrayWith([Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } })]),
      },
    });
    expect(environmentOf(worker(template))).toMatchObject({
      NOTIFICATIONS_TOPIC_ARN: { Ref: topicId },
      NOTIFY_STATES: 'dead,failed,partial,canceled',
      ADMIN_BASE_URL: 'https://admin.example.com/bulk-import',
    });
    const bySid = Object.fromEntries(taskPolicyStatements(template).map((statement) => [statement.Sid, statement]));
    expect(bySid.PublishRunNotifications).toMatchObject({ Action: 'sns:Publish', Resource: { Ref: topicId } });
    expect(bySid.NotificationsTopicKey).toMatchObject({
      Resource: { 'Fn::GetAtt': [keyId, 'Arn'] },
      Condition: { StringEquals: { 'kms:ViaService': { 'Fn::Join': ['', ['sns.', { Ref: 'AWS::Region' }, '.', { Ref: 'AWS::URLSuffix' }]] } } },
    });
    expect(actionsOf(bySid.NotificationsTopicKey!).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    // sns:Publish nowhere else: not on the alarm topic, not on `*`.
    const publishes = iamStatements(template).filter((statement) => actionsOf(statement).includes('sns:Publish') && statement.Effect === 'Allow');
    expect(publishes.map((statement) => statement.Resource)).toEqual([{ Ref: topicId }]);
  });

  it('an imported topic: its ARN and key, default states, nothing created', { timeout: SYNTH_TIMEOUT }, () => {
    const template = synth('stagingStopped');
    expect(resourcesOfType(template, 'AWS::SNS::Topic').map(([id]) => id).filter((id) => id.startsWith('WorkerNotifications'))).toEqual([]);
    const environment = environmentOf(worker(template));
    expect(environment).toMatchObject({ NOTIFICATIONS_TOPIC_ARN: NOTIFICATIONS_TOPIC_ARN, NOTIFY_STATES: 'dead,failed,partial' });
    expect(environment.ADMIN_BASE_URL).toBeUndefined();
    const bySid = Object.fromEntries(taskPolicyStatements(template).map((statement) => [statement.Sid, statement]));
    expect(bySid.PublishRunNotifications!.Resource).toBe(NOTIFICATIONS_TOPIC_ARN);
    expect(bySid.NotificationsTopicKey!.Resource).toBe(EXISTING.kmsKeyArn);
  });

  it('off by default: the outbox turned off (NOTIFY_STATES=none), no topic, no permission', { timeout: SYNTH_TIMEOUT }, () => {
    const template = synth('prodDefaults');
    const environment = environmentOf(worker(template));
    for (const name of ['NOTIFICATIONS_TOPIC_ARN', 'ADMIN_BASE_URL']) expect(environment[name]).toBeUndefined();
    expect(environment.NOTIFY_STATES).toBe('none');
    expect(taskPolicyStatements(template).flatMap(actionsOf).filter((action) => action.startsWith('sns:'))).toEqual([]);
  });
});
