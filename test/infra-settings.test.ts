// Inputs of the infrastructure: how the CDK context (`-c key=value` strings, cdk.json values, the per-environment
// block) becomes typed settings, and which construct props are refused before anything is synthesized.
import { Stack } from 'aws-cdk-lib';
import * as ecr from 'aws-cdk-lib/aws-ecr';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { afterAll, describe, expect, it } from 'vitest';
import { BulkImportWorker, type BulkImportWorkerProps, WorkerPropsError } from '../infra/bulk-import-worker.js';
import { DATABASE_SSL_MODES, RDS_CA_BUNDLE_PATH } from '../infra/bulk-import-worker-props.js';
import { readWorkerSettings, SettingsError, type WorkerStackSettings } from '../infra/settings.js';
import { SSL_MODES } from '../worker/db/connection.js';
import { addWorkerStack } from '../infra/worker-app.js';
import { cleanUp, newApp, REQUIRED_CONTEXT } from './fixtures/infra/synth.js';

afterAll(cleanUp);

function settingsFrom(context: Record<string, unknown>): WorkerStackSettings {
  return readWorkerSettings((key) => context[key]);
}

function settingsError(context: Record<string, unknown>): SettingsError {
  try {
    settingsFrom(context);
  } catch (error) {
    if (error instanceof SettingsError) return error;
    throw error;
  }
  throw new Error('expected a SettingsError');
}

