// Every environment variable the project reads is parsed and validated here, and only here. A wrong value fails at
// start-up with a message naming the variable and the expected form; nothing else in the code reads process.env.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { databaseUrlProblem, isSslMode, SSL_MODES, type DatabaseConnection, type SslMode } from './db/connection.js';
import { iamTokenSourceFor } from './db/iam-token.js';
import { TERMINAL_STATES, type JobState } from './queue/types.js';
import type { AdmissionLimits } from './queue/admission.js';
import { MAX_TENANT_WEIGHT, type FairSharePolicy } from './queue/fair-share.js';

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

type Env = Record<string, string | undefined>;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const LOG_FORMATS = ['auto', 'json', 'pretty'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export type LogFormat = (typeof LOG_FORMATS)[number];
/** IMPORT_ROOT when unset: where a campaign's share is mounted (the stack mounts EFS here). */
export const DEFAULT_IMPORT_ROOT = '/import';
/** HEALTH_HEARTBEAT_FILE when unset: on /tmp, the one writable path of the task's read-only root file system. */
export const DEFAULT_HEARTBEAT_FILE = '/tmp/bulk-import-worker.heartbeat';

export interface Config {
  /** Postgres connection string; required by every command that touches the database. */
  databaseUrl: string | undefined;
  databasePoolSize: number;
  /** TLS and authentication of every database session; see worker/db/connection.ts. */
  databaseSsl: { mode: SslMode; rootCert: string | undefined };
  /** DATABASE_IAM_AUTH: passwords are IAM tokens made with the task role. */
  databaseIamAuth: boolean;
  /** How long a starting worker waits for an unreachable database before it exits. */
  databaseStartupTimeoutMs: number;
  /** S3 endpoint override (a local S3-compatible server); undefined means AWS. */
  s3Endpoint: string | undefined;
  s3Bucket: string | undefined;
  s3ForcePathStyle: boolean;
  /** An S3 read (a CSV object) or probe with no progress for this long is aborted and treated as an S3 outage. */
  s3StallTimeoutMs: number;
  awsRegion: string;
  /**
   * Whether the environment names a source of AWS credentials for the SDK's default chain (a task role's endpoint,
   * keys, a web identity, a profile): without one, a credentials error of S3 is a worker without credentials, not a
   * refresh that failed (storage/s3-client.ts).
   */
  awsCredentialsConfigured: boolean;
  importRoot: string;
  /** The import root must be a mount point of its own (the campaign mount); off for local runs and tests. */
  importRootRequireMount: boolean;
  logLevel: LogLevel;
  logFormat: LogFormat;
  worker: WorkerConfig;
  queue: QueueConfig;
  massImport: MassImportConfig;
  csv: CsvConfig;
  health: HealthConfig;
  metrics: MetricsConfig;
  notifications: NotificationsConfig;
  /** Set by the ECS agent inside a task; enables scale-in protection. */
  ecsAgentUri: string | undefined;
}

export interface WorkerConfig {
  /** Identifies this worker in `lease_owner`; defaults to hostname:pid. */
  workerId: string;
  concurrency: number;
  /** Job kinds this worker claims; empty means every registered kind. */
  kinds: string[];
  /** Per-kind concurrency ceilings, e.g. `csv-import=2,csv-finalize=2`. */
  kindConcurrency: Record<string, number>;
  leaseMs: number;
  heartbeatMs: number;
  pollIntervalMs: number;
  rescueIntervalMs: number;
  retentionIntervalMs: number;
  retentionDays: number;
  /** Finished runs move from jobs_live to jobs_archive this long after they end (maintenance/archiver.ts). */
  archiveAfterSeconds: number;
  archiveIntervalMs: number;
  shutdownGraceMs: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
  defaultMaxAttempts: number;
  /**
   * How long a run waits out one outage of S3 or the database (requeued with a growing backoff, attempts not counted)
   * before it ends `dead` with DEPENDENCY_OUTAGE; 0 treats outages as ordinary transient failures.
   */
  outageBudgetMs: number;
  /** The longest wait between two tries of a run during an outage (the wait grows with the outage up to this). */
  outageBackoffMaxMs: number;
  /** Adaptive prefetch: buffer at most this much expected work (per slot) of leased, not yet started jobs; 0 = off. */
  prefetchWindowMs: number;
  prefetchMax: number;
  /** Publish job state transitions on bulk_import_job_state from this worker's sessions (see ARCHITECTURE.md). */
  stateNotifications: boolean;
}

/** Fair share between tenants and admission control on submit (docs/ARCHITECTURE.md). */
export interface QueueConfig {
  /** FAIR_CLAIM and TENANT_WEIGHTS: where submitted runs go in the claim order. */
  fairShare: FairSharePolicy;
  /** TENANT_KIND_CONCURRENCY: a tenant's most running jobs of a kind across the fleet, e.g. `mass-import=2`. */
  tenantKindConcurrency: Record<string, number>;
  /** ADMISSION_*: the queue limits a submit must stay within. */
  admission: AdmissionLimits;
}

export interface MassImportConfig {
  maxFiles: number;
  maxTotalBytes: number;
  maxFileBytes: number;
  /** Hard caps: a payload may lower the limits above, and raise them only up to these. */
  hardCapFiles: number;
  hardCapTotalBytes: number;
  hardCapFileBytes: number;
  concurrency: number;
  multipartThresholdBytes: number;
  /** Files below this size (and below the multipart threshold) are read into memory whole before their PUT. */
  bufferLimitBytes: number;
  /** One S3 request (or, for multipart uploads, one stall without progress) longer than this is retried. */
  requestTimeoutMs: number;
}

export interface CsvConfig {
  finalizeChunkSize: number;
  /** Batches one finalize writes at the same time, each on its own database connection. */
  finalizeConnections: number;
}

export interface HealthConfig {
  heartbeatFile: string;
  maxAgeMs: number;
}

export interface MetricsConfig {
  /** CloudWatch namespace; metrics are off when unset. */
  namespace: string | undefined;
  cloudWatchEndpoint: string | undefined;
  gaugeIntervalMs: number;
}

export interface NotificationsConfig {
  /** SNS topic that receives one message per run ending in one of `states`; notifications are off when unset. */
  topicArn: string | undefined;
  /** SNS endpoint override (tests); undefined means AWS. */
  snsEndpoint: string | undefined;
  /** Terminal states notified (NOTIFY_STATES); empty (`none`) turns notifications off for the database. */
  states: JobState[];
  /** Base URL of the admin pages; each message links to `<base>/admin/runs/<id>`. No link when unset. */
  adminBaseUrl: string | undefined;
  /** How often a worker looks for notifications to publish when nothing woke it. */
  pollIntervalMs: number;
}

const GiB = 1024 ** 3;
/** The variables that give the AWS SDK's default chain its credentials (see Config.awsCredentialsConfigured). */
const AWS_CREDENTIAL_SOURCES = [
  'AWS_CONTAINER_CREDENTIALS_RELATIVE_URI', 'AWS_CONTAINER_CREDENTIALS_FULL_URI', 'AWS_ACCESS_KEY_ID', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_PROFILE',
];
const SNS_TOPIC_ARN = /^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$/;

export function loadConfig(env: Env = process.env): Config {
  const read = new EnvReader(env);
  const leaseMs = read.integer('WORKER_LEASE_MS', 30_000, { min: 1_000, max: 3_600_000 });
  const s3Endpoint = read.url('S3_ENDPOINT');
  const config: Config = {
    databaseUrl: read.postgresUrl('DATABASE_URL'),
    databasePoolSize: read.integer('DATABASE_POOL_SIZE', 10, { min: 1, max: 200 }),
    databaseSsl: read.databaseSsl(),
    databaseIamAuth: read.boolean('DATABASE_IAM_AUTH', false),
    databaseStartupTimeoutMs: read.integer('DATABASE_STARTUP_TIMEOUT_MS', 60_000, { min: 0, max: 600_000 }),
    s3Endpoint,
    s3Bucket: read.bucketName('S3_BUCKET'),
    s3ForcePathStyle: read.boolean('S3_FORCE_PATH_STYLE', s3Endpoint !== undefined),
    s3StallTimeoutMs: read.integer('S3_STALL_TIMEOUT_MS', 120_000, { min: 100, max: 3_600_000 }),
    awsRegion: read.string('AWS_REGION', 'us-east-1', /^[a-z]{2}(-[a-z]+)+-\d+$/, 'an AWS region such as eu-west-1'),
    // The SDK's own variables, read by it: only whether one is there. (EC2 instance metadata needs none; the worker
    // runs on Fargate, where a task role sets AWS_CONTAINER_CREDENTIALS_RELATIVE_URI.)
    awsCredentialsConfigured: AWS_CREDENTIAL_SOURCES.some((name) => (env[name] ?? '') !== ''),
    importRoot: read.absolutePath('IMPORT_ROOT', DEFAULT_IMPORT_ROOT),
    importRootRequireMount: read.boolean('IMPORT_ROOT_REQUIRE_MOUNT', true),
    logLevel: read.oneOf('LOG_LEVEL', LOG_LEVELS, 'info'),
    logFormat: read.oneOf('LOG_FORMAT', LOG_FORMATS, 'auto'),
    worker: {
      // The pid alone repeats across container restarts (it is often 1): a random part keeps each incarnation's
      // lease owner name unique.
      workerId: read.string('WORKER_ID', `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`, /^\S{1,200}$/, '1-200 non-space characters'),
      concurrency: read.integer('WORKER_CONCURRENCY', 8, { min: 1, max: 1000 }),
      kinds: read.list('WORKER_KINDS'),
      kindConcurrency: read.kindLimits('WORKER_KIND_CONCURRENCY'),
      leaseMs,
      heartbeatMs: read.integer('WORKER_HEARTBEAT_MS', Math.floor(leaseMs / 3), { min: 100, max: leaseMs - 1 }),
      pollIntervalMs: read.integer('WORKER_POLL_INTERVAL_MS', 1_000, { min: 10, max: 600_000 }),
      rescueIntervalMs: read.integer('WORKER_RESCUE_INTERVAL_MS', 15_000, { min: 100, max: 3_600_000 }),
      retentionIntervalMs: read.integer('RETENTION_INTERVAL_MS', 600_000, { min: 1_000, max: 86_400_000 }),
      retentionDays: read.integer('RETENTION_DAYS', 30, { min: 1, max: 3650 }),
      archiveAfterSeconds: read.integer('ARCHIVE_AFTER_SECONDS', 60, { min: 0, max: 86_400 }),
      archiveIntervalMs: read.integer('ARCHIVE_INTERVAL_MS', 10_000, { min: 100, max: 3_600_000 }),
      shutdownGraceMs: read.integer('WORKER_SHUTDOWN_GRACE_MS', 20_000, { min: 0, max: 110_000 }),
      backoffBaseMs: read.integer('RETRY_BACKOFF_BASE_MS', 1_000, { min: 1, max: 3_600_000 }),
      backoffMaxMs: read.integer('RETRY_BACKOFF_MAX_MS', 300_000, { min: 1, max: 86_400_000 }),
      defaultMaxAttempts: read.integer('JOB_MAX_ATTEMPTS', 5, { min: 1, max: 100 }),
      outageBudgetMs: read.integer('DEPENDENCY_OUTAGE_BUDGET_MS', 3_600_000, { min: 0, max: 7 * 86_400_000 }),
      outageBackoffMaxMs: read.integer('DEPENDENCY_OUTAGE_BACKOFF_MAX_MS', 120_000, { min: 1, max: 3_600_000 }),
      prefetchWindowMs: read.integer('WORKER_PREFETCH_WINDOW_MS', 1_000, { min: 0, max: 60_000 }),
      prefetchMax: read.integer('WORKER_PREFETCH_MAX', 1_000, { min: 0, max: 100_000 }),
      stateNotifications: read.boolean('JOB_STATE_NOTIFICATIONS', true),
    },
    queue: {
      fairShare: { enabled: read.boolean('FAIR_CLAIM', true), tenantWeights: read.tenantWeights('TENANT_WEIGHTS') },
      tenantKindConcurrency: read.kindLimits('TENANT_KIND_CONCURRENCY'),
      admission: {
        tenant: {
          runs: read.integer('ADMISSION_TENANT_QUEUED_RUNS', 10_000, { min: 0, max: 100_000_000 }),
          bytes: read.integer('ADMISSION_TENANT_QUEUED_BYTES', 0, { min: 0, max: 1024 ** 5 }),
          oldestQueuedMs: read.integer('ADMISSION_TENANT_OLDEST_QUEUED_MS', 0, { min: 0, max: 30 * 86_400_000 }),
        },
        total: {
          runs: read.integer('ADMISSION_TOTAL_QUEUED_RUNS', 100_000, { min: 0, max: 100_000_000 }),
          bytes: read.integer('ADMISSION_TOTAL_QUEUED_BYTES', 0, { min: 0, max: 1024 ** 5 }),
          oldestQueuedMs: read.integer('ADMISSION_TOTAL_OLDEST_QUEUED_MS', 0, { min: 0, max: 30 * 86_400_000 }),
        },
        tenantRunsByKind: read.kindLimits('ADMISSION_KIND_TENANT_QUEUED_RUNS'),
        totalRunsByKind: read.kindLimits('ADMISSION_KIND_TOTAL_QUEUED_RUNS'),
      },
    },
    massImport: {
      maxFiles: read.integer('MASS_IMPORT_MAX_FILES', 50_000, { min: 1, max: 10_000_000 }),
      maxTotalBytes: read.integer('MASS_IMPORT_MAX_TOTAL_BYTES', 50 * GiB, { min: 1, max: 1024 ** 5 }),
      maxFileBytes: read.integer('MASS_IMPORT_MAX_FILE_BYTES', 5 * GiB, { min: 1, max: 5 * 1024 ** 4 }),
      hardCapFiles: read.integer('MASS_IMPORT_HARD_CAP_FILES', 1_000_000, { min: 1, max: 100_000_000 }),
      hardCapTotalBytes: read.integer('MASS_IMPORT_HARD_CAP_TOTAL_BYTES', 1024 * GiB, { min: 1, max: 1024 ** 5 }),
      hardCapFileBytes: read.integer('MASS_IMPORT_HARD_CAP_FILE_BYTES', 50 * GiB, { min: 1, max: 5 * 1024 ** 4 }),
      concurrency: read.integer('MASS_IMPORT_CONCURRENCY', 8, { min: 1, max: 256 }),
      multipartThresholdBytes: read.integer('MASS_IMPORT_MULTIPART_THRESHOLD_BYTES', 8 * 1024 ** 2, {
        min: 5 * 1024 ** 2,
        max: 5 * GiB,
      }),
      // At most this much memory per file in flight (MASS_IMPORT_CONCURRENCY of them); larger files below the
      // multipart threshold are streamed.
      bufferLimitBytes: read.integer('MASS_IMPORT_BUFFER_LIMIT_BYTES', 16 * 1024 ** 2, { min: 64 * 1024, max: 1024 ** 3 }),
      requestTimeoutMs: read.integer('MASS_IMPORT_REQUEST_TIMEOUT_MS', 120_000, { min: 100, max: 3_600_000 }),
    },
    csv: {
      finalizeChunkSize: read.integer('CSV_FINALIZE_CHUNK_SIZE', 500, { min: 1, max: 100_000 }),
      // 3: while one lane waits on its round trip the others keep the database busy (bench:csv compares lanes).
      finalizeConnections: read.integer('CSV_FINALIZE_CONNECTIONS', 3, { min: 1, max: 32 }),
    },
    health: {
      heartbeatFile: read.absolutePath('HEALTH_HEARTBEAT_FILE', DEFAULT_HEARTBEAT_FILE),
      maxAgeMs: read.integer('HEALTH_MAX_AGE_MS', 60_000, { min: 1_000, max: 3_600_000 }),
    },
    metrics: {
      namespace: read.optionalString('METRICS_NAMESPACE', /^[A-Za-z0-9._/#:-]{1,255}$/, 'a CloudWatch namespace'),
      cloudWatchEndpoint: read.url('CLOUDWATCH_ENDPOINT'),
      gaugeIntervalMs: read.integer('METRICS_GAUGE_INTERVAL_MS', 60_000, { min: 1_000, max: 3_600_000 }),
    },
    notifications: {
      topicArn: read.optionalString('NOTIFICATIONS_TOPIC_ARN', SNS_TOPIC_ARN, 'an SNS topic ARN such as arn:aws:sns:eu-west-1:123456789012:bulk-import-outcomes'),
      snsEndpoint: read.url('SNS_ENDPOINT'),
      states: read.terminalStates('NOTIFY_STATES', ['dead', 'failed', 'partial']),
      adminBaseUrl: read.url('ADMIN_BASE_URL')?.replace(/\/+$/, ''),
      pollIntervalMs: read.integer('NOTIFICATIONS_POLL_MS', 5_000, { min: 50, max: 600_000 }),
    },
    ecsAgentUri: read.url('ECS_AGENT_URI'),
  };
  if (config.worker.backoffMaxMs < config.worker.backoffBaseMs) {
    throw new ConfigError(
      'RETRY_BACKOFF_MAX_MS',
      `RETRY_BACKOFF_MAX_MS (${config.worker.backoffMaxMs}) must be at least RETRY_BACKOFF_BASE_MS (${config.worker.backoffBaseMs})`,
    );
  }
  if (config.worker.outageBackoffMaxMs < config.worker.backoffBaseMs) {
    throw new ConfigError(
      'DEPENDENCY_OUTAGE_BACKOFF_MAX_MS',
      `DEPENDENCY_OUTAGE_BACKOFF_MAX_MS (${config.worker.outageBackoffMaxMs}) must be at least RETRY_BACKOFF_BASE_MS (${config.worker.backoffBaseMs}), the first wait of an outage`,
    );
  }
  // An idle worker's loop turns once a poll interval, and each turn touches the health heartbeat: a longer wait than a
  // quarter of the check's limit would let the file of a healthy idle worker go stale, and ECS replace it for nothing.
  if (config.worker.pollIntervalMs * 4 > config.health.maxAgeMs) {
    throw new ConfigError(
      'WORKER_POLL_INTERVAL_MS',
      `WORKER_POLL_INTERVAL_MS (${config.worker.pollIntervalMs}) must be at most a quarter of HEALTH_MAX_AGE_MS (${config.health.maxAgeMs}): ` +
        'each turn of an idle worker\'s loop touches the health heartbeat',
    );
  }
  if (config.databaseIamAuth && config.databaseSsl.mode === 'disable') {
    throw new ConfigError(
      'DATABASE_IAM_AUTH',
      'DATABASE_IAM_AUTH=true needs TLS (RDS refuses IAM tokens without it): set DATABASE_SSL_MODE=verify-full',
    );
  }
  return config;
}

/** The database URL, or a ConfigError that says how to provide it. */
export function requireDatabaseUrl(config: Config): string {
  if (!config.databaseUrl) {
    throw new ConfigError(
      'DATABASE_URL',
      'DATABASE_URL is not set: expected a Postgres URL such as postgres://user:password@host:5432/dbname ' +
        '(or run `npm run local` for an embedded database)',
    );
  }
  return config.databaseUrl;
}

const connections = new WeakMap<Config, DatabaseConnection>();

/**
 * How to reach the database: URL, TLS and IAM authentication together. One per configuration, so the whole process
 * shares one IAM token source.
 */
export function requireDatabase(config: Config): DatabaseConnection {
  const url = requireDatabaseUrl(config);
  let connection = connections.get(config);
  if (!connection) {
    connection = {
      url,
      sslMode: config.databaseSsl.mode,
      sslRootCert: config.databaseSsl.rootCert,
      iamToken: config.databaseIamAuth ? iamTokenSourceFor(url, config.awsRegion) : undefined,
    };
    connections.set(config, connection);
  }
  return connection;
}

export function requireBucket(config: Config): string {
  if (!config.s3Bucket) {
    throw new ConfigError('S3_BUCKET', 'S3_BUCKET is not set: expected the name of the bucket imports write to');
  }
  return config.s3Bucket;
}

class EnvReader {
  constructor(private readonly env: Env) {}

  private raw(name: string): string | undefined {
    const value = this.env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  }

  private fail(name: string, value: string, expected: string): never {
    throw new ConfigError(name, `${name}=${JSON.stringify(value)} is invalid: expected ${expected}`);
  }

  string(name: string, fallback: string, pattern: RegExp, expected: string): string {
    return this.optionalString(name, pattern, expected) ?? fallback;
  }

  optionalString(name: string, pattern: RegExp, expected: string): string | undefined {
    const value = this.raw(name);
    if (value === undefined) return undefined;
    if (!pattern.test(value)) this.fail(name, value, expected);
    return value;
  }

  integer(name: string, fallback: number, range: { min: number; max: number }): number {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    const expected = `a whole number from ${range.min} to ${range.max}`;
    if (!/^-?\d+$/.test(value)) this.fail(name, value, expected);
    const parsed = Number(value);
    if (!Number.isSafeInteger(parsed) || parsed < range.min || parsed > range.max) this.fail(name, value, expected);
    return parsed;
  }

  boolean(name: string, fallback: boolean): boolean {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (/^(1|true|yes|on)$/i.test(value)) return true;
    if (/^(0|false|no|off)$/i.test(value)) return false;
    return this.fail(name, value, 'true or false');
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(value)) this.fail(name, value, `one of ${allowed.join(', ')}`);
    return value as T;
  }

  url(name: string): string | undefined {
    const value = this.raw(name);
    if (value === undefined) return undefined;
    try {
      const url = new URL(value);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('protocol');
    } catch {
      this.fail(name, value, 'an http:// or https:// URL');
    }
    return value;
  }

  postgresUrl(name: string): string | undefined {
    const value = this.raw(name);
    if (value === undefined) return undefined;
    // The value is never repeated in the message: it may hold a password, and this message reaches the logs.
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      throw new ConfigError(
        name,
        `${name} is not a valid URL (its value is not shown: it may hold a password): expected ` +
          'postgres://user:password@host:5432/dbname, with / @ : % # ? in the user or password percent-encoded ' +
          '(/ as %2F, @ as %40, : as %3A, % as %25)',
      );
    }
    if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
      throw new ConfigError(name, `${name} must be a Postgres URL (postgres:// or postgresql://), not ${url.protocol}//`);
    }
    try {
      decodeURIComponent(url.password);
      decodeURIComponent(url.username);
    } catch {
      throw new ConfigError(name, `${name} has a malformed percent-escape in its user or password (a literal % is written %25)`);
    }
    // Only the parameters connectionConfig reads (sslmode, sslrootcert, a socket directory as host): any other would
    // be ignored, or, handed to pg, override TLS and the session settings (worker/db/connection.ts).
    const problem = databaseUrlProblem(url);
    if (problem) throw new ConfigError(name, `${name} ${problem}`);
    const mode = url.searchParams.get('sslmode');
    if (mode !== null && !isSslMode(mode)) {
      throw new ConfigError(name, `${name} has sslmode=${JSON.stringify(mode)}: expected one of ${SSL_MODES.join(', ')}`);
    }
    return value;
  }

  /**
   * DATABASE_SSL_MODE / DATABASE_SSL_ROOT_CERT, else the URL's sslmode / sslrootcert, else no TLS. `require` with a
   * root certificate (from either) is `verify-ca`, as in libpq: the chain is checked against it (tlsOptions).
   */
  databaseSsl(): { mode: SslMode; rootCert: string | undefined } {
    const url = this.postgresUrl('DATABASE_URL');
    const params = url ? new URL(url).searchParams : undefined;
    const mode = this.raw('DATABASE_SSL_MODE');
    if (mode !== undefined && !isSslMode(mode)) this.fail('DATABASE_SSL_MODE', mode, `one of ${SSL_MODES.join(', ')}`);
    const rootCert = this.raw('DATABASE_SSL_ROOT_CERT') ?? params?.get('sslrootcert') ?? undefined;
    if (rootCert !== undefined && !rootCert.startsWith('/')) {
      this.fail('DATABASE_SSL_ROOT_CERT', rootCert, 'an absolute path to a PEM file of CA certificates');
    }
    const urlMode = params?.get('sslmode');
    return { mode: (mode as SslMode | undefined) ?? (urlMode && isSslMode(urlMode) ? urlMode : 'disable'), rootCert };
  }

  bucketName(name: string): string | undefined {
    return this.optionalString(
      name,
      /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/,
      'an S3 bucket name: 3-63 lowercase letters, digits, dots or hyphens',
    );
  }

  absolutePath(name: string, fallback: string): string {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (!value.startsWith('/')) this.fail(name, value, 'an absolute path such as /import');
    return value.length > 1 ? value.replace(/\/+$/, '') : value;
  }

  list(name: string): string[] {
    const value = this.raw(name);
    if (value === undefined) return [];
    const items = value.split(',').map((item) => item.trim());
    if (items.some((item) => !/^[a-z0-9-]+$/.test(item))) {
      this.fail(name, value, 'a comma-separated list of job kinds such as mass-import,csv-import');
    }
    return items;
  }

  /** `tenant=weight` pairs, e.g. `acme=3,beta=2`: a tenant id as enqueue accepts it, a weight from 1 to 100. */
  tenantWeights(name: string): Record<string, number> {
    const value = this.raw(name);
    if (value === undefined) return {};
    const weights: Record<string, number> = {};
    for (const entry of value.split(',')) {
      const match = /^\s*([A-Za-z0-9._-]{1,128})\s*=\s*(\d+)\s*$/.exec(entry);
      const weight = match ? Number(match[2]) : 0;
      if (!match || weight < 1 || weight > MAX_TENANT_WEIGHT) {
        this.fail(name, value, `tenant=weight pairs separated by commas, weights from 1 to ${MAX_TENANT_WEIGHT}, e.g. acme=3,beta=2`);
      }
      weights[match[1]!] = weight;
    }
    return weights;
  }

  /** `all`, or terminal states separated by commas. */
  terminalStates(name: string, fallback: JobState[]): JobState[] {
    const value = this.raw(name);
    if (value === undefined) return fallback;
    if (value === 'all') return [...TERMINAL_STATES];
    if (value === 'none') return [];
    const states = value.split(',').map((state) => state.trim());
    if (states.some((state) => !(TERMINAL_STATES as readonly string[]).includes(state))) {
      this.fail(name, value, `all, none, or some of ${TERMINAL_STATES.join(',')} separated by commas`);
    }
    return [...new Set(states)] as JobState[];
  }

  kindLimits(name: string): Record<string, number> {
    const value = this.raw(name);
    if (value === undefined) return {};
    const limits: Record<string, number> = {};
    for (const entry of value.split(',')) {
      const match = /^\s*([a-z0-9-]+)\s*=\s*(\d+)\s*$/.exec(entry);
      const limit = match ? Number(match[2]) : 0;
      if (!match || limit < 1) this.fail(name, value, 'kind=limit pairs separated by commas, e.g. csv-import=2');
      limits[match[1]!] = limit;
    }
    return limits;
  }
}
