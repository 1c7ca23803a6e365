// Helpers to acknowledge cdk-nag findings precisely. cdk-nag 3 names a wildcard-resource finding after the resolved
// resource, with intrinsics flattened (`{"Ref":"X"}` → `<X>`, `Fn::GetAtt` → `<X.Attr>`, `Fn::Join` joined), so an
// acknowledgement must spell the resource the same way; a finding that does not match stays an error.
import { Stack, Validations } from 'aws-cdk-lib';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import type { IConstruct } from 'constructs';

/** The resource as cdk-nag spells it in `AwsSolutions-IAM5[Resource::…]`. */
export function nagResourceName(scope: IConstruct, resource: string): string {
  return flatten(Stack.of(scope).resolve(resource));
}

/** Acknowledges AwsSolutions-IAM5 for exactly this wildcard resource on `policy`, with the reason. */
export function acknowledgeWildcardResource(policy: IConstruct, resource: string, reason: string): void {
  Validations.of(policy).acknowledge({ id: `AwsSolutions-IAM5[Resource::${nagResourceName(policy, resource)}]`, reason });
}

/** Acknowledges the execution role's `*` for ecr:GetAuthorizationToken, which CDK adds for every image pull. */
export function acknowledgeImagePullAuthorization(taskDefinition: ecs.TaskDefinition): void {
  const executionPolicy = taskDefinition.executionRole?.node.tryFindChild('DefaultPolicy');
  if (!executionPolicy) return;
  acknowledgeWildcardResource(
    executionPolicy,
    '*',
    'ecr:GetAuthorizationToken (added by CDK for the image pull) has no resource-level permissions; every ' +
      'other execution-role action is on the one repository, log group and secret.',
  );
}

function flatten(node: unknown): string {
  if (node === undefined) return '';
  if (typeof node === 'string') return node.replace(/\$\{/g, '<').replace(/\}/g, '>');
  if (typeof node === 'object' && node !== null) {
    const record = node as Record<string, unknown>;
    if (Array.isArray(record['Fn::Join'])) {
      const [delimiter, items] = record['Fn::Join'] as [string, unknown[]];
      return items.map(flatten).join(delimiter);
    }
    if ('Fn::Sub' in record) return flatten(record['Fn::Sub']);
    if (Array.isArray(record['Fn::GetAtt'])) {
      const [resource, attribute] = record['Fn::GetAtt'] as [unknown, unknown];
      return `<${flatten(resource)}.${flatten(attribute)}>`;
    }
    if ('Fn::ImportValue' in record) return flatten(record['Fn::ImportValue']);
    if ('Ref' in record) return `<${flatten(record.Ref)}>`;
  }
  return JSON.stringify(node);
}
