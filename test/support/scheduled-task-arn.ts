// What a scheduled task's TaskDefinitionArn, or its role's RunTask grant, names (test/infra-audit.test.ts,
// test/infra-observability.test.ts): `<family>` or `<family>:*` of `arn:<partition>:ecs:<region>:<account>:
// task-definition/…` as CDK renders it in an environment-agnostic stack; undefined for anything else (a revision's Ref).
export function taskDefinitionNamed(value: unknown): string | undefined {
  const join = (value as { 'Fn::Join'?: [string, unknown[]] } | undefined)?.['Fn::Join'];
  if (!join || join[0] !== '') return undefined;
  const parts = join[1];
  const prefix = ['arn:', { Ref: 'AWS::Partition' }, ':ecs:', { Ref: 'AWS::Region' }, ':', { Ref: 'AWS::AccountId' }];
  const last = parts.at(-1);
  if (JSON.stringify(parts.slice(0, -1)) !== JSON.stringify(prefix) || typeof last !== 'string') return undefined;
  return /^:task-definition\/(.+)$/.exec(last)?.[1];
}
