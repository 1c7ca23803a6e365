// The scheduled tasks of the worker's task definition (the nightly audit, the queue gauges) name its FAMILY, not the
// revision this stack registered: ECS runs the family's latest ACTIVE revision at each start (RunTask with a task
// definition ARN without revision). In the shared-image flow only scripts/deploy.sh moves the worker to a new image,
// by registering a revision that differs only in the image; pinned to the stack's revision the scheduled tasks would
// keep the image of the last `cdk deploy` (and, after a migration the old image does not know, fail every night).
// deploy.sh deregisters the revisions of a deploy it rolls back, so the latest ACTIVE revision is the one the service
// runs. The CDK targets always name the revision they are given, so the target's TaskDefinitionArn is overridden
// and the role's grants are written here: CDK's own would name that one revision.
import { Stack } from 'aws-cdk-lib';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import { acknowledgeWildcardResource } from './nag.js';

/** `arn:…:task-definition/<family>`, no revision: what a scheduled task names. */
export function taskFamilyArn(taskDefinition: ecs.TaskDefinition): string {
  return Stack.of(taskDefinition).formatArn({ service: 'ecs', resource: 'task-definition', resourceName: taskDefinition.family });
}

/**
 * The role a scheduled task starts with, handed to the CDK target (which then adds nothing), after the grants to
 * start the family's latest revision in `cluster` and pass the task's two roles to ECS tasks. ECS authorizes a RunTask
 * of a family against the ARN of the revision it resolves to (enforced since October 2024), hence `<family>:*`,
 * limited to this cluster by `ecs:cluster`.
 */
export function scheduledTaskRole(role: iam.Role, taskDefinition: ecs.TaskDefinition, cluster: ecs.ICluster): iam.IRole {
  const revisions = `${taskFamilyArn(taskDefinition)}:*`;
  role.addToPrincipalPolicy(
    new iam.PolicyStatement({
      actions: ['ecs:RunTask'],
      resources: [revisions],
      conditions: { ArnEquals: { 'ecs:cluster': cluster.clusterArn } },
    }),
  );
  role.addToPrincipalPolicy(
    new iam.PolicyStatement({
      actions: ['iam:PassRole'],
      resources: [taskDefinition.taskRole.roleArn, taskDefinition.obtainExecutionRole().roleArn],
      conditions: { StringLike: { 'iam:PassedToService': 'ecs-tasks.amazonaws.com' } },
    }),
  );
  acknowledgeWildcardResource(
    role.node.findChild('DefaultPolicy'),
    revisions,
    'The scheduled task runs the latest ACTIVE revision of the worker family (scripts/deploy.sh registers new ones ' +
      'outside the stack); ECS authorizes it against that revision, so the grant is every revision of this one ' +
      'family, and only in the worker cluster (ecs:cluster).',
  );
  return role.withoutPolicyUpdates();
}
