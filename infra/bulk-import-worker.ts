// The bulk-import worker as one construct: the Fargate service that runs `bulk-import worker` from the backend's
// image, its task and execution roles (least privilege), logs, the campaign-only read-only EFS mount at /import,
// the alarms that page on-call (infra/alarms.ts), the nightly audit task and optional queue-depth autoscaling.
// Every input is a typed prop with a stated default; the stack (bulk-import-worker-stack.ts) only turns context into
// these props.
import { Duration, RemovalPolicy, Size, Stack, Validations } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import type * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as efs from 'aws-cdk-lib/aws-efs';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsTargets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import { Construct } from 'constructs';
import { DEFAULT_HEARTBEAT_FILE, DEFAULT_IMPORT_ROOT } from '../worker/config.js';
import { CSV_UPLOAD_PREFIX } from '../worker/imports/csv/payload.js';
import { AdminApi, databaseConnectArn } from './admin-api.js';
import { createAlarms, createAlarmTopic, type QueueGauge, queueGaugeMetric, type WorkerAlarms } from './alarms.js';
import {
  auditTaskCommand,
  type BulkImportWorkerProps,
  DEFAULT_AUDIT_SCHEDULE,
  HEALTHCHECK_COMMAND,
  LOG_STREAM_PREFIX,
  type ResolvedProps,
  resolveProps,
  WORKER_GID,
  WORKER_UID,
  type WorkerAutoscaling,
  WorkerPropsError,
} from './bulk-import-worker-props.js';
import { createGaugesSchedule, type GaugesSchedule } from './gauges-schedule.js';
import { acknowledgeImagePullAuthorization, acknowledgeWildcardResource } from './nag.js';
import { allowHttps, allowPostgres, createInterfaceEndpoints, type HttpsRoute, limitS3Endpoint } from './network.js';
import { addNotifications, type Notifications } from './notifications.js';
import { scheduledTaskRole, taskFamilyArn } from './scheduled-task.js';
import { addTracingSidecar } from './tracing.js';
import { healthCheckStartPeriodSeconds } from './worker-environment.js';

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
  /** Every alarm, in the order of WorkerAlarms.all (infra/alarms.ts). */
  readonly alarms: cloudwatch.Alarm[];
  /** The alarms by name, including the per-kind ones. */
  readonly workerAlarms: WorkerAlarms;
  /** Fewer tasks running than desired (Container Insights' live counts). */
  readonly runningTasksAlarm: cloudwatch.Alarm;
  readonly deadJobsAlarm: cloudwatch.Alarm;
  readonly oldestQueuedAgeAlarm: cloudwatch.Alarm;
  readonly auditFindingsAlarm: cloudwatch.Alarm;
  /** The nightly data-consistency audit (undefined when `auditSchedule` is null). */
  readonly auditRule: events.Rule | undefined;
  readonly scalableTarget: ecs.ScalableTaskCount | undefined;
  readonly metricsNamespace: string;
  /** The scheduled task that publishes the queue gauges while no worker may run. */
  readonly gaugesSchedule: GaugesSchedule;
  /** The ADOT collector sidecar (undefined unless `tracing`). */
  readonly tracingCollector: ecs.ContainerDefinition | undefined;
  /** The run-notifications topic (undefined unless `notificationsTopic` is given). */
  readonly notifications: Notifications | undefined;
  /** The admin API service and its load balancer (undefined unless `adminApi` is given). */
  readonly adminApi: AdminApi | undefined;
  private readonly baseName: string;
  private readonly taskSubnets: ec2.SubnetSelection;
  /** The S3 gateway endpoint of a VPC this construct created. */
  private createdS3Endpoint: ec2.GatewayVpcEndpoint | undefined;
  private readonly httpsRoute: HttpsRoute;

  constructor(scope: Construct, id: string, props: BulkImportWorkerProps) {
    super(scope, id);
    const resolved = resolveProps(this, props);
    const env = props.environmentName;
    this.baseName = `bulk-import-worker-${env}`;
    this.metricsNamespace = resolved.metricsNamespace;

    this.vpc = props.vpc ?? this.createVpc();
    this.taskSubnets = props.taskSubnets ?? { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS };
    this.cluster =
      props.cluster ??
      new ecs.Cluster(this, 'Cluster', {
        vpc: this.vpc,
        clusterName: this.baseName,
        // RunningTaskCount only exists with Container Insights.
        containerInsightsV2: ecs.ContainerInsights.ENABLED,
        ...(props.fargateSpot ? { enableFargateCapacityProviders: true } : {}),
      });
    this.httpsRoute = this.createHttpsRoute(props, resolved.bucketPrefix);
    this.securityGroup = this.createSecurityGroup(props, resolved);

    const imported = props.importFileSystem;
    this.importFileSystem = imported?.fileSystem ?? this.createImportFileSystem();
    this.importAccessPoint =
      imported?.accessPoint ??
      new efs.AccessPoint(this, 'ImportAccessPoint', {
        fileSystem: this.importFileSystem,
        path: DEFAULT_IMPORT_ROOT,
        createAcl: { ownerUid: `${WORKER_UID}`, ownerGid: `${WORKER_GID}`, permissions: '0755' },
        posixUser: { uid: `${WORKER_UID}`, gid: `${WORKER_GID}` },
      });

    this.logGroup = new logs.LogGroup(this, 'LogGroup', {
      retention: resolved.logRetentionDays,
      // Logs of an import are its audit trail; keep them when the stack goes.
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.taskDefinition = this.createTaskDefinition(props, resolved);
    this.container = this.addWorkerContainer(props, resolved);
    const { tracingCollectorImage, notifyStates } = resolved.observability;
    if (tracingCollectorImage) {
      this.tracingCollector = addTracingSidecar(this.taskDefinition, this.container, {
        image: tracingCollectorImage,
        environmentName: env,
        logGroup: this.logGroup,
        streamPrefix: LOG_STREAM_PREFIX,
      });
    }
    if (props.notificationsTopic) {
      this.notifications = addNotifications(this, this.container, this.taskDefinition.taskRole, {
        environmentName: env,
        topic: props.notificationsTopic,
        notifyStates,
        adminBaseUrl: props.adminBaseUrl,
      });
    } else {
      // Nothing publishes: the workers turn the outbox off for the database (a worker without a topic would otherwise
      // leave the settings as they were, and a stack that dropped its topic would keep writing rows nobody sends).
      this.container.addEnvironment('NOTIFY_STATES', 'none');
    }
    if (props.importCampaign) this.mountImportFileSystem();
    const bucketObjectsArn = props.bucket.arnForObjects(`${resolved.bucketPrefix}*`);
    const taskProtectionArn = Stack.of(this).formatArn({
      service: 'ecs',
      resource: 'task',
      resourceName: `${this.cluster.clusterName}/*`,
    });
    this.grantTaskPermissions(props, resolved, bucketObjectsArn, taskProtectionArn);
    this.service = this.createService(resolved);
    if (props.adminApi) this.adminApi = this.createAdminApi(props, resolved);

    this.alarmTopic = props.alarmTopic ?? createAlarmTopic(this, env);
    if (props.alarmEmail) this.alarmTopic.addSubscription(new subscriptions.EmailSubscription(props.alarmEmail));
    const alarms = createAlarms(this, {
      environmentName: env,
      baseName: this.baseName,
      metricsNamespace: this.metricsNamespace,
      cluster: this.cluster,
      service: this.service,
      oldestQueuedAgeAlarmSeconds: resolved.oldestQueuedAgeAlarmSeconds,
      ...resolved.observability,
      topic: this.alarmTopic,
      noticeTopic: props.noticeTopic,
    });
    this.workerAlarms = alarms;
    this.runningTasksAlarm = alarms.runningBelowDesired;
    this.deadJobsAlarm = alarms.deadJobs;
    this.oldestQueuedAgeAlarm = alarms.oldestQueuedAge;
    this.auditFindingsAlarm = alarms.auditFindings;
    this.alarms = alarms.all;

    const auditSchedule = props.auditSchedule === undefined ? DEFAULT_AUDIT_SCHEDULE : props.auditSchedule;
    if (auditSchedule !== null) this.auditRule = this.createAuditSchedule(auditSchedule, env, auditTaskCommand(resolved.bucketPrefix));
    this.gaugesSchedule = createGaugesSchedule(this, {
      environmentName: env,
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      containerName: this.container.containerName,
      subnets: this.taskSubnets,
      securityGroup: this.securityGroup,
      intervalMinutes: resolved.observability.gaugesScheduleMinutes,
    });
    if (resolved.autoscaling) this.scalableTarget = this.addAutoscaling(resolved.autoscaling);
    this.acknowledgeNagFindings(bucketObjectsArn, taskProtectionArn);
  }

  /** A dimensionless queue total the worker publishes (`QueuedJobs`, `OldestQueuedAgeSeconds`, …). */
  queueMetric(gauge: QueueGauge, period: Duration): cloudwatch.Metric {
    return queueGaugeMetric(this.metricsNamespace, gauge, period);
  }

  /** No inbound; HTTPS out, Postgres to the database, NFS to the campaign file system while a campaign is on. */
  private createSecurityGroup(props: BulkImportWorkerProps, resolved: ResolvedProps): ec2.SecurityGroup {
    const securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: this.vpc,
      description: `bulk-import worker tasks (${props.environmentName}): no inbound; HTTPS to AWS APIs, Postgres, NFS when a campaign is on`,
      allowAllOutbound: false,
    });
    allowHttps(securityGroup, this.httpsRoute, 'HTTPS to S3, CloudWatch, Secrets Manager, ECR and ECS APIs');
    allowPostgres(securityGroup, this.vpc, {
      securityGroup: props.databaseSecurityGroup,
      cidr: props.databaseCidr,
      port: resolved.databasePort,
    });
    return securityGroup;
  }

  /** With `vpcEndpoints`: the interface endpoints, the S3 gateway endpoint limited to the bucket, HTTPS only to them. */
  private createHttpsRoute(props: BulkImportWorkerProps, bucketPrefix: string): HttpsRoute {
    if (!props.vpcEndpoints) return { kind: 'anywhere' };
    const endpoints = createInterfaceEndpoints(this, this.vpc, this.taskSubnets);
    const s3Endpoint =
      this.createdS3Endpoint ??
      new ec2.GatewayVpcEndpoint(this, 'S3Endpoint', { vpc: this.vpc, service: ec2.GatewayVpcEndpointAwsService.S3, subnets: [this.taskSubnets] });
    limitS3Endpoint(s3Endpoint, props.bucket, bucketPrefix);
    return { kind: 'endpoints', endpoints, s3PrefixListId: props.vpcEndpoints.s3PrefixListId };
  }

  private createTaskDefinition(props: BulkImportWorkerProps, resolved: ResolvedProps): ecs.FargateTaskDefinition {
    const taskDefinition = new ecs.FargateTaskDefinition(this, 'TaskDefinition', {
      family: this.baseName,
      cpu: resolved.cpu,
      memoryLimitMiB: resolved.memoryMiB,
      runtimePlatform: {
        cpuArchitecture: props.cpuArchitecture ?? ecs.CpuArchitecture.X86_64,
        operatingSystemFamily: ecs.OperatingSystemFamily.LINUX,
      },
    });
    // The root file system is read-only; /tmp (heartbeat file, temp files) is a task volume on ephemeral storage.
    taskDefinition.addVolume({ name: 'tmp' });
    return taskDefinition;
  }

  private addWorkerContainer(props: BulkImportWorkerProps, resolved: ResolvedProps): ecs.ContainerDefinition {
    const linuxParameters = new ecs.LinuxParameters(this, 'LinuxParameters', { initProcessEnabled: true });
    linuxParameters.dropCapabilities(ecs.Capability.ALL);
    const container = this.taskDefinition.addContainer('worker', {
      containerName: 'worker',
      image: ecs.ContainerImage.fromEcrRepository(props.repository, props.imageDigest ?? props.imageTag),
      command: resolved.workerCommand,
      essential: true,
      user: `${WORKER_UID}:${WORKER_GID}`,
      readonlyRootFilesystem: true,
      linuxParameters,
      stopTimeout: Duration.seconds(resolved.stopTimeoutSeconds),
      healthCheck: {
        command: ['CMD', ...HEALTHCHECK_COMMAND],
        interval: Duration.seconds(30),
        timeout: Duration.seconds(10),
        retries: 3,
        // The heartbeat file exists only once the database answered: the start period covers the whole start-up wait
        // (DATABASE_STARTUP_TIMEOUT_MS; a longer one than it can cover is refused with the worker settings).
        startPeriod: Duration.seconds(healthCheckStartPeriodSeconds(resolved.workerEnvironment)),
      },
      environment: {
        S3_BUCKET: props.bucket.bucketName,
        AWS_REGION: Stack.of(this).region,
        IMPORT_ROOT: DEFAULT_IMPORT_ROOT,
        LOG_LEVEL: resolved.logLevel,
        LOG_FORMAT: 'json',
        METRICS_NAMESPACE: resolved.metricsNamespace,
        WORKER_CONCURRENCY: `${resolved.workerConcurrency}`,
        WORKER_SHUTDOWN_GRACE_MS: `${resolved.shutdownGraceSeconds * 1000}`,
        HEALTH_HEARTBEAT_FILE: DEFAULT_HEARTBEAT_FILE,
        ...databaseEnvironment(resolved),
        ...resolved.workerEnvironment,
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
    container.addMountPoints({ sourceVolume: 'tmp', containerPath: '/tmp', readOnly: false });
    return container;
  }

  private createAdminApi(props: BulkImportWorkerProps, resolved: ResolvedProps): AdminApi {
    const options = props.adminApi!;
    const iamAuth = resolved.databaseIamAuth;
    return new AdminApi(this, 'AdminApi', {
      ...options,
      environmentName: props.environmentName,
      baseName: this.baseName,
      vpc: this.vpc,
      subnets: this.taskSubnets,
      cluster: this.cluster,
      repository: props.repository,
      imageTag: props.imageTag,
      imageDigest: props.imageDigest,
      cpuArchitecture: props.cpuArchitecture ?? ecs.CpuArchitecture.X86_64,
      logGroup: this.logGroup,
      logLevel: resolved.logLevel,
      databaseSecret: props.databaseSecret,
      databaseSecretJsonField: props.databaseSecretJsonField,
      database: { securityGroup: props.databaseSecurityGroup, cidr: props.databaseCidr, port: resolved.databasePort },
      httpsRoute: this.httpsRoute,
      databaseEnvironment: databaseEnvironment(resolved),
      databaseConnectArn: iamAuth && databaseConnectArn(this, iamAuth.resourceId, iamAuth.user),
      bucket: props.bucket,
      bucketKmsKey: props.bucketKmsKey,
      user: `${WORKER_UID}:${WORKER_GID}`,
      fail: (message) => {
        throw new WorkerPropsError(`${this.node.path}: ${message}`);
      },
    });
  }

  private createService(resolved: ResolvedProps): ecs.FargateService {
    return new ecs.FargateService(this, 'Service', {
      cluster: this.cluster,
      serviceName: this.baseName,
      taskDefinition: this.taskDefinition,
      // With autoscaling the count is the scalable target's (seeded by minCapacity) and scripts/campaign.sh's: a
      // DesiredCount in the template would put an autoscaled fleet back to it on every deploy that updates the service.
      desiredCount: resolved.autoscaling ? undefined : resolved.desiredCount,
      ...(resolved.onDemandBaseTasks !== undefined
        ? {
            // The first tasks on demand, every further one (a campaign's) on Spot; see docs/DEPLOYMENT.md.
            capacityProviderStrategies: [
              { capacityProvider: 'FARGATE', base: resolved.onDemandBaseTasks, weight: 0 },
              { capacityProvider: 'FARGATE_SPOT', weight: 1 },
            ],
          }
        : {}),
      vpcSubnets: this.taskSubnets,
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
  }

  /**
   * The nightly audit: an EventBridge rule that runs the worker's task definition family (its latest ACTIVE revision,
   * the image scripts/deploy.sh deployed: infra/scheduled-task.ts) with the audit command.
   */
  private createAuditSchedule(schedule: events.Schedule, env: string, command: string[]): events.Rule {
    const rule = new events.Rule(this, 'AuditSchedule', {
      description: `Nightly data-consistency audit of what bulk imports wrote (${env}): bulk-import audit start, then a worker for it`,
      schedule,
    });
    const eventsRole = new iam.Role(this, 'AuditScheduleRole', {
      assumedBy: new iam.ServicePrincipal('events.amazonaws.com'),
      description: `Starts the nightly audit task of the bulk-import worker (${env})`,
    });
    // EventBridge tags the task it starts (CDK's EcsTask grants this; with the role handed over below it grants nothing).
    const clusterTasks = `arn:${this.cluster.stack.partition}:ecs:${this.cluster.env.region}:*:task/${this.cluster.clusterName}/*`;
    eventsRole.addToPrincipalPolicy(new iam.PolicyStatement({ actions: ['ecs:TagResource'], resources: [clusterTasks] }));
    rule.addTarget(
      new eventsTargets.EcsTask({
        role: scheduledTaskRole(eventsRole, this.taskDefinition, this.cluster),
        cluster: this.cluster,
        taskDefinition: this.taskDefinition,
        taskCount: 1,
        subnetSelection: this.taskSubnets,
        securityGroups: [this.securityGroup],
        assignPublicIp: false,
        containerOverrides: [{ containerName: 'worker', command }],
      }),
    );
    (rule.node.defaultChild as events.CfnRule).addPropertyOverride('Targets.0.EcsParameters.TaskDefinitionArn', taskFamilyArn(this.taskDefinition));
    acknowledgeWildcardResource(
      eventsRole.node.findChild('DefaultPolicy'),
      clusterTasks,
      'EventBridge tags the audit task it starts (ecs:TagResource); task ids exist only at run time, and the grant is ' +
        'limited to tasks of this one cluster (task/<cluster>/*). RunTask is on the worker family only.',
    );
    return rule;
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
    this.createdS3Endpoint = vpc.addGatewayEndpoint('S3Endpoint', { service: ec2.GatewayVpcEndpointAwsService.S3 });
    return vpc;
  }

  private createImportFileSystem(): efs.FileSystem {
    const fileSystemSecurityGroup = new ec2.SecurityGroup(this, 'ImportFileSystemSecurityGroup', {
      vpc: this.vpc,
      description: 'bulk-import campaign file system: NFS from the worker only while a campaign is on',
      allowAllOutbound: false,
    });
    return new efs.FileSystem(this, 'ImportFileSystem', {
      vpc: this.vpc,
      // EFS takes one mount target per availability zone: a VPC with several private subnets in a zone would fail.
      vpcSubnets: { ...this.taskSubnets, onePerAz: true },
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
    this.container.addMountPoints({ sourceVolume: 'import', containerPath: DEFAULT_IMPORT_ROOT, readOnly: true });
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
    // A mass import deletes the object it wrote from a file that changed while it was sent
    // (worker/imports/mass-import/file-transfer.ts, discardObject): left, it would be an object of a version of the file
    // that is gone, with no row, which `audit` reports as an orphan. Its own objects only: under the import prefix.
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'DiscardChangedImportObjects', actions: ['s3:DeleteObject'], resources: [bucketObjectsArn] }),
    );
    // CSV uploads are always imports/<tenant>/… (the API presigns them there): a worker whose prefix is elsewhere
    // still reads them, or every CSV import would fail with AccessDenied.
    if (!`${CSV_UPLOAD_PREFIX}/`.startsWith(bucketPrefix)) {
      const uploads = props.bucket.arnForObjects(`${CSV_UPLOAD_PREFIX}/*`);
      role.addToPrincipalPolicy(new iam.PolicyStatement({ sid: 'ReadCsvUploads', actions: ['s3:GetObject'], resources: [uploads] }));
      acknowledgeWildcardResource(
        role.node.findChild('DefaultPolicy'),
        uploads,
        'CSV upload keys are generated per upload (imports/<tenant>/<uuid>.csv); the grant reads objects under imports/ only.',
      );
    }
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({
        sid: 'ListImportPrefix',
        actions: ['s3:ListBucket'],
        resources: [props.bucket.bucketArn],
        conditions: { StringLike: { 's3:prefix': [`${bucketPrefix}*`] } },
      }),
    );
    if (props.bucketKmsKey) {
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'ImportBucketKey',
          actions: ['kms:Decrypt', 'kms:GenerateDataKey'],
          resources: [props.bucketKmsKey.keyArn],
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
        // Every task of the worker's cluster (task/<cluster>/*), not only the worker's own: the task role's credentials
        // reach the public ECS API as well as the agent's endpoint, and no condition key documented for these actions
        // names a service (docs/DEPLOYMENT.md §1, the residual risk).
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
          resources: [databaseConnectArn(this, resourceId, user)],
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


  private addAutoscaling(autoscaling: Required<WorkerAutoscaling>): ecs.ScalableTaskCount {
    const scaling = this.service.autoScaleTaskCount({
      minCapacity: autoscaling.minTasks,
      maxCapacity: autoscaling.maxTasks,
    });
    // Scale-in only ever removes idle tasks: a task holding leases protects itself from scale-in (ECS task
    // protection), so "nothing queued" cannot interrupt a running campaign.
    scaling.scaleOnMetric('QueueDepthScaling', {
      metric: this.queueMetric('due', Duration.minutes(1)),
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
        'concurrency, drain time, paths, the database TLS mode and CA bundle path, the IAM authentication switch; with ' +
        'tracing the OTLP endpoint, service name and the collector configuration; with notifications the topic ARN, ' +
        'states and admin URL); the only credential, DATABASE_URL, comes from Secrets Manager.',
    });
    const taskPolicy = this.taskDefinition.taskRole.node.tryFindChild('DefaultPolicy');
    if (taskPolicy) {
      acknowledgeWildcardResource(
        taskPolicy,
        bucketObjectsArn,
        'Object keys are generated per imported file, so the grant covers the objects under the import prefix of ' +
          'the one import bucket, for PutObject/GetObject/AbortMultipartUpload and DeleteObject (the object of a file that ' +
          'changed while it was sent) only.',
      );
      acknowledgeWildcardResource(
        taskPolicy,
        '*',
        'cloudwatch:PutMetricData and (with tracing) the X-Ray write and sampling actions have no resource-level ' +
          'permissions; PutMetricData is limited to the worker namespace by the cloudwatch:namespace condition.',
      );
      acknowledgeWildcardResource(
        taskPolicy,
        taskProtectionArn,
        'Task ids exist only at run time, so the grant is two actions on the tasks of this one cluster ' +
          '(task/<cluster>/*). The credentials can call them on any task there, not only through the own agent: a ' +
          'worker could protect or unprotect another service task of a shared cluster (docs/DEPLOYMENT.md §1).',
      );
    }
    acknowledgeImagePullAuthorization(this.taskDefinition);
  }
}

/** The database variables the worker and the admin API both get: TLS mode, CA bundle, IAM authentication. */
function databaseEnvironment(resolved: ResolvedProps): Record<string, string> {
  return {
    DATABASE_SSL_MODE: resolved.databaseSslMode,
    ...(resolved.databaseSslRootCert ? { DATABASE_SSL_ROOT_CERT: resolved.databaseSslRootCert } : {}),
    ...(resolved.databaseIamAuth ? { DATABASE_IAM_AUTH: 'true' } : {}),
  };
}
