// The synthesized worker stack, scenario by scenario: the service and its task definition, the campaign-only
// read-only mount, least-privilege IAM, logs and health check, alarms, autoscaling, existing resources, outputs.
// Each scenario is synthesized once (1–3 s each) and shared by the tests that read it.
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { afterAll, describe, expect, it } from 'vitest';
import { RDS_CA_BUNDLE_PATH } from '../infra/bulk-import-worker-props.js';
import {
  actionsOf,
  cleanUp,
  EXISTING,
  iamStatements,
  logicalIdOf,
  resourcesOfType,
  type ScenarioName,
  SCENARIOS,
  singleResource,
  synthScenario,
  taskDefinitionProperties,
  workerContainer,
} from './fixtures/infra/synth.js';

const SYNTH_TIMEOUT = 60_000;
afterAll(cleanUp);

function alarmsOnMetric(template: Template, metricName: string) {
  return Object.values(template.findResources('AWS::CloudWatch::Alarm', { Properties: { MetricName: metricName } }));
}

function environmentOf(template: Template): Record<string, unknown> {
  return Object.fromEntries(workerContainer(template).Environment.map((entry) => [entry.Name, entry.Value]));
}

describe('synthesis', () => {
  it.each(Object.keys(SCENARIOS) as ScenarioName[])(
    '%s: no finding from the CloudFormation validator, cdk-nag or annotations, not even a warning',
    { timeout: SYNTH_TIMEOUT },
    (scenario) => {
      expect(synthScenario(scenario).validationFindings).toEqual([]);
    },
  );
});

