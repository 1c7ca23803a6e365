// Every runtime setting reachable from the stack, and the network and capacity options of issue 17: worker variables
// as typed settings (checked by the worker's own reader), the per-environment blocks of cdk.json, every variable
// worker/config.ts reads either set by the stack or deliberately left at its default, prod refusing an open database
// egress, VPC endpoints with HTTPS narrowed to them, and Fargate Spot with an on-demand base.
import { Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BulkImportWorker, type BulkImportWorkerProps, WorkerPropsError } from '../infra/bulk-import-worker.js';
import { INTERFACE_ENDPOINTS } from '../infra/network.js';
import { readWorkerSettings, SettingsError } from '../infra/settings.js';
import { VARIABLES_LEFT_AT_DEFAULT, WORKER_SETTING_KEYS, WORKER_SETTINGS, type WorkerSettings } from '../infra/worker-environment.js';
import { addWorkerStack } from '../infra/worker-app.js';
import { loadConfig } from '../worker/config.js';
import { cdkJsonContext, cleanUp, logicalIdOf, newApp, REQUIRED_CONTEXT, resourcesOfType, singleResource, validationFindings } from './fixtures/infra/synth.js';

const SYNTH_TIMEOUT = 120_000;
afterAll(cleanUp);

/** A value for every worker setting, each different from the worker's default, all valid together. */
const EVERY_WORKER_SETTING: Required<WorkerSettings> = {
  databasePoolSize: 12,
  databaseStartupTimeoutMs: 90_000,
  s3StallTimeoutMs: 60_000,
  workerKindConcurrency: { 'csv-import': 2, 'csv-finalize': 2 },
  workerLeaseMs: 45_000,
  workerPollIntervalMs: 2_000,
  workerPrefetchWindowMs: 500,
  workerPrefetchMax: 200,
  retentionDays: 60,
  retryBackoffBaseMs: 2_000,
  retryBackoffMaxMs: 600_000,
  jobMaxAttempts: 7,
  dependencyOutageBudgetMs: 7_200_000,
  dependencyOutageBackoffMaxMs: 300_000,
  massImportMaxFiles: 20_000,
  massImportMaxTotalBytes: 20 * 1024 ** 3,
  massImportMaxFileBytes: 2 * 1024 ** 3,
  massImportHardCapFiles: 500_000,
  massImportHardCapTotalBytes: 512 * 1024 ** 3,
  massImportHardCapFileBytes: 20 * 1024 ** 3,
  massImportConcurrency: 16,
  massImportMultipartThresholdBytes: 16 * 1024 ** 2,
  massImportBufferLimitBytes: 4 * 1024 ** 2,
  massImportRequestTimeoutMs: 60_000,
  csvFinalizeChunkSize: 1_000,
  csvFinalizeConnections: 4,
  fairClaim: false,
  tenantWeights: { acme: 3, beta: 2 },
  tenantKindConcurrency: { 'mass-import': 2 },
  admissionTenantQueuedRuns: 5_000,
  admissionTenantQueuedBytes: 1024 ** 4,
  admissionTenantOldestQueuedMs: 3_600_000,
  admissionTotalQueuedRuns: 50_000,
  admissionTotalQueuedBytes: 10 * 1024 ** 4,
  admissionTotalOldestQueuedMs: 7_200_000,
  admissionKindTenantQueuedRuns: { 'csv-import': 100 },
  admissionKindTotalQueuedRuns: { 'csv-import': 1_000 },
};

function construct(overrides: Partial<BulkImportWorkerProps>): BulkImportWorker {
  const stack = new Stack(newApp({}), 'Check');
  return new BulkImportWorker(stack, 'Worker', {
    environmentName: 'staging',
    repository: ecr.Repository.fromRepositoryName(stack, 'Repository', 'backend'),
    imageTag: 'staging',
    databaseSecret: secretsmanager.Secret.fromSecretNameV2(stack, 'Secret', 'db'),
    bucket: s3.Bucket.fromBucketName(stack, 'Bucket', 'documents'),
    alarmEmail: 'oncall@example.com',
    ...overrides,
  });
}

