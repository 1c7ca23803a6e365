// The optional admin API service (`adminApi`): `bulk-import serve` from the worker's image behind an internal HTTPS
// load balancer that admits only the named callers, with a health check on /readyz, its own log stream prefix and a
// task role that may only presign uploads under imports/. Off by default: then none of it exists. Each configuration
// is synthesized once and shared.
import { Validations } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { AwsSolutionsChecks } from 'cdk-nag';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_API_COMMAND } from '../infra/admin-api.js';
import { readWorkerSettings, SettingsError } from '../infra/settings.js';
import { addWorkerStack } from '../infra/worker-app.js';
import {
  actionsOf,
  cleanUp,
  EXISTING,
  iamStatements,
  newApp,
  REQUIRED_CONTEXT,
  resourcesOfType,
  singleResource,
  validationFindings,
} from './fixtures/infra/synth.js';

const SYNTH_TIMEOUT = 120_000;
const CERTIFICATE = 'arn:aws:acm:eu-west-1:123456789012:certificate/0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9';
const CALLER_GROUP = 'sg-0c1c1c1c1c1c1c1c1';
const CALLER_CIDR = '10.8.0.0/16';
const ON = {
  ...REQUIRED_CONTEXT,
  environment: 'prod',
  databaseSecurityGroupId: EXISTING.databaseSecurityGroupId,
  adminApi: 'true',
  adminApiCertificateArn: CERTIFICATE,
  adminApiAllowedSecurityGroupIds: CALLER_GROUP,
  adminApiAllowedCidrs: CALLER_CIDR,
};

let on: { template: Template; app: ReturnType<typeof newApp>; outdir: string };
let off: Template;

beforeAll(() => {
  const app = newApp(ON);
  const { stack } = addWorkerStack(app);
  on = { template: Template.fromStack(stack), app, outdir: app.outdir };
  const offApp = newApp({ ...REQUIRED_CONTEXT, environment: 'prod', databaseSecurityGroupId: EXISTING.databaseSecurityGroupId });
  off = Template.fromStack(addWorkerStack(offApp).stack);
}, SYNTH_TIMEOUT);
afterAll(cleanUp);

/** Every ingress rule onto the security group with this logical id: inline ones and separate resources. */
function ingressOnto(template: Template, groupId: string): Array<Record<string, unknown>> {
  const group = template.toJSON().Resources[groupId] as { Properties: { SecurityGroupIngress?: Array<Record<string, unknown>> } };
  const separate = resourcesOfType(template, 'AWS::EC2::SecurityGroupIngress')
    .filter(([, resource]) => JSON.stringify(resource.Properties.GroupId).includes(`"${groupId}"`))
    .map(([, resource]) => resource.Properties);
  return [...(group.Properties.SecurityGroupIngress ?? []), ...separate];
}

function logicalId(template: Template, type: string, pattern: RegExp): string {
  const ids = resourcesOfType(template, type).map(([id]) => id).filter((id) => pattern.test(id));
  if (ids.length !== 1) throw new Error(`expected one ${type} matching ${pattern}, found ${ids.join(', ') || 'none'}`);
  return ids[0]!;
}