describe('worker service and task definition', () => {
  it('runs the backend image with the worker command on Fargate, hardened', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const container = workerContainer(template);
    expect(container.Command).toEqual(['node', '--max-semi-space-size=32', 'bin/bulk-import.js', 'worker']);
    // The image is the backend repository at the environment's moving tag (scripts/deploy.sh moves it).
    expect(JSON.stringify(container.Image)).toMatch(/\/backend:prod"/);
    expect(container.User).toBe('1000:1000');
    expect(container.ReadonlyRootFilesystem).toBe(true);
    expect(container.Essential).toBe(true);
    expect(container.LinuxParameters).toEqual({ Capabilities: { Drop: ['ALL'] }, InitProcessEnabled: true });
    expect(container.MountPoints).toContainEqual({ ContainerPath: '/tmp', ReadOnly: false, SourceVolume: 'tmp' });
    expect(taskDefinitionProperties(template).Volumes).toContainEqual({ Name: 'tmp' });
    expect(taskDefinitionProperties(template)).toMatchObject({
      Family: 'bulk-import-worker-prod',
      Cpu: '1024',
      Memory: '2048',
      RequiresCompatibilities: ['FARGATE'],
      RuntimePlatform: { CpuArchitecture: 'X86_64', OperatingSystemFamily: 'LINUX' },
    });
  });

  it('gives the drain time to the worker and fits it inside stopTimeout', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    expect(workerContainer(template).StopTimeout).toBe(120);
    const graceMs = Number(environmentOf(template).WORKER_SHUTDOWN_GRACE_MS);
    expect(graceMs).toBe(100_000);
    expect(graceMs / 1000).toBeLessThanOrEqual(120 - 10);
  });

  it('passes the documented environment, and the database URL only as a Secrets Manager secret', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const environment = environmentOf(template);
    expect(environment).toEqual({
      S3_BUCKET: 'backend-documents',
      AWS_REGION: { Ref: 'AWS::Region' },
      IMPORT_ROOT: '/import',
      LOG_LEVEL: 'info',
      LOG_FORMAT: 'json',
      METRICS_NAMESPACE: 'BulkImport/prod',
      WORKER_CONCURRENCY: '8',
      WORKER_SHUTDOWN_GRACE_MS: '100000',
      HEALTH_HEARTBEAT_FILE: '/tmp/bulk-import-worker.heartbeat',
      DATABASE_SSL_MODE: 'verify-full',
      DATABASE_SSL_ROOT_CERT: '/app/certs/rds-ca-bundle.pem',
      // No notifications topic in this scenario: the outbox is off.
      NOTIFY_STATES: 'none',
    });
    expect(workerContainer(template).Secrets).toEqual([
      { Name: 'DATABASE_URL', ValueFrom: 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/backend/database-AbCdEf' },
    ]);
    expect(JSON.stringify(template.toJSON())).not.toMatch(/postgres(ql)?:\/\//);
  });

  it('runs the health check script with a start period', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('stagingBaseline');
    expect(workerContainer(template).HealthCheck).toEqual({
      Command: ['CMD', 'node', 'dist/scripts/healthcheck.js'],
      Interval: 30,
      Timeout: 10,
      Retries: 3,
      // The worker's default database start-up wait (60 s) + 30 s: its heartbeat exists only once the database answered.
      StartPeriod: 90,
    });
  });

  it('logs to its own retained log group with the bulk-import-worker stream prefix', { timeout: SYNTH_TIMEOUT }, () => {
    for (const [scenario, retention] of [
      ['prodCampaign', 365],
      ['stagingBaseline', 30],
    ] as const) {
      const { template } = synthScenario(scenario);
      const workerLogGroup = logicalIdOf(template, 'AWS::Logs::LogGroup', /^WorkerLogGroup/);
      expect(workerContainer(template).LogConfiguration).toEqual({
        LogDriver: 'awslogs',
        Options: {
          'awslogs-group': { Ref: workerLogGroup },
          'awslogs-stream-prefix': 'bulk-import-worker',
          'awslogs-region': { Ref: 'AWS::Region' },
          mode: 'non-blocking',
          'max-buffer-size': '26214400b',
        },
      });
      template.hasResource('AWS::Logs::LogGroup', {
        Properties: { RetentionInDays: retention },
        DeletionPolicy: 'Retain',
      });
    }
  });

  it('deploys as a worker: private subnets, no public IP, circuit breaker with rollback', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    template.hasResourceProperties('AWS::ECS::Service', {
      ServiceName: 'bulk-import-worker-prod',
      LaunchType: 'FARGATE',
      DesiredCount: 2,
      EnableExecuteCommand: false,
      DeploymentConfiguration: {
        DeploymentCircuitBreaker: { Enable: true, Rollback: true },
        MinimumHealthyPercent: 100,
        MaximumPercent: 200,
      },
      NetworkConfiguration: {
        AwsvpcConfiguration: {
          AssignPublicIp: 'DISABLED',
          Subnets: [{ Ref: Match.stringLikeRegexp('^WorkerVpcprivateSubnet1') }, { Ref: Match.stringLikeRegexp('^WorkerVpcprivateSubnet2') }],
        },
      },
    });
    template.hasResourceProperties('AWS::ECS::Cluster', {
      ClusterSettings: [{ Name: 'containerInsights', Value: 'enabled' }],
    });
  });

  it('normalises -c strings: desiredCount "0" is the number 0', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodStopped');
    template.hasResourceProperties('AWS::ECS::Service', { DesiredCount: 0 });
  });

  it('lets the worker reach only HTTPS, Postgres and (during a campaign) NFS', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const group = singleResource(template, 'AWS::EC2::SecurityGroup', /^WorkerSecurityGroup/);
    expect(group.Properties.SecurityGroupIngress).toBeUndefined();
    expect(group.Properties.SecurityGroupEgress).toEqual([
      expect.objectContaining({ CidrIp: '0.0.0.0/0', FromPort: 443, ToPort: 443, IpProtocol: 'tcp' }),
      // prod names the database (databaseCidr here): never the whole VPC or 0.0.0.0/0 (test/infra-worker-settings.test.ts).
      expect.objectContaining({ CidrIp: '10.30.0.0/24', FromPort: 5432, ToPort: 5432 }),
    ]);
    template.hasResourceProperties('AWS::EC2::SecurityGroupEgress', { FromPort: 2049, ToPort: 2049, IpProtocol: 'tcp' });
  });
});

