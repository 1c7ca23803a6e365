// The optional admin API (`adminApi`): a second, small Fargate service from the worker's image running
// `bulk-import serve` (docs/API.md), behind an internal Application Load Balancer that speaks HTTPS only and admits
// only the given security groups or CIDRs. Its task role may presign uploads under the CSV upload prefix, and read
// their sizes, and nothing else in S3; everything else it serves comes from the database, which needs no IAM (DATABASE_URL, or an IAM token for
// one user when databaseIamAuth is on).
import { ArnFormat, Duration, Stack, Token, Validations } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as ecr from 'aws-cdk-lib/aws-ecr';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as elbv2 from 'aws-cdk-lib/aws-elasticloadbalancingv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import type * as kms from 'aws-cdk-lib/aws-kms';
import type * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import { CSV_UPLOAD_PREFIX } from '../worker/imports/csv/payload.js';
import type { LogLevel } from '../worker/config.js';
import { allowHttps, allowPostgres, type DatabaseReach, type HttpsRoute } from './network.js';
import { acknowledgeImagePullAuthorization, acknowledgeWildcardResource } from './nag.js';
import { ADMIN_API_NODE_FLAGS } from './node-flags.js';

/** The port `serve` listens on inside the task; the load balancer forwards 443 to it. */
export const ADMIN_API_PORT = 8080;
/**
 * The container command: the API on all interfaces of the task (the security group admits only the load balancer),
 * with Node's flags for it (node-flags.ts). Behind the internal load balancer, X-Forwarded-For is believed for one hop,
 * the address the balancer saw and appended, so rate limits and logs see each client's address. Not the VPC's range:
 * the allowed callers are in the VPC too, and an address a caller wrote before its own would then be believed.
 */
export const ADMIN_API_COMMAND = ['node', ...ADMIN_API_NODE_FLAGS, 'bin/bulk-import.js', 'serve', '--port', `${ADMIN_API_PORT}`, '--host', '0.0.0.0', '--trust-proxy', '1'];
/** Target health: the database answers and has this build's schema (worker/http/routes/health.ts). */
export const ADMIN_API_HEALTH_PATH = '/readyz';
/** Log streams of the API: bulk-import-api/api/<task id>, in the worker's log group. */
export const ADMIN_API_LOG_STREAM_PREFIX = 'bulk-import-api';
/** The key prefix presigned uploads live under (`imports/<tenant>/<uuid>.csv`). */
export const ADMIN_API_UPLOAD_PREFIX = `${CSV_UPLOAD_PREFIX}/`;
const CIDR_PATTERN = /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/;

/** The operator-facing options of the admin API (the `adminApi*` settings). */
export interface AdminApiOptions {
  /** ACM certificate of the load balancer's HTTPS listener (its name is what clients connect to). */
  readonly certificateArn: string;
  /** Security groups whose members may call the API (the backend's, a bastion's). */
  readonly allowedSecurityGroups?: ec2.ISecurityGroup[];
  /** CIDR blocks that may call the API (an office VPN range); never 0.0.0.0/0. */
  readonly allowedCidrs?: string[];
  /**
   * API tasks.
   * @default 1
   */
  readonly desiredCount?: number;
}

export interface AdminApiProps extends AdminApiOptions {
  readonly environmentName: string;
  /** Prefix of resource names: bulk-import-worker-<environment>. */
  readonly baseName: string;
  readonly vpc: ec2.IVpc;
  readonly subnets: ec2.SubnetSelection;
  readonly cluster: ecs.ICluster;
  readonly repository: ecr.IRepository;
  readonly imageTag: string;
  /** Wins over imageTag when set (sha256:…). */
  readonly imageDigest: string | undefined;
  readonly cpuArchitecture: ecs.CpuArchitecture;
  readonly logGroup: logs.ILogGroup;
  readonly logLevel: LogLevel;
  readonly databaseSecret: secretsmanager.ISecret;
  readonly databaseSecretJsonField: string | undefined;
  readonly database: DatabaseReach;
  /** Where the tasks' HTTPS may go (image pull, secret, logs): anywhere, or only the VPC endpoints. */
  readonly httpsRoute: HttpsRoute;
  /** DATABASE_SSL_MODE, DATABASE_SSL_ROOT_CERT, DATABASE_IAM_AUTH as the worker gets them. */
  readonly databaseEnvironment: Record<string, string>;
  /** rds-db:connect ARN of the one database user, when IAM database authentication is on. */
  readonly databaseConnectArn: string | undefined;
  readonly bucket: s3.IBucket;
  readonly bucketKmsKey: kms.IKey | undefined;
  /** The image's non-root user, uid:gid. */
  readonly user: string;
  /** Thrown for options that would deploy but not work. */
  readonly fail: (message: string) => never;
}

