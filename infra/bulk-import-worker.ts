// The bulk-import worker as one construct: the Fargate service that runs `bulk-import worker` from the backend's
// image, its task and execution roles (least privilege), logs, the campaign-only read-only EFS mount at /import,
// the alarms that page on-call, and optional queue-depth autoscaling. Every input is a typed prop with a stated
// default; the stack (bulk-import-worker-stack.ts) only turns context into these props.
import { ArnFormat, Duration, RemovalPolicy, Size, Stack, Validations } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as efs from 'aws-cdk-lib/aws-efs';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsTargets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import {
  AUDIT_TASK_COMMAND,
  type BulkImportWorkerProps,
  DEFAULT_AUDIT_SCHEDULE,
  HEALTHCHECK_COMMAND,
  HEARTBEAT_FILE,
  IMPORT_ROOT,
  LOG_STREAM_PREFIX,
  type ResolvedProps,
  resolveProps,
  WORKER_GID,
  WORKER_UID,
  type WorkerAutoscaling,
} from './bulk-import-worker-props.js';
import { acknowledgeWildcardResource } from './nag.js';

export * from './bulk-import-worker-props.js';

export class BulkImportWorker extends Construct {
  readonly service: ecs.FargateService;
  readonly taskDefinition: ecs.FargateTaskDefinition;
  readonly container: ecs.ContainerDefinition;
  readonly cluster: ecs.ICluster;
  readonly vpc: ec2.IVpc;
  readonly logGroup: logs.LogGroup;
  readonly securityGroup: ec2.SecurityGroup;
  readonly alarmTopic: sns.ITopic;
  readonly importFileSystem: efs.IFileSystem;
  readonly importAccessPoint: efs.IAccessPoint;
  /** Alarms in creation order: no running tasks (prod with tasks only), dead jobs, oldest queued age, audit findings. */
  readonly alarms: cloudwatch.Alarm[] = [];
  readonly runningTasksAlarm: cloudwatch.Alarm | undefined;
  readonly deadJobsAlarm: cloudwatch.Alarm;
  readonly oldestQueuedAgeAlarm: cloudwatch.Alarm;
  readonly auditFindingsAlarm: cloudwatch.Alarm;
  /** The nightly data-consistency audit (undefined when `auditSchedule` is null). */
  readonly auditRule: events.Rule | undefined;
  readonly scalableTarget: ecs.ScalableTaskCount | undefined;
  readonly metricsNamespace: string;

  constructor(scope: Construct, id: string, props: BulkImportWorkerProps) {
    super(scope, id);
    const resolved = resolveProps(this, props);
    const env = props.environmentName;
    const baseName = `bulk-import-worker-${env}`;
    this.metricsNamespace = resolved.metricsNamespace;

    this.vpc = props.vpc ?? this.createVpc();
    const taskSubnets = props.taskSubnets ?? { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
    this.cluster =
      props.cluster ??
      new ecs.Cluster(this, 'Cluster', {
        vpc: this.vpc,
        clusterName: baseName,
        // RunningTaskCount only exists with Container Insights.
        containerInsightsV2: ecs.ContainerInsights.ENABLED,
      });

    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: this.vpc,
      description: `bulk-import worker tasks (${env}): no inbound; HTTPS to AWS APIs, Postgres, NFS when a campaign is on`,
      allowAllOutbound: false,
    });
    this.securityGroup.addEgressRule(
      ec2.Peer.anyIpv4(),
      ec2.Port.tcp(443),
      'HTTPS to S3, CloudWatch, Secrets Manager, ECR and ECS APIs',
    );
    this.allowDatabase(props, resolved.databasePort);

