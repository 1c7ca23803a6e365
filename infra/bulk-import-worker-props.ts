// Typed, documented props of the BulkImportWorker construct, their defaults, and the checks that reject
// combinations which would deploy but not work (a cpu/memory pair Fargate refuses, a drain longer than stopTimeout,
// autoscaling that could never scale out again).
import type * as ec2 from 'aws-cdk-lib/aws-ec2';
import type * as ecr from 'aws-cdk-lib/aws-ecr';
import type * as ecs from 'aws-cdk-lib/aws-ecs';
import type * as efs from 'aws-cdk-lib/aws-efs';
import * as events from 'aws-cdk-lib/aws-events';
import type * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import type * as s3 from 'aws-cdk-lib/aws-s3';
import type * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import type * as sns from 'aws-cdk-lib/aws-sns';
import type { Construct } from 'constructs';
import { documentsPrefixProblem, isWholeImportRoot } from '../worker/audit/documents-prefix.js';
import type { LogLevel } from '../worker/config.js';
import { type ObservabilityProps, type ResolvedObservability, resolveObservability } from './observability-props.js';
import type { AdminApiOptions } from './admin-api.js';
import { type WorkerSettings, WorkerSettingsError, workerSettingsEnvironment } from './worker-environment.js';

/** The uid:gid of the image's non-root `node` user (Dockerfile), also the EFS access point's POSIX identity. */
export const WORKER_UID = 1000;
export const WORKER_GID = 1000;
/** Container health check: exits 0 while the worker's poll loop refreshes its heartbeat file. */
export const HEALTHCHECK_COMMAND = ['node', 'dist/scripts/healthcheck.js'];
/** Log stream prefix: streams are named bulk-import-worker/worker/<task id>. */
export const LOG_STREAM_PREFIX = 'bulk-import-worker';
/** The worker drains for the grace period, then needs this long to release leases and exit before SIGKILL. */
export const RELEASE_MARGIN_SECONDS = 10;
/**
 * The Amazon RDS CA bundle in the image (RDS global bundle + RDS Proxy CAs; the Dockerfile builds it with
 * scripts/rds-ca-bundle.ts and pins its checksum). DATABASE_SSL_ROOT_CERT names it when the mode verifies the server.
 */
export const RDS_CA_BUNDLE_PATH = '/app/certs/rds-ca-bundle.pem';
/** DATABASE_SSL_MODE values the worker accepts (worker/db/connection.ts SSL_MODES; a test keeps the two equal). */
export const DATABASE_SSL_MODES = ['disable', 'require', 'verify-ca', 'verify-full'] as const;
export type DatabaseSslMode = (typeof DATABASE_SSL_MODES)[number];
/** Resource id of an RDS DB instance (db-…), an Aurora cluster (cluster-…) or an RDS Proxy (prx-…): not its name. */
export const DATABASE_RESOURCE_ID_PATTERN = /^(db-[A-Z0-9]{1,64}|cluster-[A-Z0-9]{1,64}|prx-[a-z0-9]{1,64})$/;
/** A Postgres user name the IAM resource can name exactly: no wildcard, slash or quoting. */
export const DATABASE_USER_PATTERN = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

/** Defaults of the props below, in one place (the context reader leaves unset keys to these). */
export const DEFAULTS = {
  // --max-semi-space-size=32: a young generation of 32 MiB per semi-space, not left to V8 (which sizes it by the
  // machine's memory; 16 MiB where this was measured, 64 MiB on a later 24 GB machine). The worker turns
  // millions of short-lived strings over (CSV fields, COPY lines); with the default, scavenges ran so often that
  // rows still in flight got promoted and old-generation collections took up to a fifth of a CSV finalize, varying
  // from run to run (bench:csv, 1M rows: finalize 7.9–10.5 s with the default, 6.0–6.8 s with 32 MiB; peak RSS
  // 128 → 141 MiB). The benchmarks start their workers with the same flags.
  workerCommand: ['node', '--max-semi-space-size=32', 'bin/bulk-import.js', 'worker'],
  desiredCount: 1,
  cpu: 1024,
  memoryMiB: 2048,
  databasePort: 5432,
  /** TLS with the chain checked against RDS_CA_BUNDLE_PATH and the host name against the certificate. */
  databaseSslMode: 'verify-full',
  bucketPrefix: 'imports/',
  logLevel: 'info',
  /** The default namespace is this, a slash and the environment name: BulkImport/prod, BulkImport/staging. */
  metricsNamespace: 'BulkImport',
  workerConcurrency: 8,
  stopTimeoutSeconds: 120,
  /** The grace period defaults to stopTimeout minus this, so lease release and exit keep a safe margin. */
  shutdownGraceMarginSeconds: 20,
  oldestQueuedAgeAlarmSeconds: 1800,
  scaleOutQueuedJobs: 1,
  burstQueuedJobs: 100,
} as const;