describe('TLS and IAM authentication to the database', () => {
  it('by default: verify-full against the RDS CA bundle in the image, password from the secret', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const environment = environmentOf(template);
    expect(environment.DATABASE_SSL_MODE).toBe('verify-full');
    expect(environment.DATABASE_SSL_ROOT_CERT).toBe(RDS_CA_BUNDLE_PATH);
    expect(RDS_CA_BUNDLE_PATH).toBe('/app/certs/rds-ca-bundle.pem');
    expect(environment).not.toHaveProperty('DATABASE_IAM_AUTH');
    expect(iamStatements(template).flatMap(actionsOf).filter((action) => action.startsWith('rds-db:'))).toEqual([]);
  });

  it('takes another mode from databaseSslMode (staging: verify-ca), still against the bundle', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('stagingBaseline');
    const environment = environmentOf(template);
    expect(environment.DATABASE_SSL_MODE).toBe('verify-ca');
    expect(environment.DATABASE_SSL_ROOT_CERT).toBe(RDS_CA_BUNDLE_PATH);
    expect(environment).not.toHaveProperty('DATABASE_IAM_AUTH');
  });

  it('with databaseIamAuth: DATABASE_IAM_AUTH=true and rds-db:connect as exactly that user of that database', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodExisting');
    const environment = environmentOf(template);
    expect(environment.DATABASE_IAM_AUTH).toBe('true');
    expect(environment.DATABASE_SSL_MODE).toBe('verify-full');
    expect(environment.DATABASE_SSL_ROOT_CERT).toBe(RDS_CA_BUNDLE_PATH);
    const taskPolicy = logicalIdOf(template, 'AWS::IAM::Policy', /^WorkerTaskDefinitionTaskRoleDefaultPolicy/);
    const rdsStatements = iamStatements(template).filter((statement) =>
      actionsOf(statement).some((action) => action.toLowerCase().startsWith('rds')),
    );
    expect(rdsStatements).toEqual([
      {
        Sid: 'ConnectAsDatabaseUser',
        Effect: 'Allow',
        Action: 'rds-db:connect',
        Resource: {
          'Fn::Join': [
            '',
            [
              'arn:',
              { Ref: 'AWS::Partition' },
              ':rds-db:',
              { Ref: 'AWS::Region' },
              ':',
              { Ref: 'AWS::AccountId' },
              `:dbuser:${EXISTING.databaseResourceId}/${EXISTING.databaseUser}`,
            ],
          ],
        },
        policy: taskPolicy,
      },
    ]);
    // The database password is never a plain value; the secret stays the only source of DATABASE_URL.
    expect(workerContainer(template).Secrets).toEqual([{ Name: 'DATABASE_URL', ValueFrom: expect.anything() }]);
  });
});

