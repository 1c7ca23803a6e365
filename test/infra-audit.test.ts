// The stack's part of the data-consistency audit: a nightly EventBridge rule that starts a task of the worker's task
// definition (enqueue the audit, then work it off, so it runs with the service at 0 tasks), and an alarm on the
// AuditFindings metric the audit publishes. cdk-nag passes with them (test/infra-nag.test.ts).
import { Match } from 'aws-cdk-lib/assertions';
import { afterAll, describe, expect, it } from 'vitest';
import { AUDIT_TASK_COMMAND } from '../infra/bulk-import-worker-props.js';
import { actionsOf, cleanUp, iamStatements, resourcesOfType, synthScenario } from './fixtures/infra/synth.js';

const SYNTH_TIMEOUT = 60_000;
afterAll(cleanUp);

describe('audit in the stack', () => {
  it('runs the audit nightly as a task of the worker task definition, in the private subnets, with the audit command', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodStopped');
    const rules = resourcesOfType(template, 'AWS::Events::Rule');
    expect(rules).toHaveLength(1);
    const [, rule] = rules[0]!;
    expect(rule.Properties.ScheduleExpression).toBe('cron(30 2 * * ? *)');
    const targets = rule.Properties.Targets as Array<Record<string, unknown>>;
    expect(targets).toHaveLength(1);
    const [taskDefinitionId] = resourcesOfType(template, 'AWS::ECS::TaskDefinition').map(([id]) => id);
    expect(targets[0]).toMatchObject({
      EcsParameters: {
        LaunchType: 'FARGATE',
        TaskCount: 1,
        TaskDefinitionArn: { Ref: taskDefinitionId },
        NetworkConfiguration: { AwsVpcConfiguration: { AssignPublicIp: 'DISABLED' } },
      },
    });
    expect(JSON.parse(targets[0]!.Input as string)).toEqual({ containerOverrides: [{ name: 'worker', command: AUDIT_TASK_COMMAND }] });
    expect(AUDIT_TASK_COMMAND.join(' ')).toMatch(/bulk-import\.js audit start && exec .*bulk-import\.js worker --kinds audit --exit-when-idle$/);

    // The rule's role may start only this task definition and pass only the task's own roles.
    const statements = iamStatements(template).filter((statement) => statement.policy.includes('AuditScheduleRole'));
    expect(statements.flatMap(actionsOf).sort()).toEqual(['ecs:RunTask', 'ecs:TagResource', 'iam:PassRole']);
    const passRole = statements.find((statement) => actionsOf(statement).includes('iam:PassRole'))!;
    expect(JSON.stringify(passRole.Resource)).not.toContain('"*"');
    const runTask = statements.find((statement) => actionsOf(statement).includes('ecs:RunTask'))!;
    expect(runTask.Resource).toEqual({ Ref: taskDefinitionId });
  });

  it('alarms when an audit reports findings, and keeps that state until an audit finds none', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('stagingBaseline');
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'AuditFindings',
      Dimensions: [{ Name: 'Kind', Value: 'audit' }],
      Namespace: 'BulkImport/staging',
      Statistic: 'Maximum',
      Period: 3600,
      Threshold: 0,
      ComparisonOperator: 'GreaterThanThreshold',
      TreatMissingData: 'ignore',
      AlarmActions: [Match.anyValue()],
      AlarmDescription: Match.stringLikeRegexp('bulk-import audit runs'),
    });
  });
});