/** An existing (or separately created) EFS file system to mount during campaigns. */
export interface ImportFileSystem {
  /** The file system holding the campaign share. Must be encrypted and reachable from the task subnets. */
  readonly fileSystem: efs.IFileSystem;
  /**
   * Access point the worker mounts through (its root directory becomes /import).
   * @default a new access point on `fileSystem` rooted at /import, POSIX user 1000:1000
   */
  readonly accessPoint?: efs.IAccessPoint;
}

/** IAM database authentication: the worker logs in as one database user with tokens made with its task role. */
export interface DatabaseIamAuth {
  /**
   * Resource id (not the name) of the DB instance (`db-…`), Aurora cluster (`cluster-…`) or RDS Proxy (`prx-…`), as
   * in `aws rds describe-db-instances --query 'DBInstances[].DbiResourceId'`.
   */
  readonly resourceId: string;
  /** The database user the worker logs in as: the user in DATABASE_URL, granted `rds_iam` in the database. */
  readonly user: string;
}

export interface VpcEndpoints {
  /** The region's S3 managed prefix list (pl-…, `aws ec2 describe-managed-prefix-lists`): HTTPS egress to S3. */
  readonly s3PrefixListId: string;
}

export interface FargateSpot {
  /**
   * Tasks that always run on demand; the rest run on Spot.
   * @default 1
   */
  readonly onDemandBaseTasks?: number;
}

/** Queue-depth autoscaling, off unless given. */
export interface WorkerAutoscaling {
  /**
   * Fewest tasks. At least 1: the queue gauges are published by a running worker, so a service scaled to 0 would
   * never see the queue grow again.
   */
  readonly minTasks: number;
  /** Most tasks. */
  readonly maxTasks: number;
  /**
   * Add one task when `DueJobs` (queued runs due now) stays at or above this for 3 minutes.
   * @default 1
   */
  readonly scaleOutQueuedJobs?: number;
  /**
   * Add three tasks at once when `DueJobs` stays at or above this for 3 minutes.
   * @default 100
   */
  readonly burstQueuedJobs?: number;
}