describe('campaign-only import mount', () => {
  it('campaign on: the EFS volume is mounted read-only at /import over TLS with IAM authorization', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const fileSystem = logicalIdOf(template, 'AWS::EFS::FileSystem');
    const accessPoint = logicalIdOf(template, 'AWS::EFS::AccessPoint');
    expect(taskDefinitionProperties(template).Volumes).toContainEqual({
      Name: 'import',
      EFSVolumeConfiguration: {
        FilesystemId: { Ref: fileSystem },
        TransitEncryption: 'ENABLED',
        AuthorizationConfig: { AccessPointId: { Ref: accessPoint }, IAM: 'ENABLED' },
      },
    });
    expect(workerContainer(template).MountPoints).toContainEqual({ ContainerPath: '/import', ReadOnly: true, SourceVolume: 'import' });
    template.hasResourceProperties('AWS::EC2::SecurityGroupIngress', {
      FromPort: 2049,
      ToPort: 2049,
      GroupId: { 'Fn::GetAtt': [Match.stringLikeRegexp('^WorkerImportFileSystemSecurityGroup'), 'GroupId'] },
      SourceSecurityGroupId: { 'Fn::GetAtt': [Match.stringLikeRegexp('^WorkerSecurityGroup'), 'GroupId'] },
    });
  });

  it('campaign off: no import volume, no mount, no EFS permission, no NFS rule', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('stagingBaseline');
    expect(taskDefinitionProperties(template).Volumes).toEqual([{ Name: 'tmp' }]);
    expect(workerContainer(template).MountPoints.map((mount) => mount.ContainerPath)).toEqual(['/tmp']);
    const efsActions = iamStatements(template).flatMap(actionsOf).filter((action) => action.startsWith('elasticfilesystem:'));
    expect(efsActions).toEqual([]);
    expect(template.findResources('AWS::EC2::SecurityGroupIngress', { Properties: { FromPort: 2049 } })).toEqual({});
    expect(template.findResources('AWS::EC2::SecurityGroupEgress', { Properties: { FromPort: 2049 } })).toEqual({});
    // The share outlives the campaign: the file system and its access point exist either way.
    template.resourceCountIs('AWS::EFS::AccessPoint', 1);
    template.hasResource('AWS::EFS::FileSystem', { DeletionPolicy: 'Retain' });
  });

  it('creates an encrypted file system whose policy denies non-TLS clients and grants nobody write', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const fileSystem = singleResource(template, 'AWS::EFS::FileSystem');
    expect(fileSystem.Properties.Encrypted).toBe(true);
    const policy = fileSystem.Properties.FileSystemPolicy as { Statement: Array<Record<string, unknown>> };
    expect(policy.Statement).toEqual([
      expect.objectContaining({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
    ]);
    template.hasResourceProperties('AWS::EFS::AccessPoint', {
      RootDirectory: { Path: '/import' },
      PosixUser: { Uid: '1000', Gid: '1000' },
    });
  });
});

