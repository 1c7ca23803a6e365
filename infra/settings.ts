// Reads the CDK context into typed deployment settings. `-c key=value` always arrives as a string ("true", "3"),
// cdk.json may hold real JSON values, and a per-environment block (`environments.<name>` in cdk.json) may set the
// same keys: everything is normalised here, once, and a wrong value stops synthesis with a message that names the
// key and the expected form. Semantic rules that concern the construct itself (cpu/memory pairs, drain vs.
// stopTimeout, autoscaling bounds) are checked by the construct, so they also hold for callers that skip this file.
// A key left unset stays undefined here and takes the construct's documented default (bulk-import-worker-props.ts).
import {
  DATABASE_RESOURCE_ID_PATTERN,
  DATABASE_SSL_MODES,
  DATABASE_USER_PATTERN,
  type DatabaseIamAuth,
  type DatabaseSslMode,
  DEFAULTS,
} from './bulk-import-worker-props.js';
import { LOG_LEVELS, type LogLevel } from '../worker/config.js';
import { WORKER_SETTING_KEYS, WORKER_SETTINGS, type WorkerSettings } from './worker-environment.js';
import { OBSERVABILITY_SETTINGS_KEYS, type ObservabilitySettings, readObservabilitySettings } from './observability-settings.js';

/** Thrown for a context value that is missing or malformed; the message is meant for the operator. */
export class SettingsError extends Error {
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message);
    this.name = 'SettingsError';
  }
}

/** How the stack gets its VPC. */
export type VpcSettings =
  | { kind: 'create' }
  | { kind: 'lookup'; vpcId: string }
  | {
      kind: 'import';
      vpcId: string;
      privateSubnetIds: string[];
      availabilityZones: string[];
      vpcCidrBlock: string | undefined;
    };

/** How the stack gets the EFS file system that a campaign mounts at /import. */
export type ImportFileSystemSettings =
  | { kind: 'create' }
  | { kind: 'import'; fileSystemId: string; accessPointId: string | undefined; securityGroupId: string };

export interface AutoscalingSettings {
  minTasks: number;
  maxTasks: number;
  scaleOutQueuedJobs: number | undefined;
  burstQueuedJobs: number | undefined;
}

/** The admin API (`adminApi=true`): who may call it and the certificate of its HTTPS listener. */
export interface AdminApiSettings {
  certificateArn: string;
  allowedSecurityGroupIds: string[];
  allowedCidrs: string[];
  desiredCount: number | undefined;
}

export interface WorkerStackSettings {
  environment: string;
  stackName: string;
  /** Account and region for the stack's `env`; undefined keeps the stack environment-agnostic. */
  account: string | undefined;
  region: string | undefined;
  vpc: VpcSettings;
  /** Existing ECS cluster; undefined creates one with Container Insights. */
  clusterName: string | undefined;
  ecrRepositoryName: string;
  imageTag: string;
  /** The image by digest (sha256:…); when set the task definitions name it instead of imageTag (campaign.sh pins it). */
  imageDigest: string | undefined;
  workerCommand: string[] | undefined;
  desiredCount: number;
  importCampaign: boolean;
  importFileSystem: ImportFileSystemSettings;
  /** Complete secret ARN (with its 6-character suffix) or a secret name. */
  databaseSecret: string;
  databaseSecretJsonField: string | undefined;
  databaseSecurityGroupId: string | undefined;
  databasePort: number | undefined;
  /** CIDR of the database when no security group is given (never 0.0.0.0/0 in prod). */
  databaseCidr: string | undefined;
  /** Interface endpoints for ECR, Logs, Secrets Manager, CloudWatch, ECS (and SNS, X-Ray); S3 endpoint limited to the bucket. */
  vpcEndpoints: boolean;
  /** The region's S3 managed prefix list (pl-…): with vpcEndpoints, HTTPS egress goes only to it and the endpoints. */
  s3PrefixListId: string | undefined;
  /** Campaign tasks beyond onDemandBaseTasks run on Fargate Spot. */
  fargateSpot: boolean;
  onDemandBaseTasks: number | undefined;
  /** Worker variables (worker-environment.ts); only those given. */
  workerSettings: WorkerSettings;
  databaseSslMode: DatabaseSslMode | undefined;
  /** IAM database authentication as one database user; undefined leaves it off. */
  databaseIamAuth: DatabaseIamAuth | undefined;
  bucketName: string;
  bucketPrefix: string | undefined;
  bucketKmsKeyArn: string | undefined;
  alarmTopicArn: string | undefined;
  alarmEmail: string | undefined;
  cpu: number | undefined;
  memoryMiB: number | undefined;
  cpuArchitecture: 'X86_64' | 'ARM64' | undefined;
  logLevel: LogLevel | undefined;
  logRetentionDays: number | undefined;
  metricsNamespace: string | undefined;
  workerConcurrency: number | undefined;
  stopTimeoutSeconds: number | undefined;
  shutdownGraceSeconds: number | undefined;
  oldestQueuedAgeAlarmSeconds: number | undefined;
  autoscaling: AutoscalingSettings | undefined;
  /** Job alarms, scheduled gauges, paging or notifying, tracing, run notifications (observability-settings.ts). */
  observability: ObservabilitySettings;
  /** Undefined unless `adminApi` is on. */
  adminApi: AdminApiSettings | undefined;
}