describe('admin API on', () => {
  it('serves HTTPS only, with the given certificate, on an internal load balancer', () => {
    const listeners = resourcesOfType(on.template, 'AWS::ElasticLoadBalancingV2::Listener').map(([, resource]) => resource.Properties);
    expect(listeners).toHaveLength(1);
    expect(listeners[0]).toMatchObject({ Protocol: 'HTTPS', Port: 443, Certificates: [{ CertificateArn: CERTIFICATE }] });
    expect(listeners[0]!.SslPolicy).toMatch(/^ELBSecurityPolicy-TLS13/);
    const loadBalancer = singleResource(on.template, 'AWS::ElasticLoadBalancingV2::LoadBalancer');
    expect(loadBalancer.Properties.Scheme).toBe('internal');
  });

  it('admits only the given security group and CIDR, on 443; the tasks admit only the load balancer', () => {
    const balancerGroup = logicalId(on.template, 'AWS::EC2::SecurityGroup', /AdminApiLoadBalancerSecurityGroup/);
    const rules = ingressOnto(on.template, balancerGroup);
    expect(rules).toHaveLength(2);
    for (const rule of rules) expect([rule.FromPort, rule.ToPort, rule.IpProtocol]).toEqual([443, 443, 'tcp']);
    expect(rules.map((rule) => rule.CidrIp ?? rule.SourceSecurityGroupId).sort()).toEqual([CALLER_CIDR, CALLER_GROUP].sort());
    const everyIngress = resourcesOfType(on.template, 'AWS::EC2::SecurityGroup').flatMap(([id]) => ingressOnto(on.template, id));
    expect(everyIngress.filter((rule) => rule.CidrIp === '0.0.0.0/0')).toEqual([]);

    const taskGroup = logicalId(on.template, 'AWS::EC2::SecurityGroup', /AdminApiSecurityGroup(?!.*LoadBalancer)/);
    const taskRules = ingressOnto(on.template, taskGroup);
    expect(taskRules).toHaveLength(1);
    expect(taskRules[0]).toMatchObject({ FromPort: 8080, ToPort: 8080, SourceSecurityGroupId: { 'Fn::GetAtt': [balancerGroup, 'GroupId'] } });
  });

  it('checks target health on /readyz of the API port', () => {
    const targetGroup = singleResource(on.template, 'AWS::ElasticLoadBalancingV2::TargetGroup');
    expect(targetGroup.Properties).toMatchObject({ HealthCheckPath: '/readyz', Port: 8080, Protocol: 'HTTP', TargetType: 'ip', Matcher: { HttpCode: '200' } });
  });

  it('runs bulk-import serve from the worker image, with its own log stream prefix', () => {
    const definitions = resourcesOfType(on.template, 'AWS::ECS::TaskDefinition').map(([, resource]) => resource.Properties);
    const api = definitions.flatMap((definition) => definition.ContainerDefinitions as Array<Record<string, unknown>>).find((c) => c.Name === 'api')!;
    const worker = definitions.flatMap((definition) => definition.ContainerDefinitions as Array<Record<string, unknown>>).find((c) => c.Name === 'worker')!;
    // X-Forwarded-For is believed for the one hop of the load balancer.
    expect(api.Command).toEqual(ADMIN_API_COMMAND);
    expect((api.Command as string[]).slice(-2)).toEqual(['--trust-proxy', '1']);
    expect(api.Command).toContain('serve');
    expect(api.Image).toEqual(worker.Image);
    expect(api.User).toBe('1000:1000');
    expect(api.ReadonlyRootFilesystem).toBe(true);
    expect((api.LogConfiguration as { Options: Record<string, unknown> }).Options['awslogs-stream-prefix']).toBe('bulk-import-api');
    expect(api.Secrets).toEqual(worker.Secrets);
    expect(resourcesOfType(on.template, 'AWS::ECS::Service')).toHaveLength(2);
  });

  it("limits the API task role to presigning uploads under imports/ of the bucket and reading their sizes", () => {
    const taskRole = logicalId(on.template, 'AWS::IAM::Role', /AdminApiTaskDefinitionTaskRole/);
    const policies = resourcesOfType(on.template, 'AWS::IAM::Policy').filter(([, policy]) =>
      JSON.stringify(policy.Properties.Roles).includes(`"${taskRole}"`),
    );
    expect(policies).toHaveLength(1);
    const statements = iamStatements(on.template).filter((statement) => statement.policy === policies[0]![0]);
    expect(statements.flatMap(actionsOf)).toEqual(['s3:PutObject', 's3:GetObject']);
    const uploads = { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::backend-documents/imports/*']] };
    expect(statements.map((statement) => statement.Resource)).toEqual([uploads, uploads]);
  });

  it('passes cdk-nag with no unacknowledged finding, each acknowledgement with its reason', () => {
    expect(validationFindings(on.outdir)).toEqual([]);
    const report = new AwsSolutionsChecks().validateScope(on.app);
    expect(report.violations.map((violation) => `${violation.severity} ${violation.ruleName}`)).toEqual([]);
    // The API's own acknowledgements each cover a finding the rules really raise there, and say why.
    const raw = new AwsSolutionsChecks();
    (raw as unknown as { isAcknowledged: () => boolean }).isAcknowledged = () => false;
    const findings = raw
      .validateScope(on.app)
      .violations.flatMap((violation) => violation.violatingResources.map((resource) => ({ rule: violation.ruleName, path: resource.constructPath ?? '' })));
    const acknowledged = on.app.node
      .findAll()
      .filter((construct) => construct.node.path.includes('/AdminApi'))
      .flatMap((construct) =>
        construct.node.metadata
          .filter((entry) => entry.type === Validations.ACKNOWLEDGED_RULES_METADATA_KEY)
          .flatMap((entry) => Object.entries(entry.data as Record<string, string>))
          .filter(([id]) => /^annotation::AwsSolutions-/i.test(id))
          .map(([id, reason]) => ({ id: id.replace(/^annotation::/i, ''), reason, path: construct.node.path })),
      );
    expect(acknowledged.map((ack) => ack.id.replace(/\[.*$/, '')).sort()).toEqual([
      'AwsSolutions-ECS2',
      'AwsSolutions-ELB2',
      'AwsSolutions-IAM5',
      'AwsSolutions-IAM5',
    ]);
    for (const ack of acknowledged) {
      expect(findings.some((finding) => finding.rule === ack.id && finding.path.startsWith(`${ack.path}/`)), `${ack.id} on ${ack.path}`).toBe(true);
      expect(ack.reason.length).toBeGreaterThanOrEqual(80);
    }
  });
});

describe('admin API off (the default)', () => {
  it('creates no load balancer, listener, second service or task definition', () => {
    expect(resourcesOfType(off, 'AWS::ElasticLoadBalancingV2::LoadBalancer')).toEqual([]);
    expect(resourcesOfType(off, 'AWS::ElasticLoadBalancingV2::Listener')).toEqual([]);
    expect(resourcesOfType(off, 'AWS::ECS::Service')).toHaveLength(1);
    expect(resourcesOfType(off, 'AWS::ECS::TaskDefinition')).toHaveLength(1);
    expect(JSON.stringify(off.toJSON()).includes('bulk-import-api')).toBe(false);
  });
});

describe('admin API settings', () => {
  const settingsError = (context: Record<string, unknown>): SettingsError => {
    try {
      readWorkerSettings((key) => context[key]);
    } catch (error) {
      if (error instanceof SettingsError) return error;
      throw error;
    }
    throw new Error('expected a SettingsError');
  };

  it('requires a certificate and named callers, and refuses 0.0.0.0/0', () => {
    expect(settingsError({ ...ON, adminApiCertificateArn: undefined }).message).toMatch(/adminApiCertificateArn is required with adminApi=true/);
    expect(settingsError({ ...ON, adminApiAllowedSecurityGroupIds: undefined, adminApiAllowedCidrs: undefined }).key).toBe(
      'adminApiAllowedSecurityGroupIds',
    );
    expect(settingsError({ ...ON, adminApiAllowedCidrs: '10.0.0.0/8,0.0.0.0/0' }).message).toMatch(/must not admit everyone \(0\.0\.0\.0\/0\)/);
    expect(settingsError({ ...ON, adminApiCertificateArn: 'my-cert' }).key).toBe('adminApiCertificateArn');
  });

  it('reads nothing of it while adminApi is off', () => {
    const settings = readWorkerSettings((key) => ({ ...ON, adminApi: 'false' })[key as keyof typeof ON]);
    expect(settings.adminApi).toBeUndefined();
  });
});

describe('imageDigest', () => {
  const DIGEST = `sha256:${'ab'.repeat(32)}`;

  it('names the image by digest in the worker and the admin API task definitions, not by the mutable tag', { timeout: SYNTH_TIMEOUT }, () => {
    const template = Template.fromStack(addWorkerStack(newApp({ ...ON, imageDigest: DIGEST })).stack);
    const containers = resourcesOfType(template, 'AWS::ECS::TaskDefinition')
      .flatMap(([, resource]) => resource.Properties.ContainerDefinitions as Array<{ Name: string; Image: unknown }>)
      .filter((container) => container.Name === 'worker' || container.Name === 'api');
    expect(containers.map((container) => container.Name).sort()).toEqual(['api', 'worker']);
    for (const container of containers) {
      expect(JSON.stringify(container.Image)).toContain(`/backend@${DIGEST}"`);
      expect(JSON.stringify(container.Image)).not.toContain('backend:prod');
    }
  });

  it('refuses a digest that is not sha256:<64 hex digits>', () => {
    expect(() => readWorkerSettings((key) => ({ ...ON, imageDigest: 'sha256:abc' })[key as keyof typeof ON])).toThrow(
      /imageDigest="sha256:abc" is invalid: expected an image digest sha256:<64 hex digits>/,
    );
  });
});