describe('context normalisation', () => {
  it('needs only the repository, secret, bucket and an on-call target; the rest has defaults', () => {
    const settings = settingsFrom({ ...REQUIRED_CONTEXT });
    expect(settings).toMatchObject({
      environment: 'dev',
      stackName: 'BulkImportWorker-dev',
      imageTag: 'dev',
      desiredCount: 1,
      importCampaign: false,
      vpc: { kind: 'create' },
      importFileSystem: { kind: 'create' },
      clusterName: undefined,
      autoscaling: undefined,
      account: undefined,
      region: undefined,
    });
    // Left to the construct's documented defaults.
    expect(settings.cpu).toBeUndefined();
    expect(settings.bucketPrefix).toBeUndefined();
    expect(settings.workerCommand).toBeUndefined();
  });

  it.each([
    ['ecrRepositoryName', /ecrRepositoryName is required: .*-c ecrRepositoryName=/],
    ['databaseSecret', /databaseSecret is required: .*DATABASE_URL/],
    ['bucketName', /bucketName is required/],
  ])('names a missing required key: %s', (key, message) => {
    const context: Record<string, unknown> = { ...REQUIRED_CONTEXT };
    delete context[key];
    const error = settingsError(context);
    expect(error.key).toBe(key);
    expect(error.message).toMatch(message);
  });

  it('requires an existing topic or an e-mail for a created one', () => {
    const error = settingsError({ ...REQUIRED_CONTEXT, alarmEmail: undefined });
    expect(error.message).toMatch(/alarmTopicArn or alarmEmail is required/);
    expect(settingsFrom({ ...REQUIRED_CONTEXT, alarmEmail: '', alarmTopicArn: 'arn:aws:sns:eu-west-1:123456789012:oncall' }))
      .toMatchObject({ alarmEmail: undefined, alarmTopicArn: 'arn:aws:sns:eu-west-1:123456789012:oncall' });
  });

  it.each([
    ['true', true],
    ['TRUE', true],
    ['1', true],
    ['yes', true],
    ['on', true],
    [true, true],
    ['false', false],
    ['0', false],
    ['off', false],
    [false, false],
  ])('reads importCampaign=%j as %j', (value, expected) => {
    expect(settingsFrom({ ...REQUIRED_CONTEXT, importCampaign: value }).importCampaign).toBe(expected);
  });

  it.each([['maybe'], ['2'], [1]])('refuses importCampaign=%j with the key and the expected form', (value) => {
    const error = settingsError({ ...REQUIRED_CONTEXT, importCampaign: value });
    expect(error.key).toBe('importCampaign');
    expect(error.message).toMatch(/importCampaign=.* is invalid: expected true or false/);
  });

  it('reads numbers from -c strings and from cdk.json numbers alike', () => {
    expect(settingsFrom({ ...REQUIRED_CONTEXT, desiredCount: '3' }).desiredCount).toBe(3);
    expect(settingsFrom({ ...REQUIRED_CONTEXT, desiredCount: 3 }).desiredCount).toBe(3);
    expect(settingsFrom({ ...REQUIRED_CONTEXT, desiredCount: ' 0 ' }).desiredCount).toBe(0);
    for (const bad of ['-1', '2.5', 'three', '101', 2.5]) {
      expect(settingsError({ ...REQUIRED_CONTEXT, desiredCount: bad }).message).toMatch(
        /desiredCount=.* is invalid: expected a whole number from 0 to 100/,
      );
    }
  });

  it('accepts only retention periods CloudWatch Logs knows', () => {
    expect(settingsFrom({ ...REQUIRED_CONTEXT, logRetentionDays: '90' }).logRetentionDays).toBe(90);
    expect(settingsError({ ...REQUIRED_CONTEXT, logRetentionDays: '45' }).message).toMatch(/one of 1, 3, 5, 7, 14, 30/);
  });

  it('reads lists as comma-separated strings, JSON strings or arrays', () => {
    const base = { ...REQUIRED_CONTEXT, vpcId: 'vpc-0123456789abcdef0', availabilityZones: 'eu-west-1a,eu-west-1b' };
    const expected = ['subnet-0123456789abcdef0', 'subnet-0123456789abcdef1'];
    for (const privateSubnetIds of [expected.join(', '), JSON.stringify(expected), expected]) {
      expect(settingsFrom({ ...base, privateSubnetIds }).vpc).toEqual({
        kind: 'import',
        vpcId: 'vpc-0123456789abcdef0',
        privateSubnetIds: expected,
        availabilityZones: ['eu-west-1a', 'eu-west-1b'],
        vpcCidrBlock: undefined,
      });
    }
    expect(settingsError({ ...base, privateSubnetIds: 'subnet-0123456789abcdef0,nope' }).key).toBe('privateSubnetIds');
  });

  it('picks how to get the VPC: create, look up by id, or import by id with subnets and zones', () => {
    expect(settingsFrom({ ...REQUIRED_CONTEXT }).vpc).toEqual({ kind: 'create' });
    expect(settingsFrom({ ...REQUIRED_CONTEXT, vpcId: 'vpc-0123456789abcdef0' }).vpc).toEqual({
      kind: 'lookup',
      vpcId: 'vpc-0123456789abcdef0',
    });
    expect(
      settingsError({
        ...REQUIRED_CONTEXT,
        vpcId: 'vpc-0123456789abcdef0',
        privateSubnetIds: 'subnet-0123456789abcdef0,subnet-0123456789abcdef1',
        availabilityZones: 'eu-west-1a',
      }).message,
    ).toMatch(/availabilityZones must list the zone of each of privateSubnetIds, in the same order \(2 subnet\(s\), 1 zone\(s\)/);
    expect(settingsError({ ...REQUIRED_CONTEXT, privateSubnetIds: 'subnet-0123456789abcdef0' }).message).toMatch(
      /only meaningful with vpcId/,
    );
    expect(settingsError({ ...REQUIRED_CONTEXT, clusterName: 'backend' }).message).toMatch(/clusterName .* needs vpcId/);
  });

  it('imports an existing file system only together with its security group', () => {
    expect(
      settingsFrom({
        ...REQUIRED_CONTEXT,
        importFileSystemId: 'fs-0123456789abcdef0',
        importFileSystemSecurityGroupId: 'sg-0123456789abcdef0',
      }).importFileSystem,
    ).toEqual({
      kind: 'import',
      fileSystemId: 'fs-0123456789abcdef0',
      accessPointId: undefined,
      securityGroupId: 'sg-0123456789abcdef0',
    });
    expect(settingsError({ ...REQUIRED_CONTEXT, importFileSystemId: 'fs-0123456789abcdef0' }).key).toBe(
      'importFileSystemSecurityGroupId',
    );
    expect(settingsError({ ...REQUIRED_CONTEXT, importAccessPointId: 'fsap-0123456789abcdef0' }).key).toBe('importAccessPointId');
  });

  it('normalises the bucket prefix and refuses empty or relative segments', () => {
    expect(settingsFrom({ ...REQUIRED_CONTEXT, bucketPrefix: '/documents/bulk' }).bucketPrefix).toBe('documents/bulk/');
    expect(settingsFrom({ ...REQUIRED_CONTEXT, bucketPrefix: 'imports/' }).bucketPrefix).toBe('imports/');
    for (const bad of ['a//b', '../x', 'a/./b', '/']) {
      expect(settingsError({ ...REQUIRED_CONTEXT, bucketPrefix: bad }).key).toBe('bucketPrefix');
    }
  });

  it('reads the worker command as a JSON array or words', () => {
    expect(settingsFrom({ ...REQUIRED_CONTEXT, workerCommand: 'node bin/bulk-import.js worker' }).workerCommand).toEqual([
      'node',
      'bin/bulk-import.js',
      'worker',
    ]);
    expect(settingsFrom({ ...REQUIRED_CONTEXT, workerCommand: '["node","bin/bulk-import.js","worker"]' }).workerCommand).toEqual([
      'node',
      'bin/bulk-import.js',
      'worker',
    ]);
    expect(settingsError({ ...REQUIRED_CONTEXT, workerCommand: '[]' }).key).toBe('workerCommand');
    expect(settingsError({ ...REQUIRED_CONTEXT, workerCommand: '["node",' }).message).toMatch(/not valid JSON/);
  });

  it('accepts a complete secret ARN or a name, not a partial ARN', () => {
    expect(settingsFrom({ ...REQUIRED_CONTEXT, databaseSecret: 'prod/backend/database' }).databaseSecret).toBe('prod/backend/database');
    expect(
      settingsError({ ...REQUIRED_CONTEXT, databaseSecret: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db' }).key,
    ).toBe('databaseSecret');
  });

  it('turns autoscaling on only when asked, with bounds around desiredCount', () => {
    expect(settingsFrom({ ...REQUIRED_CONTEXT, minTasks: '2' }).autoscaling).toBeUndefined();
    expect(settingsFrom({ ...REQUIRED_CONTEXT, desiredCount: '2', autoscaling: 'true' }).autoscaling).toEqual({
      minTasks: 2,
      maxTasks: 8,
      scaleOutQueuedJobs: undefined,
      burstQueuedJobs: undefined,
    });
  });

  describe('database TLS and IAM authentication', () => {
    const RESOURCE_ID = 'db-ABCDEFGHIJKLMNOPQRSTUVWXY0';

    it('leaves the TLS mode to the construct default and IAM authentication off', () => {
      const settings = settingsFrom({ ...REQUIRED_CONTEXT });
      expect(settings.databaseSslMode).toBeUndefined();
      expect(settings.databaseIamAuth).toBeUndefined();
    });

    it('offers exactly the modes the worker accepts', () => {
      expect([...DATABASE_SSL_MODES]).toEqual([...SSL_MODES]);
      for (const mode of SSL_MODES) expect(settingsFrom({ ...REQUIRED_CONTEXT, databaseSslMode: mode }).databaseSslMode).toBe(mode);
      expect(settingsFrom({ ...REQUIRED_CONTEXT, databaseSslMode: ' Verify-Full ' }).databaseSslMode).toBe('verify-full');
      const error = settingsError({ ...REQUIRED_CONTEXT, databaseSslMode: 'prefer' });
      expect(error.key).toBe('databaseSslMode');
      expect(error.message).toMatch(/databaseSslMode="prefer" is invalid: expected one of disable, require, verify-ca, verify-full/);
    });

    it('reads databaseIamAuth as <resource id>/<user>, a JSON object, or an object from cdk.json', () => {
      const expected = { resourceId: RESOURCE_ID, user: 'bulk_import' };
      for (const value of [`${RESOURCE_ID}/bulk_import`, ` ${RESOURCE_ID}/bulk_import `, JSON.stringify(expected), expected]) {
        expect(settingsFrom({ ...REQUIRED_CONTEXT, databaseIamAuth: value }).databaseIamAuth).toEqual(expected);
      }
      for (const resourceId of ['cluster-ABCDEFGHIJKLMNOPQRSTUVWXY0', 'prx-0123456789abcdef0']) {
        expect(settingsFrom({ ...REQUIRED_CONTEXT, databaseIamAuth: `${resourceId}/worker` }).databaseIamAuth).toEqual({
          resourceId,
          user: 'worker',
        });
      }
    });

    it('turns databaseIamAuth off with false or an empty value, also over an environment block', () => {
      const environments = { prod: { databaseIamAuth: { resourceId: RESOURCE_ID, user: 'bulk_import' } } };
      expect(settingsFrom({ ...REQUIRED_CONTEXT, environments, environment: 'prod' }).databaseIamAuth).toEqual({
        resourceId: RESOURCE_ID,
        user: 'bulk_import',
      });
      for (const off of ['false', 'off', '', false]) {
        expect(settingsFrom({ ...REQUIRED_CONTEXT, environments, environment: 'prod', databaseIamAuth: off }).databaseIamAuth).toBeUndefined();
      }
    });

    it.each([
      ['true'],
      ['bulk-import-prod/bulk_import'],
      [`${RESOURCE_ID}`],
      [`${RESOURCE_ID}/*`],
      [`${RESOURCE_ID}/bulk_import/extra`],
      ['db-*/bulk_import'],
      [{ resourceId: RESOURCE_ID }],
      [{ resourceId: RESOURCE_ID, user: 'bulk_import', region: 'eu-west-1' }],
    ])('refuses databaseIamAuth=%j, naming the key and the expected form', (value) => {
      const error = settingsError({ ...REQUIRED_CONTEXT, databaseIamAuth: value });
      expect(error.key).toBe('databaseIamAuth');
      expect(error.message).toMatch(/databaseIamAuth=.* is invalid: expected <resource id>\/<database user> .*not its name/);
    });

    it('refuses IAM authentication without TLS', () => {
      const error = settingsError({ ...REQUIRED_CONTEXT, databaseIamAuth: `${RESOURCE_ID}/bulk_import`, databaseSslMode: 'disable' });
      expect(error.key).toBe('databaseSslMode');
      expect(error.message).toMatch(/RDS refuses IAM tokens without TLS/);
      expect(settingsFrom({ ...REQUIRED_CONTEXT, databaseIamAuth: `${RESOURCE_ID}/bulk_import`, databaseSslMode: 'require' }))
        .toMatchObject({ databaseSslMode: 'require', databaseIamAuth: { user: 'bulk_import' } });
    });
  });

  describe('per-environment block (cdk.json "environments")', () => {
    const environments = {
      prod: { desiredCount: 2, bucketName: 'prod-documents', importCampaign: false, vpcId: 'vpc-0123456789abcdef0' },
      staging: { desiredCount: 0 },
    };

    it('fills keys for the chosen environment; -c still wins', () => {
      const settings = settingsFrom({ ...REQUIRED_CONTEXT, bucketName: undefined, environments, environment: 'prod', importCampaign: 'true' });
      expect(settings).toMatchObject({
        environment: 'prod',
        desiredCount: 2,
        bucketName: 'prod-documents',
        importCampaign: true,
        vpc: { kind: 'lookup', vpcId: 'vpc-0123456789abcdef0' },
      });
      expect(settingsFrom({ ...REQUIRED_CONTEXT, environments, environment: 'staging' }).desiredCount).toBe(0);
      expect(settingsFrom({ ...REQUIRED_CONTEXT, environments, environment: 'dev' }).desiredCount).toBe(1);
    });

    it('accepts the block as a JSON string and reports unknown keys instead of ignoring them', () => {
      expect(settingsFrom({ ...REQUIRED_CONTEXT, environments: JSON.stringify(environments), environment: 'staging' }).desiredCount).toBe(0);
      const error = settingsError({ ...REQUIRED_CONTEXT, environments: { prod: { desiredTasks: 3 } }, environment: 'prod' });
      expect(error.key).toBe('environments.prod.desiredTasks');
      expect(error.message).toMatch(/is not a setting \(known: .*desiredCount/);
    });
  });
});

describe('app environment', () => {
  it('refuses a VPC lookup without an account and region, and records the lookup when they are known', { timeout: 60_000 }, () => {
    const lookupContext = { ...REQUIRED_CONTEXT, vpcId: 'vpc-0123456789abcdef0' };
    expect(() => addWorkerStack(newApp(lookupContext))).toThrow(/looking up vpcId needs an account and region/);

    const app = newApp(lookupContext);
    const { stack } = addWorkerStack(app, { account: '123456789012', region: 'eu-west-1' });
    expect(stack.account).toBe('123456789012');
    expect(stack.region).toBe('eu-west-1');
    // Until the CLI has done the lookup, CDK synthesizes a placeholder VPC (vpc-12345, p-12345): a template nobody
    // deploys, whose placeholder ids the built-in CloudFormation validator would only print warnings about.
    process.env.CDK_VALIDATION = 'false';
    let missing;
    try {
      missing = app.synth().manifest.missing ?? [];
    } finally {
      delete process.env.CDK_VALIDATION;
    }
    expect(missing).toContainEqual(
      expect.objectContaining({
        provider: 'vpc-provider',
        props: expect.objectContaining({ account: '123456789012', region: 'eu-west-1', filter: { 'vpc-id': 'vpc-0123456789abcdef0' } }),
      }),
    );
  });

  it('stays environment-agnostic by default (synth needs no account)', () => {
    const { stack } = addWorkerStack(newApp({ ...REQUIRED_CONTEXT }), { account: '123456789012', region: 'eu-west-1' });
    expect(stack.resolve(stack.account)).toEqual({ Ref: 'AWS::AccountId' });
    expect(stack.terminationProtection).toBe(false);
  });

  it('protects the prod stack from deletion', () => {
    expect(addWorkerStack(newApp({ ...REQUIRED_CONTEXT, environment: 'prod' })).stack.terminationProtection).toBe(true);
  });
});

describe('construct prop checks', () => {
  function construct(overrides: Partial<BulkImportWorkerProps>): () => BulkImportWorker {
    return () => {
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
    };
  }

  it('accepts the defaults', () => {
    expect(construct({})().service).toBeDefined();
  });

  it.each([
    [{ cpu: 1024, memoryMiB: 1000 }, /cpu 1024 with memory 1000 MiB is not a Fargate size \(cpu 1024 takes 2048–8192 MiB/],
    [{ cpu: 300 }, /cpu 300 with memory 2048 MiB is not a Fargate size/],
    [{ stopTimeoutSeconds: 121 }, /stopTimeout must be 2–120 seconds/],
    [{ shutdownGraceSeconds: 115 }, /shutdownGrace \(115 s\) must leave 10 s of stopTimeout \(120 s\)/],
    [{ stopTimeoutSeconds: 30, shutdownGraceSeconds: 25 }, /shutdownGrace \(25 s\)/],
    [{ alarmEmail: undefined }, /alarmEmail is required when no alarmTopic is given/],
    [{ desiredCount: 2, autoscaling: { minTasks: 0, maxTasks: 4 } }, /minTasks must be at least 1.*nothing would ever scale the service out/],
    [{ desiredCount: 5, autoscaling: { minTasks: 1, maxTasks: 4 } }, /desiredCount \(5\) must lie within autoscaling minTasks–maxTasks \(1–4\)/],
    [{ desiredCount: 2, autoscaling: { minTasks: 1, maxTasks: 4, scaleOutQueuedJobs: 50, burstQueuedJobs: 10 } }, /scaleOutQueuedJobs \(50\) < burstQueuedJobs \(10\)/],
    [{ bucketPrefix: '/imports' }, /bucketPrefix must not start with "\/" and must end with "\/"/],
    [{ bucketPrefix: 'documents/bulk/' }, /bucketPrefix must be one key segment .* got documents\/bulk\/: .* writes under documents\/_bulk\/<tenant>\/, outside it/],
    [{ environmentName: 'Prod' }, /environmentName "Prod" must be a short lowercase name/],
    [{ databaseSslMode: 'prefer' }, /databaseSslMode must be one of disable, require, verify-ca, verify-full, got "prefer"/],
    [{ databaseIamAuth: { resourceId: 'bulk-import-prod', user: 'bulk_import' } }, /databaseIamAuth.resourceId must be the resource id .* not its name/],
    [{ databaseIamAuth: { resourceId: 'db-ABCDEFGHIJKLMNOP', user: '*' } }, /databaseIamAuth.user must be one database user name/],
    [
      { databaseSslMode: 'disable', databaseIamAuth: { resourceId: 'db-ABCDEFGHIJKLMNOP', user: 'bulk_import' } },
      /databaseIamAuth needs TLS/,
    ],
  ] as Array<[Partial<BulkImportWorkerProps>, RegExp]>)('refuses %j', (overrides, message) => {
    expect(construct(overrides)).toThrow(message);
    expect(construct(overrides)).toThrow(WorkerPropsError);
  });

  it('names the RDS CA bundle only for the modes that check the certificate chain', () => {
    const environmentFor = (overrides: Partial<BulkImportWorkerProps>): Record<string, unknown> => {
      const worker = construct(overrides)();
      const taskDefinition = worker.taskDefinition.node.defaultChild as { containerDefinitions?: unknown };
      const [container] = Stack.of(worker).resolve(taskDefinition.containerDefinitions) as Array<{
        environment: Array<{ name: string; value: unknown }>;
      }>;
      const database = container!.environment.filter((entry) => entry.name.startsWith('DATABASE_'));
      return Object.fromEntries(database.map((entry) => [entry.name, entry.value]));
    };
    expect(environmentFor({})).toEqual({ DATABASE_SSL_MODE: 'verify-full', DATABASE_SSL_ROOT_CERT: RDS_CA_BUNDLE_PATH });
    expect(environmentFor({ databaseSslMode: 'verify-ca' })).toEqual({ DATABASE_SSL_MODE: 'verify-ca', DATABASE_SSL_ROOT_CERT: RDS_CA_BUNDLE_PATH });
    expect(environmentFor({ databaseSslMode: 'require' })).toEqual({ DATABASE_SSL_MODE: 'require' });
    expect(environmentFor({ databaseSslMode: 'disable' })).toEqual({ DATABASE_SSL_MODE: 'disable' });
    expect(environmentFor({ databaseIamAuth: { resourceId: 'db-ABCDEFGHIJKLMNOP', user: 'bulk_import' } })).toEqual({
      DATABASE_SSL_MODE: 'verify-full',
      DATABASE_SSL_ROOT_CERT: RDS_CA_BUNDLE_PATH,
      DATABASE_IAM_AUTH: 'true',
    });
  });

  it('derives the drain from a shorter stopTimeout so it still fits', () => {
    const worker = construct({ stopTimeoutSeconds: 60 })();
    const taskDefinition = worker.taskDefinition.node.defaultChild as { containerDefinitions?: unknown };
    const rendered = JSON.stringify(Stack.of(worker).resolve(taskDefinition.containerDefinitions));
    expect(rendered).toContain('"name":"WORKER_SHUTDOWN_GRACE_MS","value":"40000"');
    expect(rendered).toContain('"stopTimeout":60');
  });
});