export interface BulkImportWorkerProps extends ObservabilityProps {
  /**
   * Environment name (`prod`, `staging`, …): part of resource names and of the default metrics namespace. Every alarm,
   * the ones on RunningTaskCount included, exists in every environment; `prod` changes where the two worker-down alarms
   * go by default (`workerDownAlarms`: they page the alarm topic, elsewhere they notify the notice topic), keeps logs a
   * year by default (`logRetentionDays`; elsewhere a month) and requires databaseSecurityGroup or a databaseCidr other
   * than 0.0.0.0/0.
   */
  readonly environmentName: string;
  /**
   * VPC the tasks run in.
   * @default a new VPC: 2 zones, public and private subnets, one NAT gateway, an S3 gateway endpoint and flow logs
   */
  readonly vpc?: ec2.IVpc;
  /**
   * Subnets of the tasks; they get no public IP, so these need a route to AWS APIs (NAT or VPC endpoints).
   * @default the private subnets with egress of `vpc`
   */
  readonly taskSubnets?: ec2.SubnetSelection;
  /**
   * ECS cluster of the service. For the RunningTaskCount alarm it must have Container Insights enabled.
   * @default a new cluster with Container Insights
   */
  readonly cluster?: ecs.ICluster;
  /** The backend's ECR repository; the worker runs the backend's image (see docs/DEPLOYMENT.md). */
  readonly repository: ecr.IRepository;
  /** Image tag the service runs; scripts/deploy.sh moves this tag and forces a new deployment. */
  readonly imageTag: string;
  /**
   * The image by digest (`sha256:…`). When set, the task definitions name `repository@digest` and imageTag is unused:
   * a later `cdk deploy` keeps the image `deploy.sh --image` deployed instead of going back to the mutable tag.
   * @default the image imageTag names
   */
  readonly imageDigest?: string;
  /**
   * Container command.
   * @default ['node', '--max-semi-space-size=32', 'bin/bulk-import.js', 'worker']
   */
  readonly workerCommand?: string[];
  /**
   * Tasks to run. 0 stops the worker (queued jobs wait; nothing is lost) and removes autoscaling. With autoscaling
   * the service's template has no count (the scalable target's minCapacity seeds it, and a deploy never resets an
   * autoscaled fleet); scripts/campaign.sh sets the service to this number after its deploy.
   * @default 1
   */
  readonly desiredCount?: number;
  /**
   * Campaign switch: when true the import file system is mounted read-only at /import; when false the task
   * definition has no such volume at all and mass imports fail fast with the "no campaign mount" message.
   * @default false
   */
  readonly importCampaign?: boolean;
  /**
   * The campaign file system. It exists whether or not a campaign is on, so operators can load the share before
   * starting one.
   * @default a new encrypted EFS file system (elastic throughput, retained on stack deletion) with an access point
   */
  readonly importFileSystem?: ImportFileSystem;
  /** Secret holding the Postgres URL given to the worker as DATABASE_URL (never a plaintext variable). */
  readonly databaseSecret: secretsmanager.ISecret;
  /**
   * JSON key of the URL when the secret is a JSON document.
   * @default the whole secret string is the URL
   */
  readonly databaseSecretJsonField?: string;
  /**
   * Security group of the database; when given, it gets an ingress rule from the worker on `databasePort`.
   * @default no rule is added; the worker may reach `databasePort` inside the VPC's CIDR (anywhere if unknown)
   */
  readonly databaseSecurityGroup?: ec2.ISecurityGroup;
  /**
   * Database port.
   * @default 5432
   */
  readonly databasePort?: number;
  /**
   * CIDR block of the database, when no `databaseSecurityGroup` is given. In prod one of the two is required and
   * 0.0.0.0/0 is refused.
   * @default the VPC's CIDR when known (not in prod)
   */
  readonly databaseCidr?: string;
  /**
   * VPC endpoints: interface endpoints for ECR (api, dkr), CloudWatch Logs, Secrets Manager, CloudWatch, ECS, SNS and
   * X-Ray, and a policy on the S3 gateway endpoint that limits it to the import bucket (and ECR's image layers). The
   * tasks' HTTPS then goes only to those endpoints and to S3's prefix list. The VPC must not have these endpoints yet.
   * @default off: HTTPS to anywhere through the NAT gateway
   */
  readonly vpcEndpoints?: VpcEndpoints;
  /**
   * Fargate Spot: tasks beyond `onDemandBaseTasks` run on Spot (a campaign's extra tasks). An interruption is a
   * SIGTERM two minutes ahead: the worker drains and releases its leases like on any stop (docs/DEPLOYMENT.md).
   * @default off: every task on demand
   */
  readonly fargateSpot?: FargateSpot;
  /**
   * Worker variables (WORKER_KIND_CONCURRENCY, JOB_MAX_ATTEMPTS, RETENTION_DAYS, the mass-import caps, …), checked
   * by the worker's own configuration reader; those not given stay at the worker's defaults (worker-environment.ts).
   * @default none
   */
  readonly workerSettings?: WorkerSettings;
  /**
   * TLS to the database (DATABASE_SSL_MODE; it wins over an sslmode in the URL). With `verify-ca` and `verify-full`
   * the server's chain is checked against the image's Amazon RDS CA bundle (DATABASE_SSL_ROOT_CERT); `require`
   * encrypts without checking the certificate; `disable` is plain TCP (not with `databaseIamAuth`).
   * @default 'verify-full'
   */
  readonly databaseSslMode?: DatabaseSslMode;
  /**
   * IAM database authentication (DATABASE_IAM_AUTH=true): every new connection's password is a token made with the
   * task role, which may `rds-db:connect` as exactly this user of exactly this database. DATABASE_URL then holds no
   * password. Needs TLS and IAM DB authentication enabled on the database.
   * @default off: the password comes from DATABASE_URL
   */
  readonly databaseIamAuth?: DatabaseIamAuth;
  /** Bucket that imported files go to (S3_BUCKET). */
  readonly bucket: s3.IBucket;
  /**
   * Key prefix the worker may read and write under: one segment ending in "/" (a mass import writes under its payload
   * prefix's first segment, further segments marked with `_`: worker/imports/object-key.ts); mass-import payload
   * prefixes start with it.
   * CSV uploads are always under imports/ (the worker also reads there when this prefix is elsewhere).
   * @default 'imports/'
   */
  readonly bucketPrefix?: string;
  /**
   * KMS key of the bucket's default encryption, when it is SSE-KMS with a customer managed key.
   * @default none (SSE-S3)
   */
  readonly bucketKmsKey?: kms.IKey;
  /**
   * Existing on-call topic for the alarms. It must enforce TLS itself (an aws:SecureTransport deny).
   * @default a new KMS-encrypted topic that denies publishing without TLS
   */
  readonly alarmTopic?: sns.ITopic;
  /**
   * E-mail address subscribed to the alarm topic (the created one, or the given one).
   * @default no subscription; required when no `alarmTopic` is given
   */
  readonly alarmEmail?: string;
  /**
   * Task CPU units (a Fargate cpu/memory pair).
   * @default 1024
   */
  readonly cpu?: number;
  /**
   * Task memory in MiB (a Fargate cpu/memory pair).
   * @default 2048
   */
  readonly memoryMiB?: number;
  /**
   * CPU architecture; must match the platform scripts/deploy.sh builds for.
   * @default X86_64
   */
  readonly cpuArchitecture?: ecs.CpuArchitecture;
  /**
   * LOG_LEVEL of the worker.
   * @default 'info'
   */
  readonly logLevel?: LogLevel;
  /**
   * Retention of the worker's log group.
   * @default one year in prod, one month elsewhere
   */
  readonly logRetentionDays?: logs.RetentionDays;
  /**
   * CloudWatch namespace of the worker's metrics (METRICS_NAMESPACE) and of the alarms on them. One per environment,
   * so that staging's points can never trip prod's alarms (they read dimensionless queue totals).
   * @default 'BulkImport/<environmentName>'
   */
  readonly metricsNamespace?: string;
  /**
   * Jobs one task runs at once (WORKER_CONCURRENCY).
   * @default 8
   */
  readonly workerConcurrency?: number;
  /**
   * Seconds between SIGTERM and SIGKILL, the container's stopTimeout (Fargate allows 2–120).
   * @default 120
   */
  readonly stopTimeoutSeconds?: number;
  /**
   * Seconds the worker lets running jobs reach an item boundary after SIGTERM before it releases their leases
   * (WORKER_SHUTDOWN_GRACE_MS). Must leave 10 s of `stopTimeoutSeconds` for the release.
   * @default `stopTimeoutSeconds` minus 20 seconds (100 seconds with the default)
   */
  readonly shutdownGraceSeconds?: number;
  /**
   * The oldest-queued-job alarm fires when the oldest due job has waited longer than this many seconds (60 or more).
   * @default 1800 (30 minutes)
   */
  readonly oldestQueuedAgeAlarmSeconds?: number;
  /**
   * Queue-depth autoscaling; ignored while `desiredCount` is 0.
   * @default off
   */
  readonly autoscaling?: WorkerAutoscaling;
  /**
   * When the data-consistency audit runs (`audit` job kind): an EventBridge rule starts a task of the worker's task
   * definition that enqueues an audit and works it off (`audit start`, then `worker --kinds audit --exit-when-idle`),
   * so it runs even while the service is at 0 tasks. `null` turns it off.
   * @default nightly at 02:30 UTC
   */
  readonly auditSchedule?: events.Schedule | null;
  /**
   * The admin API (`bulk-import serve`, docs/API.md) as a second small service behind an internal HTTPS load
   * balancer that admits only the given security groups or CIDRs.
   * @default off
   */
  readonly adminApi?: AdminApiOptions;
}