describe('least-privilege task role', () => {
  it('holds exactly the import, changed-object delete, metrics, task-protection and read-only mount statements', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const taskPolicy = logicalIdOf(template, 'AWS::IAM::Policy', /^WorkerTaskDefinitionTaskRoleDefaultPolicy/);
    const statements = iamStatements(template).filter((statement) => statement.policy === taskPolicy);
    const bySid = Object.fromEntries(statements.map((statement) => [statement.Sid, statement]));
    expect(Object.keys(bySid).sort()).toEqual(
      ['DiscardChangedImportObjects', 'ImportObjects', 'ListImportPrefix', 'MountImportReadOnly', 'OwnTaskScaleInProtection', 'PutMetricsInNamespace'].sort(),
    );
    const partitionArn = (rest: string) => ({ 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, rest]] });

    expect(actionsOf(bySid.ImportObjects!).sort()).toEqual(['s3:AbortMultipartUpload', 's3:GetObject', 's3:PutObject']);
    expect(bySid.ImportObjects!.Resource).toEqual(partitionArn(':s3:::backend-documents/imports/*'));
    // A mass import deletes the object it wrote from a file that changed while it was sent: its own, under the prefix.
    expect(bySid.DiscardChangedImportObjects).toMatchObject({ Action: 's3:DeleteObject', Resource: partitionArn(':s3:::backend-documents/imports/*') });
    expect(bySid.ListImportPrefix).toMatchObject({
      Action: 's3:ListBucket',
      Resource: partitionArn(':s3:::backend-documents'),
      Condition: { StringLike: { 's3:prefix': ['imports/*'] } },
    });
    expect(bySid.PutMetricsInNamespace).toMatchObject({
      Action: 'cloudwatch:PutMetricData',
      Resource: '*',
      Condition: { StringEquals: { 'cloudwatch:namespace': 'BulkImport/prod' } },
    });
    expect(actionsOf(bySid.OwnTaskScaleInProtection!).sort()).toEqual(['ecs:GetTaskProtection', 'ecs:UpdateTaskProtection']);
    // Tasks of the worker's own cluster only: task/<cluster name>/<task id>.
    const protectionArn = (bySid.OwnTaskScaleInProtection!.Resource as { 'Fn::Join': [string, unknown[]] })['Fn::Join'][1];
    expect(protectionArn.slice(-3)).toEqual([':task/', { Ref: expect.stringMatching(/^WorkerCluster/) }, '/*']);
    expect(bySid.MountImportReadOnly).toMatchObject({
      Action: 'elasticfilesystem:ClientMount',
      Resource: { 'Fn::GetAtt': [expect.stringMatching(/^WorkerImportFileSystem/), 'Arn'] },
      Condition: {
        StringEquals: { 'elasticfilesystem:AccessPointArn': expect.anything() },
        Bool: { 'elasticfilesystem:AccessedViaMountTarget': 'true' },
      },
    });
  });

  it('never grants write to the file system, wildcard actions, or a delete other than of import objects', { timeout: SYNTH_TIMEOUT }, () => {
    for (const [scenario, prefix] of [['prodCampaign', 'imports/'], ['prodExisting', 'documents/']] as const) {
      const allowed = iamStatements(synthScenario(scenario).template).filter((statement) => statement.Effect === 'Allow');
      const actions = allowed.flatMap(actionsOf);
      expect(actions).not.toContain('elasticfilesystem:ClientWrite');
      expect(actions).not.toContain('elasticfilesystem:ClientRootAccess');
      expect(actions.filter((action) => action.includes('*') && action !== 'kms:GenerateDataKey*')).toEqual([]);
      // The one delete: the object a mass import wrote from a file that changed while it was sent, under the prefix.
      const deletes = allowed.filter((statement) => actionsOf(statement).some((action) => /Delete/.test(action)));
      expect(deletes.map((statement) => [statement.Sid, actionsOf(statement)])).toEqual([['DiscardChangedImportObjects', ['s3:DeleteObject']]]);
      expect(JSON.stringify(deletes[0]!.Resource)).toMatch(new RegExp(`:s3:::backend-documents/${prefix}\\*"`));
    }
  });

  it('lets the execution role read only the one secret, repository and log group', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const executionPolicy = logicalIdOf(template, 'AWS::IAM::Policy', /^WorkerTaskDefinitionExecutionRoleDefaultPolicy/);
    const statements = iamStatements(template).filter((statement) => statement.policy === executionPolicy);
    const resourceFor = (action: string) => statements.find((statement) => actionsOf(statement).includes(action))?.Resource;
    expect(resourceFor('secretsmanager:GetSecretValue')).toBe(
      'arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/backend/database-AbCdEf',
    );
    expect(JSON.stringify(resourceFor('ecr:BatchGetImage'))).toContain(':repository/backend"');
    expect(resourceFor('logs:PutLogEvents')).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/^WorkerLogGroup/), 'Arn'] });
    expect(resourceFor('ecr:GetAuthorizationToken')).toBe('*');
  });
});

