// The stack's part of the data-consistency audit: a nightly EventBridge rule that starts a task of the worker's task
// definition family, its latest ACTIVE revision (enqueue the audit, then work it off, so it runs with the service at 0
// tasks), and an alarm on the AuditFindings metric the audit publishes. cdk-nag passes with them (test/infra-nag.test.ts).
// The audit lists the stack's bucketPrefix (the only prefix its task role may list), not a fixed imports/.
import { Match, Template } from 'aws-cdk-lib/assertions';
import { afterAll, describe, expect, it } from 'vitest';
import { auditTaskCommand, WorkerPropsError } from '../infra/bulk-import-worker-props.js';
import { addWorkerStack } from '../infra/worker-app.js';
import { actionsOf, cleanUp, iamStatements, newApp, REQUIRED_CONTEXT, resourcesOfType, SCENARIOS, synthScenario } from './fixtures/infra/synth.js';
import { taskDefinitionNamed } from './support/scheduled-task-arn.js';

const SYNTH_TIMEOUT = 60_000;
afterAll(cleanUp);

describe('audit in the stack', () => {
  it('runs the audit nightly as a task of the latest revision of the worker family, in the private subnets, with the audit command', { timeout: SYNTH_TIMEOUT }, () => {
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
        NetworkConfiguration: { AwsVpcConfiguration: { AssignPublicIp: 'DISABLED' } },
      },
    });
    // The family, not this stack's revision: each night runs the latest ACTIVE revision, the image scripts/deploy.sh
    // deployed since the last cdk deploy.
    expect(taskDefinitionNamed((targets[0]!.EcsParameters as Record<string, unknown>).TaskDefinitionArn)).toBe('bulk-import-worker-prod');
    expect(JSON.parse(targets[0]!.Input as string)).toEqual({ containerOverrides: [{ name: 'worker', command: auditTaskCommand('imports/') }] });
    expect(auditTaskCommand('imports/').join(' ')).toMatch(
      /bulk-import\.js audit start --documents-prefix 'imports\/' && exec .*bulk-import\.js worker --kinds audit --exit-when-idle$/,
    );

    // The rule's role may start only revisions of the worker family, in the worker cluster, and pass only the task's
    // own roles to ECS tasks.
    const statements = iamStatements(template).filter((statement) => statement.policy.includes('AuditScheduleRole'));
    expect(statements.flatMap(actionsOf).sort()).toEqual(['ecs:RunTask', 'ecs:TagResource', 'iam:PassRole']);
    const passRole = statements.find((statement) => actionsOf(statement).includes('iam:PassRole'))!;
    expect(JSON.stringify(passRole.Resource)).not.toContain('"*"');
    expect(passRole.Condition).toEqual({ StringLike: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' } });
    const runTask = statements.find((statement) => actionsOf(statement).includes('ecs:RunTask'))!;
    expect(taskDefinitionNamed(runTask.Resource)).toBe('bulk-import-worker-prod:*');
    expect(JSON.stringify(runTask.Resource)).not.toContain(taskDefinitionId);
    expect(runTask.Condition).toEqual({ ArnEquals: { 'ecs:cluster': { 'Fn::GetAtt': [expect.stringMatching(/^WorkerCluster/), 'Arn'] } } });
  });

  it("audits the documents under the stack's bucketPrefix, the prefix its task role may list", { timeout: SYNTH_TIMEOUT }, () => {
    const template = Template.fromStack(addWorkerStack(newApp({ ...REQUIRED_CONTEXT, ...SCENARIOS.prodStopped, bucketPrefix: 'docs/' })).stack);
    template.hasResourceProperties('AWS::Events::Rule', {
      Targets: [
        Match.objectLike({
          Input: Match.serializedJson({
            containerOverrides: [
              { name: 'worker', command: ['sh', '-c', Match.stringLikeRegexp("bulk-import\\.js audit start --documents-prefix 'docs/' && exec ")] },
            ],
          }),
        }),
      ],
    });
    const listing = iamStatements(template).find((statement) => statement.Sid === 'ListImportPrefix');
    expect(listing?.Condition).toEqual({ StringLike: { 's3:prefix': ['docs/*'] } });
  });

  it('quotes the prefix for the shell, and refuses at synth one the audit would refuse every night', () => {
    expect(auditTaskCommand("it's/")[2]).toContain(`audit start --documents-prefix 'it'\\''s/' && `);
    expect(() => auditTaskCommand('two words/')).toThrow(WorkerPropsError);
    expect(() => auditTaskCommand(`${'a'.repeat(200)}/`)).toThrow(/cannot be audited: the documents prefix must be at most 200 characters/);
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