    const imported = props.importFileSystem;
    this.importFileSystem = imported?.fileSystem ?? this.createImportFileSystem(taskSubnets);
    this.importAccessPoint =
      imported?.accessPoint ??
      new efs.AccessPoint(this, 'ImportAccessPoint', {
        fileSystem: this.importFileSystem,
        path: IMPORT_ROOT,
        createAcl: { ownerUid: `${WORKER_UID}`, ownerGid: `${WORKER_GID}`, permissions: '0755' },
        posixUser: { uid: `${WORKER_UID}`, gid: `${WORKER_GID}` },
      });

    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: resolved.logRetention,
      // Logs of an import are its audit trail; keep them when the stack goes.
      removalPolicy: RemovalPolicy.RETAIN,
    });

    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'TaskDefinition', {
      family: baseName,
      cpu: resolved.cpu,
      memoryLimitMiB: resolved.memoryLimitMiB,
      runtimePlatform: {
        cpuArchitecture: props.cpuArchitecture ?? ecs.CpuArchitecture.X86_64,
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
      },
    });
    // The root file system is read-only; /tmp (heartbeat file, temp files) is a task volume on ephemeral storage.
    this.taskDefinition.addVolume({ name: 'tmp' });

    const linuxParameters = new ecs.LinuxParameters(this, 'LinuxParameters', { initProcessEnabled: true });
    linuxParameters.dropCapabilities(ecs.Capability.ALL);

    this.container = this.taskDefinition.addContainer('worker', {
      containerName: 'worker',
      image: ecs.ContainerImage.fromEcrRepository(props.repository, props.imageTag),
      command: resolved.command,
      essential: true,
      user: `${WORKER_UID}:${WORKER_GID}`,
      readonlyRootFilesystem: true,
      linuxParameters,
      stopTimeout: resolved.stopTimeout,
      healthCheck: {
        command: ['CMD', ...HEALTHCHECK_COMMAND],
        interval: Duration.seconds(30),
        timeout: Duration.seconds(10),
        retries: 3,
        startPeriod: Duration.seconds(60),
      },
      environment: {
        S3_BUCKET: props.bucket.bucketName,
        AWS_REGION: Stack.of(this).region,
        IMPORT_ROOT,
        LOG_LEVEL: resolved.logLevel,
        LOG_FORMAT: 'json',
        METRICS_NAMESPACE: resolved.metricsNamespace,
        WORKER_CONCURRENCY: `${resolved.workerConcurrency}`,
        WORKER_SHUTDOWN_GRACE_MS: `${resolved.shutdownGrace.toMilliseconds()}`,
        HEALTH_HEARTBEAT_FILE: HEARTBEAT_FILE,
        DATABASE_SSL_MODE: resolved.databaseSslMode,
        ...(resolved.databaseSslRootCert ? { DATABASE_SSL_ROOT_CERT: resolved.databaseSslRootCert } : {}),
        ...(resolved.databaseIamAuth ? { DATABASE_IAM_AUTH: 'true' } : {}),
      },
      secrets: {
        DATABASE_URL: ecs.Secret.fromSecretsManager(props.databaseSecret, props.databaseSecretJsonField),
      },
      logging: ecs.LogDrivers.awsLogs({
        logGroup: this.logGroup,
        streamPrefix: LOG_STREAM_PREFIX,
        // A slow log pipeline must not block the worker's stdout (and stall its jobs); the buffer absorbs bursts.
        mode: ecs.AwsLogDriverMode.NON_BLOCKING,
        maxBufferSize: Size.mebibytes(25),
      }),
    });
    this.container.addMountPoints({ sourceVolume: 'tmp', containerPath: '/tmp', readOnly: false });

    if (props.importCampaign) this.mountImportFileSystem();
    const bucketObjectsArn = props.bucket.arnForObjects(`${resolved.bucketPrefix}*`);
    const taskProtectionArn = Stack.of(this).formatArn({
      service: 'ecs',
      resource: 'task',
      resourceName: `${this.cluster.clusterName}/*`,
    });
    this.grantTaskPermissions(props, resolved, bucketObjectsArn, taskProtectionArn);

    this.service = new ecs.FargateService(this, 'Service', {
      cluster: this.cluster,
      serviceName: baseName,
      taskDefinition: this.taskDefinition,
      desiredCount: resolved.desiredCount,
      vpcSubnets: taskSubnets,
      assignPublicIp: false,
      securityGroups: [this.securityGroup],
      // A worker serves no traffic: start replacements first (no dip in capacity), let old tasks drain on SIGTERM,
      // and roll back to the last good task definition when new tasks keep failing to start or stay unhealthy.
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { enable: true, rollback: true },
      enableExecuteCommand: false,
      propagateTags: ecs.PropagatedTagSource.SERVICE,
      enableECSManagedTags: true,
    });

    this.alarmTopic = props.alarmTopic ?? this.createAlarmTopic(env);
    if (props.alarmEmail) this.alarmTopic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    const alarmAction = new cloudwatchActions.SnsAction(this.alarmTopic);

    const runningFloor = resolved.autoscaling ? resolved.autoscaling.minTasks : resolved.desiredCount;
    if (env === 'prod' && runningFloor > 0) {
      this.runningTasksAlarm = new cloudwatch.Alarm(this, 'NoRunningTasksAlarm', {
        alarmName: `${baseName}-no-running-tasks`,
        alarmDescription:
          `No bulk-import worker task has run for 5 minutes although ${runningFloor} should (${env}). ` +
          'Missing data counts as breaching: with tasks expected, no datapoint means none reported. ' +
          'See docs/DEPLOYMENT.md §5.',
        metric: new cloudwatch.Metric({
          namespace: 'ECS/ContainerInsights',
          metricName: 'RunningTaskCount',
          dimensionsMap: { ClusterName: this.cluster.clusterName, ServiceName: this.service.serviceName },
          statistic: cloudwatch.Stats.MAXIMUM,
          period: Duration.minutes(1),
        }),
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        evaluationPeriods: 5,
        datapointsToAlarm: 5,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
      });
    }
    this.deadJobsAlarm = new cloudwatch.Alarm(this, 'DeadJobsAlarm', {
      alarmName: `${baseName}-dead-jobs`,
      alarmDescription:
        `Jobs reached the dead-letter state (${env}): they used up their attempts and need an operator ` +
        '(bulk-import dead list / replay / purge). See docs/DEPLOYMENT.md §5.',
      metric: this.queueMetric('DeadJobs', Duration.minutes(1)),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    this.oldestQueuedAgeAlarm = new cloudwatch.Alarm(this, 'OldestQueuedAgeAlarm', {
      alarmName: `${baseName}-oldest-queued-age`,
      alarmDescription:
        `The oldest due job has waited more than ${resolved.oldestQueuedAgeThreshold.toSeconds()} s (${env}): ` +
        'workers are saturated, stuck or stopped. See docs/DEPLOYMENT.md §5.',
      metric: this.queueMetric('OldestQueuedAgeSeconds', Duration.minutes(1)),
      threshold: resolved.oldestQueuedAgeThreshold.toSeconds(),
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 3,
      datapointsToAlarm: 3,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    // The audit publishes AuditFindings (dimension Kind = audit) once per run; between runs there is no datapoint and
    // the alarm keeps its state, so it stays in ALARM until an audit finds nothing.
    this.auditFindingsAlarm = new cloudwatch.Alarm(this, 'AuditFindingsAlarm', {
      alarmName: `${baseName}-audit-findings`,
      alarmDescription:
        `The data-consistency audit found rows that imports wrote and that no longer hold (${env}): dangling reference ids, ` +
        'CSV runs whose rows went missing, documents without objects. bulk-import audit runs; audit findings <id> --csv; ' +
        'docs/RUNBOOK.md "Audit findings".',
      metric: new cloudwatch.Metric({
        namespace: this.metricsNamespace,
        metricName: 'AuditFindings',
        dimensionsMap: { Kind: 'audit' },
        statistic: cloudwatch.Stats.MAXIMUM,
        period: Duration.hours(1),
      }),
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.IGNORE,
    });
    for (const alarm of [this.runningTasksAlarm, this.deadJobsAlarm, this.oldestQueuedAgeAlarm, this.auditFindingsAlarm]) {
      if (!alarm) continue;
      alarm.addAlarmAction(alarmAction);
      alarm.addOkAction(alarmAction);
      this.alarms.push(alarm);
    }

    const auditSchedule = props.auditSchedule === undefined ? DEFAULT_AUDIT_SCHEDULE : props.auditSchedule;
    if (auditSchedule !== null) {
      this.auditRule = new events.Rule(this, 'AuditSchedule', {
        description: `Nightly data-consistency audit of what bulk imports wrote (${env}): bulk-import audit start, then a worker for it`,
        schedule: auditSchedule,
      });
      const eventsRole = new iam.Role(this, 'AuditScheduleRole', {
        assumedBy: new iam.ServicePrincipal('events.amazonaws.com'),
        description: `Starts the nightly audit task of the bulk-import worker (${env})`,
      });
      this.auditRule.addTarget(
        new eventsTargets.EcsTask({
          role: eventsRole,
          cluster: this.cluster,
          taskDefinition: this.taskDefinition,
          taskCount: 1,
          subnetSelection: taskSubnets,
          securityGroups: [this.securityGroup],
          assignPublicIp: false,
          containerOverrides: [{ containerName: 'worker', command: AUDIT_TASK_COMMAND }],
        }),
      );
      const eventsPolicy = eventsRole.node.tryFindChild('DefaultPolicy');
      if (eventsPolicy) {
        acknowledgeWildcardResource(
          eventsPolicy,
          // Spelled as CDK's EcsTask target spells it (the cluster's partition and region: literals when the stack's
          // environment is known, tokens when not), so the acknowledgement matches in both cases.
          `arn:${this.cluster.stack.partition}:ecs:${this.cluster.env.region}:*:task/${this.cluster.clusterName}/*`,
          'EventBridge tags the audit task it starts (ecs:TagResource, added by CDK); task ids exist only at run time, ' +
            'and the grant is limited to tasks of this one cluster (task/<cluster>/*). RunTask is on this task definition only.',
        );
      }
    }

    if (resolved.autoscaling) this.scalableTarget = this.addAutoscaling(resolved.autoscaling);
    this.acknowledgeNagFindings(bucketObjectsArn, taskProtectionArn);
  }

  /** A dimensionless queue total the worker publishes (`QueuedJobs`, `OldestQueuedAgeSeconds`, …). */
  queueMetric(metricName: string, period: Duration): cloudwatch.Metric {
    return new cloudwatch.Metric({
      namespace: this.metricsNamespace,
      metricName,
      statistic: cloudwatch.Stats.MAXIMUM,
      period,
    });
  }

  private createVpc(): ec2.Vpc {
    const flowLogGroup = new logs.LogGroup(this, 'VpcFlowLogs', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: 1,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'private', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
      ],
      flowLogs: {
        rejected: {
          destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogGroup),
          trafficType: ec2.FlowLogTrafficType.REJECT,
        },
      },
    });
    // Campaign bytes go to S3 through the gateway endpoint, not through (and billed by) the NAT gateway.
    vpc.addGatewayEndpoint('S3Endpoint', { service: ec2.GatewayVpcEndpointAwsService.S3 });
    return vpc;
  }

  private createImportFileSystem(taskSubnets: ec2.SubnetSelection): efs.FileSystem {
    const fileSystemSecurityGroup = new ec2.SecurityGroup(this, 'ImportFileSystemSecurityGroup', {
      vpc: this.vpc,
      description: 'bulk-import campaign file system: NFS from the worker only while a campaign is on',
      allowAllOutbound: false,
    });
    return new efs.FileSystem(this, 'ImportFileSystem', {
      vpc: this.vpc,
      vpcSubnets: taskSubnets,
      securityGroup: fileSystemSecurityGroup,
      encrypted: true,
      performanceMode: efs.PerformanceMode.GENERAL_PURPOSE,
      throughputMode: efs.ThroughputMode.ELASTIC,
      // The share is the campaign's source of truth until it has been imported; never delete it with the stack.
      removalPolicy: RemovalPolicy.RETAIN,
      // With a file system policy in place EFS authorises every client against it. Ours only denies clients
      // without TLS and allows nothing: anonymous (non-IAM) mounts match no Allow and fail, and an IAM client gets
      // exactly what its own policy grants (the worker: ClientMount, a read-only mount). `allowAnonymousAccess:
      // true` is how CDK is told not to append its default statement, which would give ClientWrite and
      // ClientRootAccess to every principal that comes through a mount target.
      allowAnonymousAccess: true,
      fileSystemPolicy: new iam.PolicyDocument({
        statements: [
          new iam.PolicyStatement({
            sid: 'DenyWithoutTls',
            effect: iam.Effect.DENY,
            principals: [new iam.AnyPrincipal()],
            actions: ['*'],
            conditions: { Bool: { 'aws:SecureTransport': 'false' } },
          }),
        ],
      }),
    });
  }

  private allowDatabase(props: BulkImportWorkerProps, port: number): void {
    const description = 'Postgres (DATABASE_URL)';
    if (props.databaseSecurityGroup) {
      this.securityGroup.connections.allowTo(props.databaseSecurityGroup, ec2.Port.tcp(port), description);
      return;
    }
    const cidr = tryVpcCidr(this.vpc);
    this.securityGroup.addEgressRule(cidr ? ec2.Peer.ipv4(cidr) : ec2.Peer.anyIpv4(), ec2.Port.tcp(port), description);
  }

  /** Campaign on: the EFS volume, mounted read-only at /import, over TLS, authorised by the task role. */
  private mountImportFileSystem(): void {
    this.taskDefinition.addVolume({
      name: 'import',
      efsVolumeConfiguration: {
        fileSystemId: this.importFileSystem.fileSystemId,
        transitEncryption: 'ENABLED',
        authorizationConfig: { accessPointId: this.importAccessPoint.accessPointId, iam: 'ENABLED' },
      },
    });
    this.container.addMountPoints({ sourceVolume: 'import', containerPath: IMPORT_ROOT, readOnly: true });
    this.importFileSystem.connections.allowDefaultPortFrom(this.securityGroup, 'NFS from bulk-import workers (campaign)');
  }

  private grantTaskPermissions(
    props: BulkImportWorkerProps,
    resolved: ResolvedProps,
    bucketObjectsArn: string,
    taskProtectionArn: string,
  ): void {
    const role = this.taskDefinition.taskRole;
    const stack = Stack.of(this);
    const bucketPrefix = resolved.bucketPrefix;
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ImportObjects',
        actions: ['s3:PutObject', 's3:GetObject', 's3:AbortMultipartUpload'],
        resources: [bucketObjectsArn],
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ListImportPrefix',
        actions: ['s3:ListBucket'],
        resources: [props.bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [`${bucketPrefix}*`] } },
      }),
    );
    if (props.bucketEncryptionKey) {
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'ImportBucketKey',
          actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
          resources: [props.bucketEncryptionKey.keyArn],
          conditions: { StringEquals: { 'kms:ViaService': `s3.${stack.region}.${stack.urlSuffix}` } },
        }),
      );
    }
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'PutMetricsInNamespace',
        actions: ['cloudwatch:PutMetricData'],
        resources: ['*'],
        conditions: { StringEquals: { 'cloudwatch:namespace': this.metricsNamespace } },
      }),
    );
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'OwnTaskScaleInProtection',
        actions: ['ecs:UpdateTaskProtection', 'ecs:GetTaskProtection'],
        // The task ARN (task/<cluster>/<id>) already limits this to tasks of the worker's cluster.
        resources: [taskProtectionArn],
      }),
    );
    if (resolved.databaseIamAuth) {
      const { resourceId, user } = resolved.databaseIamAuth;
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'ConnectAsDatabaseUser',
          // One user of one database: arn:<partition>:rds-db:<region>:<account>:dbuser:<resource id>/<user>.
          actions: ['rds-db:connect'],
          resources: [
            stack.formatArn({
              service: 'rds-db',
              resource: 'dbuser',
              resourceName: `${resourceId}/${user}`,
              arnFormat: ArnFormat.COLON_RESOURCE_NAME,
            }),
          ],
        }),
      );
    }
    if (props.importCampaign) {
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'MountImportReadOnly',
          // ClientMount alone is a read-only mount; ClientWrite and ClientRootAccess are deliberately absent.
          actions: ['elasticfilesystem:ClientMount'],
          resources: [this.importFileSystem.fileSystemArn],
          conditions: {
            StringEquals: { 'elasticfilesystem:AccessPointArn': this.importAccessPoint.accessPointArn },
            Bool: { 'elasticfilesystem:AccessedViaMountTarget': 'true' },
          },
        }),
      );
    }
  }

  private createAlarmTopic(env: string): sns.Topic {
    const key = new kms.Key(this, 'AlarmTopicKey', {
      description: `Encrypts the bulk-import worker alarm topic (${env})`,
      enableKeyRotation: true,
    });
    // CloudWatch encrypts the notifications it publishes to the topic with this key: without this statement every
    // alarm action fails with a KMS AccessDenied and nobody is paged (AWS-managed SNS keys cannot be used at all).
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsUseKey',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['kms:Decrypt', 'kms:GenerateDataKey*'],
        resources: ['*'],
      }),
    );
    const topic = new sns.Topic(this, 'AlarmTopic', {
      displayName: `bulk-import worker alarms (${env})`,
      masterKey: key,
      // A topic policy (the TLS deny) replaces SNS's default policy, so CloudWatch needs its own Allow below.
      enforceSSL: true,
    });
    const stack = Stack.of(this);
    topic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'CloudWatchAlarmsPublish',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [topic.topicArn],
        conditions: {
          ArnLike: { 'aws:SourceArn': stack.formatArn({ service: 'cloudwatch', resource: 'alarm', resourceName: '*', arnFormat: ArnFormat.COLON_RESOURCE_NAME }) },
          StringEquals: { 'aws:SourceAccount': stack.account },
        },
      }),
    );
    return topic;
  }

  private addAutoscaling(autoscaling: Required<WorkerAutoscaling>): ecs.ScalableTaskCount {
    const scaling = this.service.autoScaleTaskCount({
      minCapacity: autoscaling.minTasks,
      maxCapacity: autoscaling.maxTasks,
    });
    // Scale-in only ever removes idle tasks: a task holding leases protects itself from scale-in (ECS task
    // protection), so "nothing queued" cannot interrupt a running campaign.
    scaling.scaleOnMetric('QueueDepthScaling', {
      metric: this.queueMetric('QueuedJobs', Duration.minutes(1)),
      scalingSteps: [
        { upper: 0, change: -1 },
        { lower: autoscaling.scaleOutQueuedJobs, change: +1 },
        { lower: autoscaling.burstQueuedJobs, change: +3 },
      ],
      adjustmentType: appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
      evaluationPeriods: 3,
      datapointsToAlarm: 3,
      cooldown: Duration.minutes(3),
    });
    return scaling;
  }

  /** Each acknowledged cdk-nag finding, next to the resource it is about, with the reason a reviewer needs. */
  private acknowledgeNagFindings(bucketObjectsArn: string, taskProtectionArn: string): void {
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason:
        'The plain environment variables are non-secret settings (bucket name, region, log level, namespace, ' +
        'concurrency, drain time, paths, the database TLS mode and CA bundle path, the IAM authentication switch); ' +
        'the only credential, DATABASE_URL, comes from Secrets Manager.',
    });
    const taskPolicy = this.taskDefinition.taskRole.node.tryFindChild('DefaultPolicy');
    if (taskPolicy) {
      acknowledgeWildcardResource(
        taskPolicy,
        bucketObjectsArn,
        'Object keys are generated per imported file, so the grant covers the objects under the import prefix of ' +
          'the one import bucket, for PutObject/GetObject/AbortMultipartUpload only.',
      );
      acknowledgeWildcardResource(
        taskPolicy,
        '*',
        'cloudwatch:PutMetricData has no resource-level permissions; the statement is limited to the worker ' +
          'namespace by the cloudwatch:namespace condition.',
      );
      acknowledgeWildcardResource(
        taskPolicy,
        taskProtectionArn,
        'Task ids exist only at run time; a task reaches the protection API only through its own ECS agent, and ' +
          'the grant is limited to two actions on tasks of this one cluster (task/<cluster>/*).',
      );
    }
    const executionPolicy = this.taskDefinition.executionRole?.node.tryFindChild('DefaultPolicy');
    if (executionPolicy) {
      acknowledgeWildcardResource(
        executionPolicy,
        '*',
        'ecr:GetAuthorizationToken (added by CDK for the image pull) has no resource-level permissions; every ' +
          'other execution-role action is on the one repository, log group and secret.',
      );
    }
  }
}

/** The VPC's CIDR when it is known (created, looked up, or imported with vpcCidrBlock). */
function tryVpcCidr(vpc: ec2.IVpc): string | undefined {
  try {
    return vpc.vpcCidrBlock;
  } catch {
    return undefined;
  }
}