describe('alarms', () => {
  it('running below desired: live DesiredTaskCount − RunningTaskCount of the service, in every environment', { timeout: SYNTH_TIMEOUT }, () => {
    // The details (metric math, missing data, paging or notifying) are in test/infra-observability.test.ts.
    for (const scenario of ['prodCampaign', 'prodStopped', 'stagingBaseline'] as const) {
      const { template, settings } = synthScenario(scenario);
      const topic = logicalIdOf(template, 'AWS::SNS::Topic');
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        AlarmName: `bulk-import-worker-${settings.environment}-running-below-desired`,
        Metrics: Match.arrayWith([
          Match.objectLike({
            MetricStat: Match.objectLike({
              Metric: {
                Namespace: 'ECS/ContainerInsights',
                MetricName: 'RunningTaskCount',
                Dimensions: [
                  { Name: 'ClusterName', Value: { Ref: Match.stringLikeRegexp('^WorkerCluster') } },
                  { Name: 'ServiceName', Value: { 'Fn::GetAtt': [Match.stringLikeRegexp('^WorkerService'), 'Name'] } },
                ],
              },
            }),
          }),
        ]),
        AlarmActions: [{ Ref: topic }],
        OKActions: [{ Ref: topic }],
      });
    }
  });

  it('dead jobs > 0 and oldest queued age alarms on the dimensionless totals, in every environment', { timeout: SYNTH_TIMEOUT }, () => {
    for (const scenario of ['stagingBaseline', 'prodStopped'] as const) {
      const { template, settings } = synthScenario(scenario);
      const topic = logicalIdOf(template, 'AWS::SNS::Topic');
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        AlarmName: `bulk-import-worker-${settings.environment}-dead-jobs`,
        Namespace: `BulkImport/${settings.environment}`,
        MetricName: 'DeadJobs',
        Dimensions: Match.absent(),
        Statistic: 'Maximum',
        // The gauges' schedule period: at 0 tasks only the scheduled task publishes, once a period.
        Period: 300,
        ComparisonOperator: 'GreaterThanThreshold',
        Threshold: 0,
        TreatMissingData: 'notBreaching',
        AlarmActions: [{ Ref: topic }],
      });
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        AlarmName: `bulk-import-worker-${settings.environment}-oldest-queued-age`,
        Namespace: `BulkImport/${settings.environment}`,
        MetricName: 'OldestQueuedAgeSeconds',
        Dimensions: Match.absent(),
        Statistic: 'Minimum',
        Period: 300,
        ComparisonOperator: 'GreaterThanThreshold',
        Threshold: 1800,
        EvaluationPeriods: 1,
        AlarmActions: [{ Ref: topic }],
      });
    }
  });

  it('creates a KMS-encrypted alarm topic that refuses publishing without TLS, with the e-mail subscription', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const topic = logicalIdOf(template, 'AWS::SNS::Topic');
    template.hasResourceProperties('AWS::SNS::Topic', { KmsMasterKeyId: Match.anyValue() });
    template.hasResourceProperties('AWS::SNS::TopicPolicy', {
      Topics: [{ Ref: topic }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Action: 'sns:Publish', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          // The topic policy replaces SNS's default one: without this Allow, CloudWatch could not publish alarms.
          Match.objectLike({
            Effect: 'Allow',
            Principal: { Service: 'cloudwatch.amazonaws.com' },
            Action: 'sns:Publish',
            Resource: { Ref: topic },
            Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } }, ArnLike: Match.anyValue() },
          }),
        ]),
      },
    });
    template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'oncall@example.com',
      TopicArn: { Ref: topic },
    });
    // CloudWatch must be able to use the topic's key, or alarm notifications are silently dropped.
    template.hasResourceProperties('AWS::KMS::Key', {
      EnableKeyRotation: true,
      KeyPolicy: {
        Statement: Match.arrayWith([
          Match.objectLike({ Principal: { Service: 'cloudwatch.amazonaws.com' }, Action: ['kms:Decrypt', 'kms:GenerateDataKey*'] }),
        ]),
      },
    });
  });
});