/** The nightly audit's default time. */
export const DEFAULT_AUDIT_SCHEDULE = events.Schedule.cron({ minute: '30', hour: '2' });
/**
 * The scheduled audit task's command: enqueue the audit of the stack's documents (`--documents-prefix` = its
 * bucketPrefix: the task role may list only under it, see ListImportPrefix), then run a worker for the audit kind until
 * it is done. Refuses a prefix the audit would refuse every night (worker/audit/documents-prefix.ts).
 */
export function auditTaskCommand(bucketPrefix: string): string[] {
  const problem = documentsPrefixProblem(bucketPrefix);
  if (problem !== null) throw new WorkerPropsError(`bucketPrefix ${JSON.stringify(bucketPrefix)} cannot be audited: the documents prefix ${problem}`);
  // Single-quoted for sh: the prefix is one argument whatever it holds.
  const quoted = `'${bucketPrefix.replaceAll("'", `'\\''`)}'`;
  return [
    'sh',
    '-c',
    `node bin/bulk-import.js audit start --documents-prefix ${quoted} && ` +
      'exec node --max-semi-space-size=32 bin/bulk-import.js worker --kinds audit --exit-when-idle',
  ];
}

/** Fargate's valid task cpu → memory (MiB) ranges and steps. */
export const FARGATE_SIZES: Record<number, { min: number; max: number; step: number; extra?: number[] }> = {
  256: { min: 1024, max: 2048, step: 1024, extra: [512] },
  512: { min: 1024, max: 4096, step: 1024 },
  1024: { min: 2048, max: 8192, step: 1024 },
  2048: { min: 4096, max: 16384, step: 1024 },
  4096: { min: 8192, max: 30720, step: 1024 },
  8192: { min: 16384, max: 61440, step: 4096 },
  16384: { min: 32768, max: 122880, step: 8192 },
};

export interface ResolvedProps {
  desiredCount: number;
  workerCommand: string[];
  cpu: number;
  memoryMiB: number;
  databasePort: number;
  databaseSslMode: DatabaseSslMode;
  /** DATABASE_SSL_ROOT_CERT: the image's RDS bundle when the mode checks the chain, else unset. */
  databaseSslRootCert: string | undefined;
  databaseIamAuth: DatabaseIamAuth | undefined;
  bucketPrefix: string;
  logLevel: LogLevel;
  logRetentionDays: logs.RetentionDays;
  metricsNamespace: string;
  workerConcurrency: number;
  stopTimeoutSeconds: number;
  shutdownGraceSeconds: number;
  oldestQueuedAgeAlarmSeconds: number;
  autoscaling: Required<WorkerAutoscaling> | undefined;
  /** The container variables of `workerSettings`. */
  workerEnvironment: Record<string, string>;
  onDemandBaseTasks: number | undefined;
  observability: ResolvedObservability;
}

/** Props that would deploy but not work; the message names the prop and the rule. */
export class WorkerPropsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WorkerPropsError';
  }
}

/** Applies defaults and rejects combinations that would deploy but not work. */
export function resolveProps(scope: Construct, props: BulkImportWorkerProps): ResolvedProps {
  const fail = (message: string): never => {
    throw new WorkerPropsError(`${scope.node.path}: ${message}`);
  };
  if (!/^[a-z][a-z0-9-]{0,19}$/.test(props.environmentName)) {
    fail(`environmentName ${JSON.stringify(props.environmentName)} must be a short lowercase name such as prod`);
  }
  const desiredCount = props.desiredCount ?? DEFAULTS.desiredCount;
  if (!Number.isInteger(desiredCount) || desiredCount < 0) fail(`desiredCount must be a whole number ≥ 0, got ${desiredCount}`);
  const cpu = props.cpu ?? DEFAULTS.cpu;
  const memoryMiB = props.memoryMiB ?? DEFAULTS.memoryMiB;
  const size = FARGATE_SIZES[cpu];
  const memoryFits =
    size !== undefined &&
    (size.extra?.includes(memoryMiB) ||
      (memoryMiB >= size.min && memoryMiB <= size.max && (memoryMiB - size.min) % size.step === 0));
  if (!memoryFits) {
    fail(
      `cpu ${cpu} with memory ${memoryMiB} MiB is not a Fargate size` +
        (size ? ` (cpu ${cpu} takes ${size.min}–${size.max} MiB in steps of ${size.step})` : ` (cpu: ${Object.keys(FARGATE_SIZES).join(', ')})`),
    );
  }
  const stopTimeoutSeconds = props.stopTimeoutSeconds ?? DEFAULTS.stopTimeoutSeconds;
  const shutdownGraceSeconds = props.shutdownGraceSeconds ?? Math.max(0, stopTimeoutSeconds - DEFAULTS.shutdownGraceMarginSeconds);
  if (!Number.isInteger(stopTimeoutSeconds) || stopTimeoutSeconds < 2 || stopTimeoutSeconds > 120) {
    fail(`stopTimeout must be 2–120 seconds (the Fargate limit), got ${stopTimeoutSeconds} s`);
  }
  if (!Number.isInteger(shutdownGraceSeconds) || shutdownGraceSeconds < 0 || shutdownGraceSeconds + RELEASE_MARGIN_SECONDS > stopTimeoutSeconds) {
    fail(
      `shutdownGrace (${shutdownGraceSeconds} s) must leave ${RELEASE_MARGIN_SECONDS} s of stopTimeout ` +
        `(${stopTimeoutSeconds} s) to release leases before SIGKILL`,
    );
  }
  const workerCommand = props.workerCommand ?? [...DEFAULTS.workerCommand];
  if (workerCommand.length === 0) fail('workerCommand must not be empty');
  if (!props.alarmTopic && !props.alarmEmail) {
    fail('alarmEmail is required when no alarmTopic is given: a created topic without a subscriber pages nobody');
  }
  const databaseSslMode = props.databaseSslMode ?? DEFAULTS.databaseSslMode;
  if (!(DATABASE_SSL_MODES as readonly string[]).includes(databaseSslMode)) {
    fail(`databaseSslMode must be one of ${DATABASE_SSL_MODES.join(', ')}, got ${JSON.stringify(databaseSslMode)}`);
  }
  const iam = props.databaseIamAuth;
  if (iam) {
    if (!DATABASE_RESOURCE_ID_PATTERN.test(iam.resourceId)) {
      fail(
        `databaseIamAuth.resourceId must be the resource id of a DB instance (db-…), Aurora cluster (cluster-…) or ` +
          `RDS Proxy (prx-…), not its name, got ${JSON.stringify(iam.resourceId)}`,
      );
    }
    if (!DATABASE_USER_PATTERN.test(iam.user)) {
      fail(`databaseIamAuth.user must be one database user name (letters, digits, _), got ${JSON.stringify(iam.user)}`);
    }
    if (databaseSslMode === 'disable') {
      fail('databaseIamAuth needs TLS (RDS refuses IAM tokens over plain TCP): set databaseSslMode to verify-full');
    }
  }
  const oldestQueuedAgeAlarmSeconds = props.oldestQueuedAgeAlarmSeconds ?? DEFAULTS.oldestQueuedAgeAlarmSeconds;
  if (!Number.isInteger(oldestQueuedAgeAlarmSeconds) || oldestQueuedAgeAlarmSeconds < 60) {
    fail(`oldestQueuedAgeAlarmSeconds must be a whole number of seconds ≥ 60 (the gauges come once a minute), got ${oldestQueuedAgeAlarmSeconds}`);
  }
  checkDatabaseReach(props, fail);
  let workerEnvironment: Record<string, string> = {};
  try {
    workerEnvironment = workerSettingsEnvironment(props.workerSettings ?? {});
  } catch (error) {
    if (!(error instanceof WorkerSettingsError)) throw error;
    fail(`workerSettings.${error.message}`);
  }
  const onDemandBaseTasks = props.fargateSpot ? (props.fargateSpot.onDemandBaseTasks ?? 1) : undefined;
  if (onDemandBaseTasks !== undefined && (!Number.isInteger(onDemandBaseTasks) || onDemandBaseTasks < 0)) {
    fail(`fargateSpot.onDemandBaseTasks must be a whole number ≥ 0, got ${onDemandBaseTasks}`);
  }
  if (props.vpcEndpoints && !/^pl-[0-9a-f]{8,17}$/.test(props.vpcEndpoints.s3PrefixListId)) {
    fail(`vpcEndpoints.s3PrefixListId must be a managed prefix list id pl-…, got ${JSON.stringify(props.vpcEndpoints.s3PrefixListId)}`);
  }
  const bucketPrefix = resolvePrefix(props);
  if (!/^[^/].*\/$/.test(bucketPrefix)) fail(`bucketPrefix must not start with "/" and must end with "/", got ${bucketPrefix}`);
  // A mass import writes under <its prefix's first segment>/_<further segments>/<tenant>/ (worker/imports/object-key.ts):
  // under a deeper bucketPrefix no import could write a single object, and every file would fail AccessDenied.
  if (!isWholeImportRoot(bucketPrefix)) {
    const [first, ...rest] = bucketPrefix.slice(0, -1).split('/');
    fail(
      `bucketPrefix must be one key segment such as imports/ or docs/, got ${bucketPrefix}: a mass import with the payload ` +
        `prefix ${bucketPrefix.slice(0, -1)} writes under ${[first, ...rest.map((segment) => `_${segment}`)].join('/')}/<tenant>/, outside it`,
    );
  }
  let autoscaling: Required<WorkerAutoscaling> | undefined;
  if (props.autoscaling && desiredCount > 0) {
    autoscaling = {
      minTasks: props.autoscaling.minTasks,
      maxTasks: props.autoscaling.maxTasks,
      scaleOutQueuedJobs: props.autoscaling.scaleOutQueuedJobs ?? DEFAULTS.scaleOutQueuedJobs,
      burstQueuedJobs: props.autoscaling.burstQueuedJobs ?? DEFAULTS.burstQueuedJobs,
    };
    const { minTasks, maxTasks, scaleOutQueuedJobs, burstQueuedJobs } = autoscaling;
    if (!Number.isInteger(minTasks) || minTasks < 1) {
      fail(
        `autoscaling.minTasks must be at least 1, got ${minTasks}: the queue gauges come from a running worker, ` +
          'so at 0 tasks nothing would ever scale the service out again (set desiredCount 0 to stop the worker)',
      );
    }
    if (!Number.isInteger(maxTasks) || maxTasks < minTasks) fail(`autoscaling.maxTasks (${maxTasks}) must be ≥ minTasks (${minTasks})`);
    if (desiredCount < minTasks || desiredCount > maxTasks) {
      fail(`desiredCount (${desiredCount}) must lie within autoscaling minTasks–maxTasks (${minTasks}–${maxTasks})`);
    }
    if (scaleOutQueuedJobs < 1 || burstQueuedJobs <= scaleOutQueuedJobs) {
      fail(`autoscaling needs 1 ≤ scaleOutQueuedJobs (${scaleOutQueuedJobs}) < burstQueuedJobs (${burstQueuedJobs})`);
    }
  }
  return {
    desiredCount,
    workerCommand,
    cpu,
    memoryMiB,
    databasePort: props.databasePort ?? DEFAULTS.databasePort,
    databaseSslMode,
    databaseSslRootCert: databaseSslMode === 'verify-ca' || databaseSslMode === 'verify-full' ? RDS_CA_BUNDLE_PATH : undefined,
    databaseIamAuth: iam && { resourceId: iam.resourceId, user: iam.user },
    bucketPrefix,
    logLevel: props.logLevel ?? DEFAULTS.logLevel,
    logRetentionDays: props.logRetentionDays ?? (props.environmentName === 'prod' ? logs.RetentionDays.ONE_YEAR : logs.RetentionDays.ONE_MONTH),
    metricsNamespace: props.metricsNamespace ?? `${DEFAULTS.metricsNamespace}/${props.environmentName}`,
    workerConcurrency: props.workerConcurrency ?? DEFAULTS.workerConcurrency,
    stopTimeoutSeconds,
    shutdownGraceSeconds,
    oldestQueuedAgeAlarmSeconds,
    autoscaling,
    workerEnvironment,
    onDemandBaseTasks,
    observability: resolveObservability(props, fail),
  };
}

/** In prod the worker's Postgres egress names the database (its security group or CIDR), never the whole internet. */
function checkDatabaseReach(props: BulkImportWorkerProps, fail: (message: string) => never): void {
  const cidr = props.databaseCidr;
  if (cidr !== undefined && !/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(cidr)) {
    fail(`databaseCidr must be an IPv4 CIDR block such as 10.20.0.0/16, got ${JSON.stringify(cidr)}`);
  }
  if (props.environmentName !== 'prod') return;
  if (cidr?.endsWith('/0')) {
    fail(`databaseCidr ${cidr} would let the prod worker open Postgres connections to the whole internet: give the database's CIDR or databaseSecurityGroupId`);
  }
  if (!props.databaseSecurityGroup && cidr === undefined) {
    fail(
      'prod needs databaseSecurityGroupId (the database\'s security group gets an ingress rule from the worker) or ' +
        'databaseCidr (the database\'s subnets): the worker\'s Postgres egress must name the database, not 0.0.0.0/0 or a whole VPC',
    );
  }
}

function resolvePrefix(props: BulkImportWorkerProps): string {
  return props.bucketPrefix ?? DEFAULTS.bucketPrefix;
}