/** The worker container's variables and secrets, by name, as the task definition renders them. */
function containerVariables(worker: BulkImportWorker): { environment: Record<string, unknown>; secrets: string[] } {
  const taskDefinition = worker.taskDefinition.node.defaultChild as { containerDefinitions?: unknown };
  const containers = Stack.of(worker).resolve(taskDefinition.containerDefinitions) as Array<{
    name: string;
    environment?: Array<{ name: string; value: unknown }>;
    secrets?: Array<{ name: string }>;
  }>;
  const container = containers.find((candidate) => candidate.name === 'worker')!;
  return {
    environment: Object.fromEntries((container.environment ?? []).map((entry) => [entry.name, entry.value])),
    secrets: (container.secrets ?? []).map((secret) => secret.name),
  };
}

function refusal(overrides: Partial<BulkImportWorkerProps>): string {
  try {
    construct(overrides);
  } catch (error) {
    if (error instanceof WorkerPropsError) return error.message;
    throw error;
  }
  throw new Error('expected a WorkerPropsError');
}

function settingsError(context: Record<string, unknown>): SettingsError {
  try {
    readWorkerSettings((key) => context[key]);
  } catch (error) {
    if (error instanceof SettingsError) return error;
    throw error;
  }
  throw new Error('expected a SettingsError');
}

describe('every variable worker/config.ts reads', () => {
  it('is set by the stack or listed, with a reason, as deliberately left at its default', () => {
    const read = new Set<string>();
    loadConfig(
      new Proxy({} as Record<string, string | undefined>, {
        get: (_target, name) => {
          if (typeof name === 'string') read.add(name);
          return undefined;
        },
      }),
    );
    expect(read.size).toBeGreaterThan(40);
    // The fullest configuration: every worker setting, IAM database authentication, run notifications.
    const worker = construct({
      workerSettings: EVERY_WORKER_SETTING,
      databaseIamAuth: { resourceId: 'db-ABCDEFGHIJKLMNOP', user: 'bulk_import' },
      ...({ notificationsTopic: { kind: 'create' }, adminBaseUrl: 'https://admin.example.com' } as Partial<BulkImportWorkerProps>),
    });
    const { environment, secrets } = containerVariables(worker);
    const setByStack = new Set([...Object.keys(environment), ...secrets]);
    const leftAtDefault = new Set(Object.keys(VARIABLES_LEFT_AT_DEFAULT));
    expect([...read].filter((name) => !setByStack.has(name) && !leftAtDefault.has(name)).sort()).toEqual([]);
    expect([...leftAtDefault].filter((name) => setByStack.has(name))).toEqual([]);
    expect([...leftAtDefault].filter((name) => !read.has(name))).toEqual([]);
    for (const reason of Object.values(VARIABLES_LEFT_AT_DEFAULT)) expect(reason.length).toBeGreaterThan(20);
    // Each worker setting is the camelCase of its variable: one name from cdk.json to the container.
    for (const key of WORKER_SETTING_KEYS) {
      const { variable } = WORKER_SETTINGS[key];
      expect(variable.toLowerCase().replace(/_([a-z])/g, (_match, letter: string) => letter.toUpperCase())).toBe(key);
      expect(read.has(variable)).toBe(true);
    }
  });
});