describe('existing VPC, cluster, file system, topic, database group and bucket key', () => {
  it('creates none of them and runs in the given subnets and cluster', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodExisting');
    for (const type of ['AWS::EC2::VPC', 'AWS::ECS::Cluster', 'AWS::EFS::FileSystem', 'AWS::EFS::AccessPoint', 'AWS::SNS::Topic', 'AWS::KMS::Key']) {
      template.resourceCountIs(type, 0);
    }
    template.hasResourceProperties('AWS::ECS::Service', {
      Cluster: EXISTING.clusterName,
      DesiredCount: 3,
      NetworkConfiguration: { AwsvpcConfiguration: { AssignPublicIp: 'DISABLED', Subnets: [...EXISTING.subnets] } },
    });
    expect(taskDefinitionProperties(template)).toMatchObject({
      Cpu: '2048',
      Memory: '4096',
      RuntimePlatform: { CpuArchitecture: 'ARM64' },
    });
  });

  it('mounts the existing file system through its access point and opens NFS on its security group', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodExisting');
    expect(taskDefinitionProperties(template).Volumes).toContainEqual({
      Name: 'import',
      EFSVolumeConfiguration: {
        FilesystemId: EXISTING.fileSystemId,
        TransitEncryption: 'ENABLED',
        AuthorizationConfig: { AccessPointId: EXISTING.accessPointId, IAM: 'ENABLED' },
      },
    });
    template.hasResourceProperties('AWS::EC2::SecurityGroupIngress', {
      GroupId: EXISTING.fileSystemSecurityGroupId,
      FromPort: 2049,
      ToPort: 2049,
    });
    template.hasResourceProperties('AWS::EC2::SecurityGroupIngress', {
      GroupId: EXISTING.databaseSecurityGroupId,
      FromPort: 5432,
      ToPort: 5432,
    });
  });

  it('pages the existing topic, uses the per-environment namespace and the configured age threshold', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodExisting');
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'bulk-import-worker-prod-running-below-desired',
      Metrics: Match.arrayWith([
        Match.objectLike({
          MetricStat: Match.objectLike({
            Metric: Match.objectLike({ MetricName: 'RunningTaskCount', Dimensions: Match.arrayWith([{ Name: 'ClusterName', Value: EXISTING.clusterName }]) }),
          }),
        }),
      ]),
      AlarmActions: [EXISTING.topicArn],
    });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      MetricName: 'OldestQueuedAgeSeconds',
      Namespace: 'BulkImport/prod',
      Threshold: 900,
      AlarmActions: [EXISTING.topicArn],
    });
    template.resourceCountIs('AWS::SNS::Subscription', 0);
    expect(environmentOf(template).METRICS_NAMESPACE).toBe('BulkImport/prod');
    const metricsStatement = iamStatements(template).find((statement) => statement.Sid === 'PutMetricsInNamespace');
    expect(metricsStatement?.Condition).toEqual({ StringEquals: { 'cloudwatch:namespace': 'BulkImport/prod' } });
  });

  it('scopes S3 to the normalised prefix, decrypts via S3 only, and reads a JSON field of a named secret', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodExisting');
    const statements = iamStatements(template);
    const bySid = (sid: string) => statements.find((statement) => statement.Sid === sid);
    expect(JSON.stringify(bySid('ImportObjects')?.Resource)).toContain(':s3:::backend-documents/documents/*');
    expect(bySid('ListImportPrefix')?.Condition).toEqual({ StringLike: { 's3:prefix': ['documents/*'] } });
    // CSV uploads are under imports/ whatever the prefix: the worker reads them there (and nothing else of it).
    expect(bySid('ReadCsvUploads')).toMatchObject({ Action: 's3:GetObject' });
    expect(JSON.stringify(bySid('ReadCsvUploads')?.Resource)).toContain(':s3:::backend-documents/imports/*');
    expect(bySid('ImportBucketKey')).toMatchObject({
      Action: ['kms:Decrypt', 'kms:GenerateDataKey'],
      Resource: EXISTING.kmsKeyArn,
      Condition: { StringEquals: { 'kms:ViaService': expect.anything() } },
    });
    const [secret] = workerContainer(template).Secrets as Array<{ Name: string; ValueFrom: unknown }>;
    expect(secret!.Name).toBe('DATABASE_URL');
    expect(JSON.stringify(secret!.ValueFrom)).toMatch(/:secret:prod\/backend\/database:url::"/);
  });
});