/** Reads one context value; `app.node.tryGetContext` fits. */
export type ContextGetter = (key: string) => unknown;

/** Every key this file reads, so a typo in an `environments.<name>` block is reported instead of ignored. */
export const SETTINGS_KEYS = [
  'environment',
  'account',
  'region',
  'vpcId',
  'privateSubnetIds',
  'availabilityZones',
  'vpcCidrBlock',
  'clusterName',
  'ecrRepositoryName',
  'imageTag',
  'imageDigest',
  'workerCommand',
  'desiredCount',
  'importCampaign',
  'importFileSystemId',
  'importAccessPointId',
  'importFileSystemSecurityGroupId',
  'databaseSecret',
  'databaseSecretJsonField',
  'databaseSecurityGroupId',
  'databasePort',
  'databaseSslMode',
  'databaseIamAuth',
  'bucketName',
  'bucketPrefix',
  'bucketKmsKeyArn',
  'alarmTopicArn',
  'alarmEmail',
  'cpu',
  'memoryMiB',
  'cpuArchitecture',
  'logLevel',
  'logRetentionDays',
  'metricsNamespace',
  'workerConcurrency',
  'stopTimeoutSeconds',
  'shutdownGraceSeconds',
  'oldestQueuedAgeAlarmSeconds',
  'autoscaling',
  'minTasks',
  'maxTasks',
  'scaleOutQueuedJobs',
  'burstQueuedJobs',
  ...OBSERVABILITY_SETTINGS_KEYS,
  'adminApi',
  'adminApiCertificateArn',
  'adminApiAllowedSecurityGroupIds',
  'adminApiAllowedCidrs',
  'adminApiDesiredCount',
  'databaseCidr',
  'vpcEndpoints',
  's3PrefixListId',
  'fargateSpot',
  'onDemandBaseTasks',
  ...WORKER_SETTING_KEYS,
] as const;

export type SettingsKey = (typeof SETTINGS_KEYS)[number];

/** The retention periods CloudWatch Logs accepts. */
export const LOG_RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
] as const;

/**
 * Normalises the CDK context into settings. A key given with `-c` wins over the same key in the
 * `environments.<environment>` block of cdk.json, which wins over the documented default.
 */