export class AdminApi extends Construct {
  readonly service: ecs.FargateService;
  readonly taskDefinition: ecs.FargateTaskDefinition;
  readonly loadBalancer: elbv2.ApplicationLoadBalancer;
  readonly listener: elbv2.ApplicationListener;
  readonly targetGroup: elbv2.ApplicationTargetGroup;
  readonly securityGroup: ec2.SecurityGroup;
  readonly loadBalancerSecurityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, props: AdminApiProps) {
    super(scope, id);
    const allowedSecurityGroups = props.allowedSecurityGroups ?? [];
    const allowedCidrs = props.allowedCidrs ?? [];
    checkOptions(props, allowedSecurityGroups, allowedCidrs);
    const env = props.environmentName;

    this.securityGroup = new ec2.SecurityGroup(this, 'SecurityGroup', {
      vpc: props.vpc,
      description: `bulk-import admin API tasks (${env}): inbound from its load balancer only; HTTPS to AWS APIs, Postgres`,
      allowAllOutbound: false,
    });
    allowHttps(this.securityGroup, props.httpsRoute, 'HTTPS to ECR, Secrets Manager and CloudWatch Logs');
    allowPostgres(this.securityGroup, props.vpc, props.database);

    this.loadBalancerSecurityGroup = new ec2.SecurityGroup(this, 'LoadBalancerSecurityGroup', {
      vpc: props.vpc,
      description: `bulk-import admin API load balancer (${env}): HTTPS from the allowed callers only`,
      allowAllOutbound: false,
    });
    for (const group of allowedSecurityGroups) {
      this.loadBalancerSecurityGroup.addIngressRule(group, ec2.Port.tcp(443), 'HTTPS from an allowed caller group');
    }
    for (const cidr of allowedCidrs) {
      this.loadBalancerSecurityGroup.addIngressRule(ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), 'HTTPS from an allowed caller range');
    }

    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'TaskDefinition', {
      family: `${props.baseName}-api`,
      cpu: 256,
      memoryLimitMiB: 512,
      runtimePlatform: { cpuArchitecture: props.cpuArchitecture, operatingSystemFamily: ecs.OperatingSystemFamily.LINUX },
    });
    this.taskDefinition.addVolume({ name: 'tmp' });
    const linuxParameters = new ecs.LinuxParameters(this, 'LinuxParameters', { initProcessEnabled: true });
    linuxParameters.dropCapabilities(ecs.Capability.ALL);
    const container = this.taskDefinition.addContainer('api', {
      containerName: 'api',
      image: ecs.ContainerImage.fromEcrRepository(props.repository, props.imageDigest ?? props.imageTag),
      command: ADMIN_API_COMMAND,
      essential: true,
      user: props.user,
      readonlyRootFilesystem: true,
      linuxParameters,
      // `serve` stops taking requests on SIGTERM and lets those in flight finish; the target is drained first.
      stopTimeout: Duration.seconds(30),
      portMappings: [{ containerPort: ADMIN_API_PORT, protocol: ecs.Protocol.TCP }],
      environment: {
        S3_BUCKET: props.bucket.bucketName,
        AWS_REGION: Stack.of(this).region,
        LOG_LEVEL: props.logLevel,
        LOG_FORMAT: 'json',
        ...props.databaseEnvironment,
      },
      secrets: { DATABASE_URL: ecs.Secret.fromSecretsManager(props.databaseSecret, props.databaseSecretJsonField) },
      logging: ecs.LogDrivers.awsLogs({ logGroup: props.logGroup, streamPrefix: ADMIN_API_LOG_STREAM_PREFIX, mode: ecs.AwsLogDriverMode.NON_BLOCKING }),
    });
    container.addMountPoints({ sourceVolume: 'tmp', containerPath: '/tmp', readOnly: false });
    const uploadObjectsArn = props.bucket.arnForObjects(`${ADMIN_API_UPLOAD_PREFIX}*`);
    this.grantTaskPermissions(props, uploadObjectsArn);

    this.service = new ecs.FargateService(this, 'Service', {
      cluster: props.cluster,
      serviceName: `${props.baseName}-api`,
      taskDefinition: this.taskDefinition,
      desiredCount: props.desiredCount ?? 1,
      vpcSubnets: props.subnets,
      assignPublicIp: false,
      securityGroups: [this.securityGroup],
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { enable: true, rollback: true },
      enableExecuteCommand: false,
      propagateTags: ecs.PropagatedTagSource.SERVICE,
      enableECSManagedTags: true,
    });

    this.loadBalancer = new elbv2.ApplicationLoadBalancer(this, 'LoadBalancer', {
      vpc: props.vpc,
      vpcSubnets: props.subnets,
      internetFacing: false,
      securityGroup: this.loadBalancerSecurityGroup,
      dropInvalidHeaderFields: true,
      // Above the API's 15 s SSE keep-alive comment, below Fastify's 72 s keep-alive: the balancer closes idle
      // connections first, so it never sends a request on one the server is closing.
      idleTimeout: Duration.seconds(60),
    });
    this.listener = this.loadBalancer.addListener('Https', {
      port: 443,
      protocol: elbv2.ApplicationProtocol.HTTPS,
      certificates: [elbv2.ListenerCertificate.fromArn(props.certificateArn)],
      sslPolicy: elbv2.SslPolicy.RECOMMENDED_TLS,
      // The ingress rules above are the only way in: no automatic 0.0.0.0/0 rule.
      open: false,
    });
    this.targetGroup = this.listener.addTargets('Api', {
      port: ADMIN_API_PORT,
      protocol: elbv2.ApplicationProtocol.HTTP,
      targets: [this.service.loadBalancerTarget({ containerName: 'api', containerPort: ADMIN_API_PORT })],
      healthCheck: {
        path: ADMIN_API_HEALTH_PATH,
        healthyHttpCodes: '200',
        interval: Duration.seconds(15),
        timeout: Duration.seconds(5),
        healthyThresholdCount: 2,
        unhealthyThresholdCount: 3,
      },
      deregistrationDelay: Duration.seconds(20),
    });
    this.acknowledgeNagFindings(uploadObjectsArn);
  }

  private grantTaskPermissions(props: AdminApiProps, uploadObjectsArn: string): void {
    const role = this.taskDefinition.taskRole;
    // A presigned PUT is signed with the task role's credentials: S3 checks this permission when the client uploads.
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'PresignUploads', actions: ['s3:PutObject'], resources: [uploadObjectsArn] }),
    );
    // A CSV import's submit reads its upload's size with a HEAD (worker/http/csv-upload.ts), which S3 authorizes as
    // s3:GetObject. Without s3:ListBucket a missing key answers 403, not 404: the API takes both as "not uploaded".
    role.addToPrincipalPolicy(
      new iam.PolicyStatement({ sid: 'MeasureUploads', actions: ['s3:GetObject'], resources: [uploadObjectsArn] }),
    );
    if (props.bucketKmsKey) {
      const stack = Stack.of(this);
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({
          sid: 'UploadBucketKey',
          actions: ['kms:GenerateDataKey'],
          resources: [props.bucketKmsKey.keyArn],
          conditions: { StringEquals: { 'kms:ViaService': `s3.${stack.region}.${stack.urlSuffix}` } },
        }),
      );
    }
    if (props.databaseConnectArn) {
      role.addToPrincipalPolicy(
        new iam.PolicyStatement({ sid: 'ConnectAsDatabaseUser', actions: ['rds-db:connect'], resources: [props.databaseConnectArn] }),
      );
    }
  }

  private acknowledgeNagFindings(uploadObjectsArn: string): void {
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason:
        'The plain environment variables are non-secret settings (bucket name, region, log level and format, the ' +
        'database TLS mode and CA bundle path, the IAM authentication switch); DATABASE_URL comes from Secrets Manager.',
    });
    Validations.of(this.loadBalancer).acknowledge({
      id: 'AwsSolutions-ELB2',
      reason:
        'An internal load balancer in front of one API that logs every request itself (method, route, status, ' +
        'latency and the API key name as actor) to CloudWatch Logs; every action on a run is also recorded in its ' +
        'history in the database. S3 access logs would repeat that without the actor.',
    });
    const taskPolicy = this.taskDefinition.taskRole.node.tryFindChild('DefaultPolicy');
    if (taskPolicy) {
      acknowledgeWildcardResource(
        taskPolicy,
        uploadObjectsArn,
        'Upload keys are generated per request (imports/<tenant>/<uuid>.csv), so the grant covers the CSV upload ' +
          'prefix of the one import bucket, for s3:PutObject (what a presigned upload URL needs) and s3:GetObject (the ' +
          "HEAD that reads an upload's size when its import is submitted).",
      );
    }
    acknowledgeImagePullAuthorization(this.taskDefinition);
  }
}