describe('worker settings', () => {
  it('reach the container as the variables the worker reads, unset ones left out', () => {
    const { environment } = containerVariables(
      construct({ workerSettings: { jobMaxAttempts: 7, retentionDays: 60, workerKindConcurrency: { 'csv-import': 2, 'csv-finalize': 2 }, massImportHardCapFiles: 500_000, csvFinalizeConnections: 4 } }),
    );
    expect(environment).toMatchObject({
      JOB_MAX_ATTEMPTS: '7',
      RETENTION_DAYS: '60',
      WORKER_KIND_CONCURRENCY: 'csv-import=2,csv-finalize=2',
      MASS_IMPORT_HARD_CAP_FILES: '500000',
      CSV_FINALIZE_CONNECTIONS: '4',
    });
    expect(environment).not.toHaveProperty('RETRY_BACKOFF_BASE_MS');
    const defaults = containerVariables(construct({})).environment;
    expect(Object.keys(defaults).filter((name) => Object.values(WORKER_SETTINGS).some((setting) => setting.variable === name))).toEqual([]);
  });

  it("are refused with the worker's own range, naming the setting, before anything deploys", () => {
    expect(refusal({ workerSettings: { jobMaxAttempts: 0 } })).toMatch(/workerSettings\.jobMaxAttempts: JOB_MAX_ATTEMPTS="0" is invalid: expected a whole number from 1 to 100/);
    expect(refusal({ workerSettings: { csvFinalizeConnections: 64 } })).toMatch(/csvFinalizeConnections: CSV_FINALIZE_CONNECTIONS="64"/);
    expect(refusal({ workerSettings: { retryBackoffBaseMs: 5_000, retryBackoffMaxMs: 1_000 } })).toMatch(/RETRY_BACKOFF_MAX_MS \(1000\) must be at least/);
    expect(refusal({ workerSettings: { workerKindConcurrency: { 'csv-validate': 2 } } })).toMatch(/workerKindConcurrency names unknown job kinds csv-validate \(known: .*csv-import/);
  });

  it("give the health check a start period that covers the worker's database start-up wait, and refuse one it cannot", { timeout: SYNTH_TIMEOUT }, () => {
    // The heartbeat file the check reads exists only once the database answered: the start period covers the whole
    // wait (DATABASE_STARTUP_TIMEOUT_MS) + 30 s, at least 60 s.
    type TaskDefinition = { Properties: { ContainerDefinitions: Array<{ Name: string; HealthCheck: { StartPeriod: number } }> } };
    const workerHealthCheck = (worker: BulkImportWorker) =>
      Object.values(Template.fromStack(Stack.of(worker)).findResources('AWS::ECS::TaskDefinition') as Record<string, TaskDefinition>)
        .flatMap((resource) => resource.Properties.ContainerDefinitions)
        .find((container) => container.Name === 'worker')!.HealthCheck;
    expect(workerHealthCheck(construct({}))).toMatchObject({ StartPeriod: 90, Interval: 30, Retries: 3 });
    expect(workerHealthCheck(construct({ workerSettings: { databaseStartupTimeoutMs: 10_000 } })).StartPeriod).toBe(60);
    expect(workerHealthCheck(construct({ workerSettings: { databaseStartupTimeoutMs: 200_500 } })).StartPeriod).toBe(231);
    expect(workerHealthCheck(construct({ workerSettings: { databaseStartupTimeoutMs: 270_000 } })).StartPeriod).toBe(300);
    // The worker takes up to 600 s; ECS's start period at most 300 s.
    expect(refusal({ workerSettings: { databaseStartupTimeoutMs: 600_000 } })).toMatch(
      /workerSettings\.databaseStartupTimeoutMs: 600000 ms \(DATABASE_STARTUP_TIMEOUT_MS\) is longer than the container health check can cover: .*start period would have to be 630 s .*ECS allows at most 300 s.*Use at most 270000 ms/,
    );
    expect(refusal({ workerSettings: { databaseStartupTimeoutMs: 270_001 } })).toMatch(/be 301 s .*at most 300 s/);
  });

  it('are read from -c strings and from cdk.json objects alike', () => {
    const settings = readWorkerSettings(
      (key) => ({ ...REQUIRED_CONTEXT, jobMaxAttempts: '7', workerKindConcurrency: 'csv-import=2, csv-finalize=3', massImportHardCapTotalBytes: 1099511627776 })[key],
    );
    expect(settings.workerSettings).toEqual({ jobMaxAttempts: 7, workerKindConcurrency: { 'csv-import': 2, 'csv-finalize': 3 }, massImportHardCapTotalBytes: 1099511627776 });
    expect(settingsError({ ...REQUIRED_CONTEXT, workerKindConcurrency: 'csv-import' }).message).toMatch(/name=number pairs/);
    expect(readWorkerSettings((key) => ({ ...REQUIRED_CONTEXT, fairClaim: 'false', tenantWeights: 'acme=3,beta.eu=2' })[key]).workerSettings).toEqual({
      fairClaim: false,
      tenantWeights: { acme: 3, 'beta.eu': 2 },
    });
    expect(settingsError({ ...REQUIRED_CONTEXT, retentionDays: 'ten' }).key).toBe('retentionDays');
  });
});

describe("cdk.json's per-environment blocks", () => {
  const context = cdkJsonContext({ environments: true });
  const settingsOf = (extra: Record<string, unknown>) =>
    readWorkerSettings((key) => ({ ...context, ...REQUIRED_CONTEXT, ...extra })[key as keyof typeof extra]);

  it('keep prod and staging values without -c, and -c still wins for one deploy', () => {
    const prod = settingsOf({ environment: 'prod' });
    expect(prod.workerSettings).toMatchObject({ workerKindConcurrency: { 'csv-import': 2, 'csv-finalize': 2 }, jobMaxAttempts: 5, retentionDays: 30 });
    expect(prod.logRetentionDays).toBe(365);
    const staging = settingsOf({ environment: 'staging' });
    expect(staging.workerSettings).toMatchObject({ jobMaxAttempts: 3, retentionDays: 14, massImportHardCapFiles: 100_000 });
    expect(staging.logLevel).toBe('debug');
    expect(settingsOf({ environment: 'prod', retentionDays: '45' }).workerSettings.retentionDays).toBe(45);
    expect(settingsOf({ environment: 'dev' }).workerSettings).toEqual({});
  });

  it('hold values the worker accepts', () => {
    for (const environment of ['prod', 'staging']) {
      const settings = settingsOf({ environment });
      expect(() => construct({ workerSettings: settings.workerSettings })).not.toThrow();
    }
  });
});

describe('database egress in prod', () => {
  const prod: Partial<BulkImportWorkerProps> = { environmentName: 'prod' };

  it('requires the database security group or CIDR, and refuses 0.0.0.0/0', () => {
    expect(refusal(prod)).toMatch(/prod needs databaseSecurityGroupId .* or databaseCidr .*not 0\.0\.0\.0\/0/);
    expect(refusal({ ...prod, databaseCidr: '0.0.0.0/0' })).toMatch(/databaseCidr 0\.0\.0\.0\/0 would let the prod worker open Postgres connections to the whole internet/);
    expect(refusal({ databaseCidr: '10.0.0.0' })).toMatch(/databaseCidr must be an IPv4 CIDR block/);
  });

  it('opens Postgres to exactly the CIDR given; elsewhere the VPC CIDR stays the fallback', () => {
    const egress = (worker: BulkImportWorker) =>
      (Stack.of(worker).resolve((worker.securityGroup.node.defaultChild as ec2.CfnSecurityGroup).securityGroupEgress) as Array<Record<string, unknown>>).filter(
        (rule) => rule.fromPort === 5432,
      );
    expect(egress(construct({ ...prod, databaseCidr: '10.30.0.0/24' })).map((rule) => rule.cidrIp)).toEqual(['10.30.0.0/24']);
    expect(egress(construct({})).map((rule) => rule.cidrIp)).toEqual([{ 'Fn::GetAtt': [expect.stringMatching(/^WorkerVpc/), 'CidrBlock'] }]);
  });
});

describe('VPC endpoints and Fargate Spot', () => {
  const PREFIX_LIST = 'pl-6da54004';
  let template: Template;
  let outdir: string;

  beforeAll(() => {
    const app = newApp({ ...REQUIRED_CONTEXT, environment: 'prod', vpcEndpoints: 'true', s3PrefixListId: PREFIX_LIST, fargateSpot: 'true', desiredCount: '3' });
    template = Template.fromStack(addWorkerStack(app).stack);
    outdir = app.outdir;
  }, SYNTH_TIMEOUT);

  it('creates the interface endpoints, reachable on 443 from the tasks only', () => {
    const endpoints = resourcesOfType(template, 'AWS::EC2::VPCEndpoint').map(([, resource]) => resource.Properties);
    const interfaces = endpoints.filter((endpoint) => endpoint.VpcEndpointType === 'Interface');
    const services = interfaces.map((endpoint) => JSON.stringify(endpoint.ServiceName).replace(/^.*"\.([a-z.-]+)"\]\]\}$/, '$1')).sort();
    expect(services).toEqual(['ecr.api', 'ecr.dkr', 'ecs', 'logs', 'monitoring', 'secretsmanager', 'sns', 'xray']);
    expect(interfaces).toHaveLength(Object.keys(INTERFACE_ENDPOINTS).length);
    for (const endpoint of interfaces) expect(endpoint.PrivateDnsEnabled).toBe(true);
    const endpointGroup = resourcesOfType(template, 'AWS::EC2::SecurityGroup').find(([id]) => /EndpointSecurityGroup/.test(id))![0];
    const ingress = resourcesOfType(template, 'AWS::EC2::SecurityGroupIngress')
      .map(([, resource]) => resource.Properties)
      .filter((rule) => JSON.stringify(rule.GroupId).includes(`"${endpointGroup}"`));
    expect(ingress.map((rule) => [rule.FromPort, JSON.stringify(rule.SourceSecurityGroupId)])).toEqual([[443, expect.stringContaining('WorkerSecurityGroup')]]);
  });

  it("narrows the worker's HTTPS egress to the endpoints and S3's prefix list", () => {
    const group = singleResource(template, 'AWS::EC2::SecurityGroup', /^WorkerSecurityGroup/);
    const groupId = logicalIdOf(template, 'AWS::EC2::SecurityGroup', /^WorkerSecurityGroup/);
    const separate = resourcesOfType(template, 'AWS::EC2::SecurityGroupEgress')
      .map(([, resource]) => resource.Properties)
      .filter((rule) => JSON.stringify(rule.GroupId).includes(`"${groupId}"`));
    const egress = [...(group.Properties.SecurityGroupEgress as Array<Record<string, unknown>>), ...separate];
    expect(egress.filter((rule) => rule.CidrIp === '0.0.0.0/0')).toEqual([]);
    expect(egress).toContainEqual(expect.objectContaining({ DestinationPrefixListId: PREFIX_LIST, FromPort: 443, ToPort: 443 }));
    expect(egress).toContainEqual(
      expect.objectContaining({ FromPort: 443, DestinationSecurityGroupId: { 'Fn::GetAtt': [expect.stringMatching(/EndpointSecurityGroup/), 'GroupId'] } }),
    );
  });

  it('limits the S3 gateway endpoint to the import bucket, deletes to the import prefix, and ECR image layers', () => {
    const gateway = resourcesOfType(template, 'AWS::EC2::VPCEndpoint').map(([, r]) => r.Properties).find((endpoint) => endpoint.VpcEndpointType === 'Gateway')!;
    const statements = (gateway.PolicyDocument as { Statement: Array<{ Sid?: string; Resource: unknown; Action: unknown }> }).Statement;
    const resources = JSON.stringify(statements.map((statement) => statement.Resource));
    expect(resources).toContain(':s3:::backend-documents"');
    expect(resources).toContain(':s3:::backend-documents/*"');
    expect(resources).toContain('-starport-layer-bucket/*');
    expect(resources.match(/:s3:::[a-z-]+/g)!.filter((arn) => !/backend-documents|prod-$/.test(arn))).toEqual([]);
    // The worker deletes the object it wrote from a file that changed while it was sent (task role:
    // DiscardChangedImportObjects): through the endpoint too, and only under the import prefix.
    const deletes = statements.filter((statement) => JSON.stringify(statement.Action).includes('Delete'));
    expect(deletes).toEqual([
      expect.objectContaining({ Sid: 'DeleteImportObjects', Action: 's3:DeleteObject', Resource: { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::backend-documents/imports/*']] } }),
    ]);
  });

  it('runs the first task on demand and the rest on Fargate Spot', () => {
    const service = singleResource(template, 'AWS::ECS::Service');
    expect(service.Properties.CapacityProviderStrategy).toEqual([
      { CapacityProvider: 'FARGATE', Base: 1, Weight: 0 },
      { CapacityProvider: 'FARGATE_SPOT', Weight: 1 },
    ]);
    expect(service.Properties.LaunchType).toBeUndefined();
    const association = singleResource(template, 'AWS::ECS::ClusterCapacityProviderAssociations');
    expect(association.Properties.CapacityProviders).toEqual(expect.arrayContaining(['FARGATE', 'FARGATE_SPOT']));
  });

  it('passes cdk-nag and the validators', () => {
    expect(validationFindings(outdir)).toEqual([]);
  });

  it('refuses endpoints it could not wire', () => {
    expect(settingsError({ ...REQUIRED_CONTEXT, vpcEndpoints: 'true' }).key).toBe('s3PrefixListId');
    expect(
      settingsError({
        ...REQUIRED_CONTEXT,
        vpcEndpoints: 'true',
        s3PrefixListId: PREFIX_LIST,
        vpcId: 'vpc-0a1b2c3d4e5f60718',
        privateSubnetIds: 'subnet-0aaaaaaaaaaaaaaa1',
        availabilityZones: 'eu-west-1a',
      }).message,
    ).toMatch(/vpcEndpoints=true needs the VPC this stack creates/);
    // A looked-up (shared) VPC: the endpoints' private DNS and the gateway's policy would apply to its other workloads.
    expect(settingsError({ ...REQUIRED_CONTEXT, vpcEndpoints: 'true', s3PrefixListId: PREFIX_LIST, vpcId: 'vpc-0a1b2c3d4e5f60718' })).toMatchObject({
      key: 'vpcEndpoints',
      message: expect.stringMatching(/every workload in it/),
    });
    // The collector's public image cannot be pulled through the endpoints.
    expect(settingsError({ ...REQUIRED_CONTEXT, vpcEndpoints: 'true', s3PrefixListId: PREFIX_LIST, tracing: 'true' }).key).toBe('tracing');
  });
});