describe('queue-depth autoscaling', () => {
  it('is off by default', { timeout: SYNTH_TIMEOUT }, () => {
    synthScenario('prodCampaign').template.resourceCountIs('AWS::ApplicationAutoScaling::ScalableTarget', 0);
  });

  it('scales between min and max tasks on the dimensionless DueJobs total (not runs scheduled for later)', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodAutoscaling');
    template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', {
      MinCapacity: 2,
      MaxCapacity: 6,
      ScalableDimension: 'ecs:service:DesiredCount',
    });
    expect(alarmsOnMetric(template, 'QueuedJobs')).toEqual([]);
    const scalingAlarms = alarmsOnMetric(template, 'DueJobs');
    expect(scalingAlarms.map((alarm) => [alarm.Properties.ComparisonOperator, alarm.Properties.Threshold]).sort()).toEqual([
      ['GreaterThanOrEqualToThreshold', 1],
      ['LessThanOrEqualToThreshold', 0],
    ]);
    for (const alarm of scalingAlarms) {
      expect(alarm.Properties).toMatchObject({ Namespace: 'BulkImport/prod', EvaluationPeriods: 3, Period: 60 });
      expect(alarm.Properties.Dimensions).toBeUndefined();
    }
    template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      StepScalingPolicyConfiguration: { StepAdjustments: [{ MetricIntervalUpperBound: 0, ScalingAdjustment: -1 }] },
    });
    template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
      StepScalingPolicyConfiguration: {
        StepAdjustments: [
          { MetricIntervalLowerBound: 0, MetricIntervalUpperBound: 99, ScalingAdjustment: 1 },
          { MetricIntervalLowerBound: 99, ScalingAdjustment: 3 },
        ],
      },
    });
  });

  it('is not created while desiredCount is 0 (the stop switch wins)', { timeout: SYNTH_TIMEOUT }, () => {
    synthScenario('prodStopped').template.resourceCountIs('AWS::ApplicationAutoScaling::ScalableTarget', 0);
  });

  it('leaves the count out of the service, so no deploy resets an autoscaled fleet; without autoscaling it is there', { timeout: SYNTH_TIMEOUT }, () => {
    // A service update that names DesiredCount sets it: every deploy that changes the service (an image, the campaign
    // mount) would put the fleet back to the template's count. minCapacity seeds it instead; campaign.sh sets it.
    const autoscaled = singleResource(synthScenario('prodAutoscaling').template, 'AWS::ECS::Service');
    expect(autoscaled.Properties).not.toHaveProperty('DesiredCount');
    expect(singleResource(synthScenario('prodCampaign').template, 'AWS::ECS::Service').Properties.DesiredCount).toBe(2);
    expect(singleResource(synthScenario('prodStopped').template, 'AWS::ECS::Service').Properties.DesiredCount).toBe(0);
    // What campaign.sh sets the service to after its deploy: the count asked for, with or without autoscaling.
    const outputs = (name: ScenarioName) => synthScenario(name).template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(outputs('prodAutoscaling').DesiredCount!.Value).toBe('2');
    expect(outputs('prodCampaign').DesiredCount!.Value).toBe('2');
    expect(outputs('prodStopped').DesiredCount!.Value).toBe('0');
  });
});

describe('outputs', () => {
  it('names the service, task family, cluster, log group and alarms', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('prodCampaign');
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    expect(outputs.ServiceName!.Value).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/^WorkerService/), 'Name'] });
    expect(outputs.TaskFamily!.Value).toBe('bulk-import-worker-prod');
    expect(outputs.ClusterName!.Value).toEqual({ Ref: expect.stringMatching(/^WorkerCluster/) });
    expect(outputs.LogGroupName!.Value).toEqual({ Ref: expect.stringMatching(/^WorkerLogGroup/) });
    expect(outputs.ImportCampaign!.Value).toBe('on');
    const alarmIds = resourcesOfType(template, 'AWS::CloudWatch::Alarm').map(([id]) => ({ Ref: id }));
    expect(outputs.AlarmNames!.Value).toEqual({ 'Fn::Join': ['', alarmIds.flatMap((id, index) => (index === 0 ? [id] : [',', id]))] });
  });

  it('lists every alarm of the environment', { timeout: SYNTH_TIMEOUT }, () => {
    const { template } = synthScenario('stagingBaseline');
    const outputs = template.toJSON().Outputs as Record<string, { Value: unknown }>;
    const alarms = resourcesOfType(template, 'AWS::CloudWatch::Alarm');
    expect(JSON.stringify(outputs.AlarmNames!.Value).match(/"Ref"/g)).toHaveLength(alarms.length);
    expect(outputs.ImportCampaign!.Value).toBe('off');
    expect(outputs.ClusterName).toBeDefined();
  });
});