function checkOptions(props: AdminApiProps, groups: readonly ec2.ISecurityGroup[], cidrs: readonly string[]): void {
  if (!/^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate\/[A-Za-z0-9-]+$/.test(props.certificateArn) && !Token.isUnresolved(props.certificateArn)) {
    props.fail(`adminApi.certificateArn must be an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>), got ${JSON.stringify(props.certificateArn)}`);
  }
  if (groups.length === 0 && cidrs.length === 0) {
    props.fail('adminApi needs allowedSecurityGroups or allowedCidrs: the load balancer admits only the callers named');
  }
  for (const cidr of cidrs) {
    if (!CIDR_PATTERN.test(cidr)) props.fail(`adminApi.allowedCidrs: ${JSON.stringify(cidr)} is not an IPv4 CIDR block such as 10.8.0.0/16`);
    if (cidr.endsWith('/0')) props.fail(`adminApi.allowedCidrs must not admit everyone (${cidr}): name the callers' ranges`);
  }
  const count = props.desiredCount ?? 1;
  if (!Number.isInteger(count) || count < 0) props.fail(`adminApi.desiredCount must be a whole number ≥ 0, got ${count}`);
}

/** The rds-db:connect resource of one database user (arn:…:rds-db:<region>:<account>:dbuser:<resource id>/<user>). */
export function databaseConnectArn(scope: Construct, resourceId: string, user: string): string {
  return Stack.of(scope).formatArn({
    service: 'rds-db',
    resource: 'dbuser',
    resourceName: `${resourceId}/${user}`,
    arnFormat: ArnFormat.COLON_RESOURCE_NAME,
  });
}