export function readWorkerSettings(getContext: ContextGetter): WorkerStackSettings {
  const read = new ContextReader(getContext);
  const environment = read.string('environment', /^[a-z][a-z0-9-]{0,19}$/, 'a lowercase name such as prod or staging') ?? 'dev';
  read.useEnvironmentBlock(environment);

  const desiredCount = read.integer('desiredCount', { min: 0, max: 100 }) ?? DEFAULTS.desiredCount;
  const autoscalingOn = read.boolean('autoscaling') ?? false;
  const settings: WorkerStackSettings = {
    environment,
    stackName: `BulkImportWorker-${environment}`,
    account: read.string('account', /^\d{12}$/, 'a 12-digit AWS account id'),
    region: read.string('region', /^[a-z]{2}(-[a-z]+)+-\d+$/, 'an AWS region such as eu-west-1'),
    vpc: readVpc(read),
    clusterName: read.string('clusterName', /^[A-Za-z0-9_-]{1,255}$/, 'an ECS cluster name'),
    ecrRepositoryName: read.required(
      read.string('ecrRepositoryName', /^[a-z0-9]+(?:[._/-][a-z0-9]+)*$/, 'an ECR repository name such as backend'),
      'ecrRepositoryName',
      'the name of the backend ECR repository the image is pushed to (scripts/deploy.sh)',
    ),
    imageTag: read.string('imageTag', /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/, 'a Docker image tag') ?? environment,
    imageDigest: read.string('imageDigest', /^sha256:[0-9a-f]{64}$/, 'an image digest sha256:<64 hex digits>'),
    workerCommand: read.command('workerCommand'),
    desiredCount,
    importCampaign: read.boolean('importCampaign') ?? false,
    importFileSystem: readImportFileSystem(read),
    databaseSecret: read.required(
      read.string(
        'databaseSecret',
        /^(arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}|[A-Za-z0-9/_+=.@-]{1,512})$/,
        'a complete Secrets Manager ARN (ending in the 6-character suffix) or a secret name',
      ),
      'databaseSecret',
      'the Secrets Manager secret (ARN or name) that holds DATABASE_URL',
    ),
    databaseSecretJsonField: read.string('databaseSecretJsonField', /^[A-Za-z0-9_.-]{1,128}$/, 'a JSON key such as url'),
    databaseSecurityGroupId: read.string('databaseSecurityGroupId', /^sg-[0-9a-f]{8,17}$/, 'a security group id sg-…'),
    databasePort: read.integer('databasePort', { min: 1, max: 65_535 }),
    databaseCidr: read.string('databaseCidr', CIDR_PATTERN, 'an IPv4 CIDR block such as 10.20.0.0/16'),
    vpcEndpoints: read.boolean('vpcEndpoints') ?? false,
    s3PrefixListId: read.string('s3PrefixListId', /^pl-[0-9a-f]{8,17}$/, 'a managed prefix list id pl-…'),
    fargateSpot: read.boolean('fargateSpot') ?? false,
    onDemandBaseTasks: read.integer('onDemandBaseTasks', { min: 0, max: 100 }),
    workerSettings: readWorkerVariables(read),
    databaseSslMode: read.oneOf('databaseSslMode', DATABASE_SSL_MODES),
    databaseIamAuth: read.databaseIamAuth('databaseIamAuth'),
    bucketName: read.required(
      read.string('bucketName', /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name'),
      'bucketName',
      'the S3 bucket imported files go to (S3_BUCKET)',
    ),
    bucketPrefix: read.prefix('bucketPrefix'),
    bucketKmsKeyArn: read.string('bucketKmsKeyArn', /^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key\/[A-Za-z0-9-]+$/, 'a KMS key ARN'),
    alarmTopicArn: read.string('alarmTopicArn', /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$/, 'an SNS topic ARN'),
    alarmEmail: read.string('alarmEmail', /^[^\s@]+@[^\s@]+\.[^\s@]+$/, 'an e-mail address'),
    cpu: read.integer('cpu', { min: 256, max: 16_384 }),
    memoryMiB: read.integer('memoryMiB', { min: 512, max: 122_880 }),
    cpuArchitecture: read.oneOf('cpuArchitecture', ['X86_64', 'ARM64'] as const),
    logLevel: read.oneOf('logLevel', LOG_LEVELS),
    logRetentionDays: read.oneOfNumbers('logRetentionDays', LOG_RETENTION_DAYS),
    metricsNamespace: read.string('metricsNamespace', /^[A-Za-z0-9._/#:-]{1,255}$/, 'a CloudWatch namespace'),
    workerConcurrency: read.integer('workerConcurrency', { min: 1, max: 1000 }),
    stopTimeoutSeconds: read.integer('stopTimeoutSeconds', { min: 2, max: 120 }),
    shutdownGraceSeconds: read.integer('shutdownGraceSeconds', { min: 0, max: 110 }),
    oldestQueuedAgeAlarmSeconds: read.integer('oldestQueuedAgeAlarmSeconds', { min: 60, max: 604_800 }),
    autoscaling: undefined,
    observability: readObservabilitySettings(read),
    adminApi: readAdminApi(read),
  };
  const autoscaling = {
    minTasks: read.integer('minTasks', { min: 0, max: 100 }) ?? Math.max(desiredCount, 1),
    maxTasks: read.integer('maxTasks', { min: 1, max: 100 }) ?? Math.max(desiredCount, 1) * 4,
    scaleOutQueuedJobs: read.integer('scaleOutQueuedJobs', { min: 1, max: 1_000_000 }),
    burstQueuedJobs: read.integer('burstQueuedJobs', { min: 2, max: 1_000_000 }),
  };
  if (autoscalingOn) settings.autoscaling = autoscaling;
  if (settings.clusterName && settings.vpc.kind === 'create') {
    throw new SettingsError(
      'clusterName',
      'clusterName (an existing cluster) needs vpcId: the service runs in the VPC of that cluster, not in a new one',
    );
  }
  if (settings.vpcEndpoints && !settings.s3PrefixListId) {
    throw new SettingsError(
      's3PrefixListId',
      "vpcEndpoints=true needs s3PrefixListId, the region's S3 managed prefix list (aws ec2 describe-managed-prefix-lists " +
        '--filters Name=prefix-list-name,Values=com.amazonaws.<region>.s3): HTTPS egress is narrowed to it and the endpoints',
    );
  }
  if (settings.vpcEndpoints && settings.vpc.kind !== 'create') {
    throw new SettingsError(
      'vpcEndpoints',
      'vpcEndpoints=true needs the VPC this stack creates: in an existing VPC (vpcId) the endpoints\' private DNS names ' +
        "and the S3 gateway endpoint's policy (the import bucket only) would apply to every workload in it, cutting the " +
        "others off from those AWS APIs and from S3; create the endpoints with the VPC's owner instead",
    );
  }
  if (settings.vpcEndpoints && settings.observability.tracing) {
    throw new SettingsError(
      'tracing',
      'tracing=true cannot be combined with vpcEndpoints=true: the collector sidecar\'s image comes from a public ' +
        'registry, which the tasks cannot reach when their HTTPS egress goes only to the endpoints and S3, and a task ' +
        'whose collector cannot start does not start',
    );
  }
  if (settings.databaseIamAuth && settings.databaseSslMode === 'disable') {
    throw new SettingsError(
      'databaseSslMode',
      'databaseSslMode=disable cannot be combined with databaseIamAuth: RDS refuses IAM tokens without TLS ' +
        '(leave databaseSslMode at its default, verify-full)',
    );
  }
  if (!settings.alarmTopicArn && !settings.alarmEmail) {
    throw new SettingsError(
      'alarmTopicArn',
      'alarmTopicArn or alarmEmail is required: the alarms page on-call through an existing SNS topic ' +
        '(-c alarmTopicArn=arn:aws:sns:…) or through a topic this stack creates with an e-mail subscription ' +
        '(-c alarmEmail=oncall@example.com)',
    );
  }
  return settings;
}

function readVpc(read: ContextReader): VpcSettings {
  const vpcId = read.string('vpcId', /^vpc-[0-9a-f]{8,17}$/, 'a VPC id vpc-…');
  const privateSubnetIds = read.list('privateSubnetIds', /^subnet-[0-9a-f]{8,17}$/, 'subnet ids subnet-…');
  const availabilityZones = read.list('availabilityZones', /^[a-z]{2}(-[a-z]+)+-\d+[a-z]$/, 'zone names such as eu-west-1a');
  const vpcCidrBlock = read.string('vpcCidrBlock', /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'a CIDR block such as 10.0.0.0/16');
  if (!vpcId) {
    for (const [key, value] of [
      ['privateSubnetIds', privateSubnetIds],
      ['availabilityZones', availabilityZones],
      ['vpcCidrBlock', vpcCidrBlock],
    ] as const) {
      if (value !== undefined) throw new SettingsError(key, `${key} is only meaningful with vpcId (an existing VPC)`);
    }
    return { kind: 'create' };
  }
  if (!privateSubnetIds) {
    if (availabilityZones) {
      throw new SettingsError('privateSubnetIds', 'availabilityZones is given without privateSubnetIds');
    }
    return { kind: 'lookup', vpcId };
  }
  if (!availabilityZones || availabilityZones.length !== privateSubnetIds.length) {
    throw new SettingsError(
      'availabilityZones',
      'availabilityZones must list the zone of each of privateSubnetIds, in the same order ' +
        `(${privateSubnetIds.length} subnet(s), ${availabilityZones?.length ?? 0} zone(s))`,
    );
  }
  return { kind: 'import', vpcId, privateSubnetIds, availabilityZones, vpcCidrBlock };
}

const CIDR_PATTERN = /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/;

function readWorkerVariables(read: ContextReader): WorkerSettings {
  const settings: Record<string, unknown> = {};
  for (const key of WORKER_SETTING_KEYS) {
    // Ranges are the worker's own (worker/config.ts), checked when the construct builds the container's variables.
    const type = WORKER_SETTINGS[key].type;
    const value =
      type === 'integer' ? read.integer(key, { min: 0, max: Number.MAX_SAFE_INTEGER }) : type === 'boolean' ? read.boolean(key) : read.pairs(key);
    if (value !== undefined) settings[key] = value;
  }
  return settings as WorkerSettings;
}

function readAdminApi(read: ContextReader): AdminApiSettings | undefined {
  const on = read.boolean('adminApi') ?? false;
  const certificateArn = read.string(
    'adminApiCertificateArn',
    /^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate\/[A-Za-z0-9-]+$/,
    'an ACM certificate ARN',
  );
  const allowedSecurityGroupIds = read.list('adminApiAllowedSecurityGroupIds', /^sg-[0-9a-f]{8,17}$/, 'security group ids sg-…') ?? [];
  const allowedCidrs = read.list('adminApiAllowedCidrs', /^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/, 'IPv4 CIDR blocks such as 10.8.0.0/16') ?? [];
  const desiredCount = read.integer('adminApiDesiredCount', { min: 0, max: 10 });
  if (!on) return undefined;
  if (!certificateArn) {
    throw new SettingsError(
      'adminApiCertificateArn',
      'adminApiCertificateArn is required with adminApi=true: the ACM certificate of the API load balancer\'s HTTPS listener',
    );
  }
  if (allowedSecurityGroupIds.length === 0 && allowedCidrs.length === 0) {
    throw new SettingsError(
      'adminApiAllowedSecurityGroupIds',
      'adminApi=true needs adminApiAllowedSecurityGroupIds or adminApiAllowedCidrs: the load balancer admits only the callers named',
    );
  }
  const open = allowedCidrs.find((cidr) => cidr.endsWith('/0'));
  if (open) {
    throw new SettingsError('adminApiAllowedCidrs', `adminApiAllowedCidrs must not admit everyone (${open}): name the callers' ranges`);
  }
  return { certificateArn, allowedSecurityGroupIds, allowedCidrs, desiredCount };
}

function readImportFileSystem(read: ContextReader): ImportFileSystemSettings {
  const fileSystemId = read.string('importFileSystemId', /^fs-[0-9a-f]{8,40}$/, 'an EFS file system id fs-…');
  const accessPointId = read.string('importAccessPointId', /^fsap-[0-9a-f]{8,40}$/, 'an EFS access point id fsap-…');
  const securityGroupId = read.string('importFileSystemSecurityGroupId', /^sg-[0-9a-f]{8,17}$/, 'a security group id sg-…');
  if (!fileSystemId) {
    if (accessPointId || securityGroupId) {
      throw new SettingsError(
        accessPointId ? 'importAccessPointId' : 'importFileSystemSecurityGroupId',
        'importAccessPointId and importFileSystemSecurityGroupId need importFileSystemId (an existing file system)',
      );
    }
    return { kind: 'create' };
  }
  if (!securityGroupId) {
    throw new SettingsError(
      'importFileSystemSecurityGroupId',
      'importFileSystemSecurityGroupId is required with importFileSystemId: it is the security group of the file ' +
        "system's mount targets, which gets an NFS rule from the worker while a campaign is on",
    );
  }
  return { kind: 'import', fileSystemId, accessPointId, securityGroupId };
}

export class ContextReader {
  private environmentBlock: Record<string, unknown> = {};

  constructor(private readonly getContext: ContextGetter) {}

  /** Takes `environments.<name>` from the context as the layer of defaults under `-c` values. */
  useEnvironmentBlock(environment: string): void {
    const environments = this.getContext('environments');
    if (environments === undefined || environments === null) return;
    const all = typeof environments === 'string' ? parseJson('environments', environments) : environments;
    if (!isRecord(all)) throw new SettingsError('environments', 'environments must be an object keyed by environment name');
    const block = all[environment];
    if (block === undefined) return;
    if (!isRecord(block)) {
      throw new SettingsError(`environments.${environment}`, `environments.${environment} must be an object of settings`);
    }
    const known = new Set<string>(SETTINGS_KEYS);
    for (const key of Object.keys(block)) {
      if (key === 'environment' || !known.has(key)) {
        throw new SettingsError(
          `environments.${environment}.${key}`,
          `environments.${environment}.${key} is not a setting (known: ${SETTINGS_KEYS.filter((k) => k !== 'environment').join(', ')})`,
        );
      }
    }
    this.environmentBlock = block;
  }

  raw(key: SettingsKey): unknown {
    const value = this.getContext(key);
    const chosen = value === undefined || value === null ? this.environmentBlock[key] : value;
    if (typeof chosen === 'string' && chosen.trim() === '') return undefined;
    return chosen === null ? undefined : chosen;
  }

  fail(key: string, value: unknown, expected: string): never {
    throw new SettingsError(key, `context ${key}=${JSON.stringify(value)} is invalid: expected ${expected}`);
  }

  required<T>(value: T | undefined, key: SettingsKey, what: string): T {
    if (value === undefined) {
      throw new SettingsError(key, `context ${key} is required: ${what} (pass -c ${key}=… or set it in cdk.json)`);
    }
    return value;
  }

  string(key: SettingsKey, pattern: RegExp, expected: string): string | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    if (typeof value !== 'string' || !pattern.test(value.trim())) this.fail(key, value, expected);
    return value.trim();
  }

  integer(key: SettingsKey, range: { min: number; max: number }): number | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    const expected = `a whole number from ${range.min} to ${range.max}`;
    const parsed = typeof value === 'number' ? value : typeof value === 'string' && /^\s*-?\d+\s*$/.test(value) ? Number(value) : NaN;
    if (!Number.isSafeInteger(parsed) || parsed < range.min || parsed > range.max) this.fail(key, value, expected);
    return parsed;
  }

  /** Per-kind limits or per-tenant weights: `{"csv-import": 2}` (cdk.json) or `csv-import=2,csv-finalize=2` (-c). */
  pairs(key: SettingsKey): Record<string, number> | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    const expected = 'name=number pairs such as csv-import=2,csv-finalize=2 (or {"csv-import": 2} in cdk.json)';
    let entries: Array<[string, unknown]>;
    if (typeof value === 'string') {
      const text = value.trim();
      entries = text.startsWith('{')
        ? Object.entries(parseJson(key, text) as Record<string, unknown>)
        : text.split(',').map((pair) => {
            const [kind = '', limit = ''] = pair.split('=').map((part) => part.trim());
            return [kind, /^\d+$/.test(limit) ? Number(limit) : limit];
          });
    } else if (isRecord(value)) {
      entries = Object.entries(value);
    } else {
      return this.fail(key, value, expected);
    }
    if (entries.length === 0 || !entries.every(([kind, limit]) => /^[A-Za-z0-9._-]{1,128}$/.test(kind) && Number.isInteger(limit) && (limit as number) >= 1)) {
      this.fail(key, value, expected);
    }
    return Object.fromEntries(entries) as Record<string, number>;
  }

  boolean(key: SettingsKey): boolean | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    if (typeof value === 'boolean') return value;
    if (typeof value === 'string' && /^(true|1|yes|on)$/i.test(value.trim())) return true;
    if (typeof value === 'string' && /^(false|0|no|off)$/i.test(value.trim())) return false;
    return this.fail(key, value, 'true or false');
  }

  oneOf<T extends string>(key: SettingsKey, allowed: readonly T[]): T | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    const match = allowed.find((option) => typeof value === 'string' && option.toLowerCase() === value.trim().toLowerCase());
    if (match === undefined) this.fail(key, value, `one of ${allowed.join(', ')}`);
    return match;
  }

  oneOfNumbers(key: SettingsKey, allowed: readonly number[]): number | undefined {
    const value = this.integer(key, { min: Math.min(...allowed), max: Math.max(...allowed) });
    if (value !== undefined && !allowed.includes(value)) this.fail(key, this.raw(key), `one of ${allowed.join(', ')}`);
    return value;
  }

  /** A list from a JSON array (cdk.json) or a comma-separated string (`-c key=a,b`). */
  list(key: SettingsKey, itemPattern: RegExp, expected: string): string[] | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    const items = Array.isArray(value)
      ? value
      : typeof value === 'string'
        ? value.trim().startsWith('[')
          ? parseJson(key, value)
          : value.split(',').map((item) => item.trim())
        : undefined;
    if (
      !Array.isArray(items) ||
      items.length === 0 ||
      !items.every((item): item is string => typeof item === 'string' && itemPattern.test(item))
    ) {
      this.fail(key, value, `a comma-separated list of ${expected}`);
    }
    return items;
  }

  /** A command from a JSON array of strings or a string split on whitespace. */
  command(key: SettingsKey): string[] | undefined {
    const value = this.raw(key);
    if (value === undefined) return undefined;
    const items =
      typeof value === 'string' && !value.trim().startsWith('[')
        ? value.trim().split(/\s+/)
        : typeof value === 'string'
          ? parseJson(key, value)
          : value;
    if (!Array.isArray(items) || items.length === 0 || !items.every((item) => typeof item === 'string' && item !== '')) {
      this.fail(key, value, 'a command such as ["node","bin/bulk-import.js","worker"] or "node bin/bulk-import.js worker"');
    }
    return items as string[];
  }

  /**
   * IAM database authentication: `<resource id>/<user>` (`-c databaseIamAuth=db-ABC…/bulk_import`, the tail of the
   * rds-db:connect ARN) or, in cdk.json, `{"resourceId": "db-ABC…", "user": "bulk_import"}`; `false` turns it off.
   */
  databaseIamAuth(key: SettingsKey): DatabaseIamAuth | undefined {
    const value = this.raw(key);
    // Off: unset, empty, or false (a `-c` value that turns off an environment block's setting).
    if (value === undefined || value === false || (typeof value === 'string' && /^(false|0|no|off)$/i.test(value.trim()))) {
      return undefined;
    }
    const expected =
      '<resource id>/<database user> such as db-ABCDEFGHIJKLMNOPQRSTUVWXYZ/bulk_import (or {"resourceId": …, "user": …}), ' +
      'where the resource id is that of the DB instance (db-…), Aurora cluster (cluster-…) or RDS Proxy (prx-…), not its name';
    let parsed: unknown = value;
    if (typeof value === 'string') {
      const text = value.trim();
      if (text.startsWith('{')) {
        parsed = parseJson(key, text);
      } else {
        const [resourceId, user, ...rest] = text.split('/');
        parsed = rest.length === 0 ? { resourceId, user } : undefined;
      }
    }
    if (
      !isRecord(parsed) ||
      Object.keys(parsed).some((field) => field !== 'resourceId' && field !== 'user') ||
      typeof parsed.resourceId !== 'string' ||
      typeof parsed.user !== 'string' ||
      !DATABASE_RESOURCE_ID_PATTERN.test(parsed.resourceId) ||
      !DATABASE_USER_PATTERN.test(parsed.user)
    ) {
      return this.fail(key, value, expected);
    }
    return { resourceId: parsed.resourceId, user: parsed.user };
  }

  /** An S3 key prefix, normalised to no leading and exactly one trailing slash. */
  prefix(key: SettingsKey): string | undefined {
    const value = this.string(key, /^\/*[A-Za-z0-9!_.'()/-]*[A-Za-z0-9!_.'()-][A-Za-z0-9!_.'()/-]*$/, 'an S3 key prefix such as imports/');
    if (value === undefined) return undefined;
    const normalised = `${value.replace(/^\/+/, '').replace(/\/+$/, '')}/`;
    if (normalised.split('/').some((part, index, parts) => part === '' && index < parts.length - 1) || /(^|\/)\.\.?\//.test(normalised)) {
      this.fail(key, value, 'an S3 key prefix without empty, "." or ".." segments, such as imports/');
    }
    return normalised;
  }
}

function parseJson(key: string, text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new SettingsError(key, `context ${key} is not valid JSON: ${text}`);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
