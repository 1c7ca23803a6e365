// Every variable worker/config.ts reads, seen from the stack: either the stack sets it (fixed, derived from another
// setting, or a worker setting below whose key is the variable's name in camelCase, the same from cdk.json / -c to
// the construct prop), or it is deliberately left at the worker's default, with the reason. test/infra-worker-
// settings.test.ts keeps this file and worker/config.ts in step. The worker's own reader validates the values, so
// ranges are written once (worker/config.ts).
import { ConfigError, loadConfig } from '../worker/config.js';
import { defaultRegistry } from '../worker/handlers/registry.js';

/**
 * How a worker setting is given: a whole number, a switch, per-kind limits (`{"csv-import": 2}` or `csv-import=2,…`,
 * kinds checked against the worker's registry), or per-tenant weights (`{"acme": 3}` or `acme=3,…`).
 */
export type SettingType = 'integer' | 'boolean' | 'kindLimits' | 'tenantWeights';

/** Worker variables an operator may need to change per environment, by setting key. */
export const WORKER_SETTINGS = {
  databasePoolSize: { variable: 'DATABASE_POOL_SIZE', type: 'integer' },
  databaseStartupTimeoutMs: { variable: 'DATABASE_STARTUP_TIMEOUT_MS', type: 'integer' },
  s3StallTimeoutMs: { variable: 'S3_STALL_TIMEOUT_MS', type: 'integer' },
  workerKindConcurrency: { variable: 'WORKER_KIND_CONCURRENCY', type: 'kindLimits' },
  workerLeaseMs: { variable: 'WORKER_LEASE_MS', type: 'integer' },
  workerPollIntervalMs: { variable: 'WORKER_POLL_INTERVAL_MS', type: 'integer' },
  workerPrefetchWindowMs: { variable: 'WORKER_PREFETCH_WINDOW_MS', type: 'integer' },
  workerPrefetchMax: { variable: 'WORKER_PREFETCH_MAX', type: 'integer' },
  retentionDays: { variable: 'RETENTION_DAYS', type: 'integer' },
  retryBackoffBaseMs: { variable: 'RETRY_BACKOFF_BASE_MS', type: 'integer' },
  retryBackoffMaxMs: { variable: 'RETRY_BACKOFF_MAX_MS', type: 'integer' },
  jobMaxAttempts: { variable: 'JOB_MAX_ATTEMPTS', type: 'integer' },
  dependencyOutageBudgetMs: { variable: 'DEPENDENCY_OUTAGE_BUDGET_MS', type: 'integer' },
  dependencyOutageBackoffMaxMs: { variable: 'DEPENDENCY_OUTAGE_BACKOFF_MAX_MS', type: 'integer' },
  massImportMaxFiles: { variable: 'MASS_IMPORT_MAX_FILES', type: 'integer' },
  massImportMaxTotalBytes: { variable: 'MASS_IMPORT_MAX_TOTAL_BYTES', type: 'integer' },
  massImportMaxFileBytes: { variable: 'MASS_IMPORT_MAX_FILE_BYTES', type: 'integer' },
  massImportHardCapFiles: { variable: 'MASS_IMPORT_HARD_CAP_FILES', type: 'integer' },
  massImportHardCapTotalBytes: { variable: 'MASS_IMPORT_HARD_CAP_TOTAL_BYTES', type: 'integer' },
  massImportHardCapFileBytes: { variable: 'MASS_IMPORT_HARD_CAP_FILE_BYTES', type: 'integer' },
  massImportConcurrency: { variable: 'MASS_IMPORT_CONCURRENCY', type: 'integer' },
  massImportMultipartThresholdBytes: { variable: 'MASS_IMPORT_MULTIPART_THRESHOLD_BYTES', type: 'integer' },
  massImportBufferLimitBytes: { variable: 'MASS_IMPORT_BUFFER_LIMIT_BYTES', type: 'integer' },
  massImportRequestTimeoutMs: { variable: 'MASS_IMPORT_REQUEST_TIMEOUT_MS', type: 'integer' },
  csvFinalizeChunkSize: { variable: 'CSV_FINALIZE_CHUNK_SIZE', type: 'integer' },
  csvFinalizeConnections: { variable: 'CSV_FINALIZE_CONNECTIONS', type: 'integer' },
  fairClaim: { variable: 'FAIR_CLAIM', type: 'boolean' },
  tenantWeights: { variable: 'TENANT_WEIGHTS', type: 'tenantWeights' },
  tenantKindConcurrency: { variable: 'TENANT_KIND_CONCURRENCY', type: 'kindLimits' },
  admissionTenantQueuedRuns: { variable: 'ADMISSION_TENANT_QUEUED_RUNS', type: 'integer' },
  admissionTenantQueuedBytes: { variable: 'ADMISSION_TENANT_QUEUED_BYTES', type: 'integer' },
  admissionTenantOldestQueuedMs: { variable: 'ADMISSION_TENANT_OLDEST_QUEUED_MS', type: 'integer' },
  admissionTotalQueuedRuns: { variable: 'ADMISSION_TOTAL_QUEUED_RUNS', type: 'integer' },
  admissionTotalQueuedBytes: { variable: 'ADMISSION_TOTAL_QUEUED_BYTES', type: 'integer' },
  admissionTotalOldestQueuedMs: { variable: 'ADMISSION_TOTAL_OLDEST_QUEUED_MS', type: 'integer' },
  admissionKindTenantQueuedRuns: { variable: 'ADMISSION_KIND_TENANT_QUEUED_RUNS', type: 'kindLimits' },
  admissionKindTotalQueuedRuns: { variable: 'ADMISSION_KIND_TOTAL_QUEUED_RUNS', type: 'kindLimits' },
} as const satisfies Record<string, { variable: string; type: SettingType }>;

export type WorkerSettingKey = keyof typeof WORKER_SETTINGS;
type ValueOf<T extends SettingType> = T extends 'integer' ? number : T extends 'boolean' ? boolean : Readonly<Record<string, number>>;
/** The worker settings as construct props: each optional; unset ones stay at the worker's default. */
export type WorkerSettings = { readonly [K in WorkerSettingKey]?: ValueOf<(typeof WORKER_SETTINGS)[K]['type']> };
export const WORKER_SETTING_KEYS = Object.keys(WORKER_SETTINGS) as WorkerSettingKey[];

/**
 * Variables worker/config.ts reads that the stack never sets, each with the reason. Everything else it reads is set
 * by the construct: fixed (LOG_FORMAT=json, IMPORT_ROOT, HEALTH_HEARTBEAT_FILE), derived (S3_BUCKET, AWS_REGION,
 * METRICS_NAMESPACE, WORKER_CONCURRENCY, WORKER_SHUTDOWN_GRACE_MS, LOG_LEVEL, the DATABASE_* TLS/IAM variables),
 * the DATABASE_URL secret, or one of WORKER_SETTINGS.
 */
export const VARIABLES_LEFT_AT_DEFAULT: Readonly<Record<string, string>> = {
  S3_ENDPOINT: 'an S3-compatible server for local runs and tests; in AWS the SDK finds S3 itself',
  S3_FORCE_PATH_STYLE: 'only meaningful with S3_ENDPOINT',
  CLOUDWATCH_ENDPOINT: 'a local CloudWatch stand-in for tests; in AWS the SDK finds CloudWatch itself',
  SNS_ENDPOINT: 'a local SNS stand-in for tests; in AWS the SDK finds SNS itself',
  NOTIFICATIONS_POLL_MS: 'a fallback for when no state notification woke the publisher; run notifications do not wait on it',
  IMPORT_ROOT_REQUIRE_MOUNT: 'true is the safety the campaign mount relies on (OQ-IMP-001); false is for local runs only',
  WORKER_ID: 'the default (host name, pid and a random part) is unique per task; a fixed value would be shared by every task',
  WORKER_KINDS:
    'the service runs every kind; the scheduled audit task narrows its own command with --kinds, and pools are ' +
    'separated with workerKindConcurrency instead',
  WORKER_HEARTBEAT_MS: 'follows workerLeaseMs (a third of the lease), which is the setting to change',
  WORKER_RESCUE_INTERVAL_MS: 'how often expired leases are looked for; the lease length (workerLeaseMs) bounds the wait',
  RETENTION_INTERVAL_MS: 'how often retention runs; what it keeps is retentionDays',
  ARCHIVE_AFTER_SECONDS: 'a minute keeps the move away from what still touches a run just after it ends; the live partition stays small at any value',
  ARCHIVE_INTERVAL_MS: 'how often finished runs are filed into the archive; a round that ends at its bound is followed in a second',
  JOB_STATE_NOTIFICATIONS: 'the API\'s event streams and run notifications depend on them; not an operator switch',
  HEALTH_MAX_AGE_MS: 'the container health check and the heartbeat cadence are set together in the image and task definition',
  METRICS_GAUGE_INTERVAL_MS: 'the alarms and autoscaling evaluate the gauges per minute; the default (60 s) matches them',
  ECS_AGENT_URI: 'set by ECS inside every task',
  // The AWS SDK's own credential sources: the worker reads only whether one is set (Config.awsCredentialsConfigured).
  AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: 'set by ECS inside every task that has a task role (the stack gives the worker one)',
  AWS_CONTAINER_CREDENTIALS_FULL_URI: 'a credentials endpoint of other container hosts; ECS sets the relative one',
  AWS_ACCESS_KEY_ID: 'static keys are for local runs; the task role gives the deployed worker its credentials',
  AWS_WEB_IDENTITY_TOKEN_FILE: 'web identity (EKS); ECS tasks use the task role',
  AWS_PROFILE: 'a shared-credentials profile is for local runs',
};

/** Thrown with the setting key named, for a value the worker would refuse at start-up. */
export class WorkerSettingsError extends Error {
  constructor(
    readonly key: WorkerSettingKey,
    message: string,
  ) {
    super(message);
    this.name = 'WorkerSettingsError';
  }
}

/**
 * The worker container's health check (infra/bulk-import-worker.ts) reads the heartbeat file, which a worker writes
 * only once its database answered (worker/runner/worker-process.ts: after waitForDatabase, which waits up to
 * DATABASE_STARTUP_TIMEOUT_MS). So the check's start period covers that whole wait, plus this margin for what comes
 * around it: the process starting before the wait, and the first poll-loop turn after it. The retries are left for a
 * running worker.
 */
const HEALTH_CHECK_STARTUP_MARGIN_SECONDS = 30;
/** The health check's start period when the database wait is short (the wait + margin is less). */
const HEALTH_CHECK_MIN_START_PERIOD_SECONDS = 60;
/** The longest start period ECS takes (HealthCheck.startPeriod: 0–300 s). */
const HEALTH_CHECK_MAX_START_PERIOD_SECONDS = 300;

/**
 * The start period of the worker's health check for the given container variables (DATABASE_STARTUP_TIMEOUT_MS, or the
 * worker's default when unset): the database wait + the margin, at least the minimum. Can exceed what ECS takes: see
 * checkHealthCheckCoversStartup.
 */
export function healthCheckStartPeriodSeconds(environment: Record<string, string>): number {
  const waitSeconds = Math.ceil(loadConfig(environment).databaseStartupTimeoutMs / 1000);
  return Math.max(HEALTH_CHECK_MIN_START_PERIOD_SECONDS, waitSeconds + HEALTH_CHECK_STARTUP_MARGIN_SECONDS);
}

/** Refuses a database start-up wait the health check's start period cannot cover (ECS's 300 s at most). */
function checkHealthCheckCoversStartup(environment: Record<string, string>): void {
  const startPeriod = healthCheckStartPeriodSeconds(environment);
  if (startPeriod <= HEALTH_CHECK_MAX_START_PERIOD_SECONDS) return;
  const timeoutMs = loadConfig(environment).databaseStartupTimeoutMs;
  const longest = (HEALTH_CHECK_MAX_START_PERIOD_SECONDS - HEALTH_CHECK_STARTUP_MARGIN_SECONDS) * 1000;
  throw new WorkerSettingsError(
    'databaseStartupTimeoutMs',
    `databaseStartupTimeoutMs: ${timeoutMs} ms (DATABASE_STARTUP_TIMEOUT_MS) is longer than the container health check ` +
      `can cover: a starting worker writes its heartbeat only once the database answered, so the check's start period ` +
      `would have to be ${startPeriod} s (the wait + ${HEALTH_CHECK_STARTUP_MARGIN_SECONDS} s), and ECS allows at most ` +
      `${HEALTH_CHECK_MAX_START_PERIOD_SECONDS} s: the health check would replace the worker while it still waits. ` +
      `Use at most ${longest} ms`,
  );
}

/**
 * The container variables of the given worker settings, checked by the worker's own configuration reader, and the
 * database start-up wait against the container health check (checkHealthCheckCoversStartup).
 */
export function workerSettingsEnvironment(settings: WorkerSettings): Record<string, string> {
  const environment: Record<string, string> = {};
  const keyOf = new Map<string, WorkerSettingKey>();
  for (const key of WORKER_SETTING_KEYS) {
    const value = settings[key];
    if (value === undefined) continue;
    const { variable } = WORKER_SETTINGS[key];
    keyOf.set(variable, key);
    environment[variable] =
      typeof value === 'number' || typeof value === 'boolean' ? `${value}` : pairsText(key, value, WORKER_SETTINGS[key].type === 'kindLimits');
  }
  try {
    loadConfig(environment);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const key = keyOf.get(error.variable) ?? WORKER_SETTING_KEYS.find((k) => WORKER_SETTINGS[k].variable === error.variable)!;
    throw new WorkerSettingsError(key, `${key}: ${error.message}`);
  }
  checkHealthCheckCoversStartup(environment);
  return environment;
}

function pairsText(key: WorkerSettingKey, limits: Readonly<Record<string, number>>, kinds: boolean): string {
  const known = defaultRegistry().kinds();
  const unknown = kinds ? Object.keys(limits).filter((kind) => !known.includes(kind)) : [];
  if (unknown.length > 0) {
    throw new WorkerSettingsError(key, `${key} names unknown job kinds ${unknown.join(', ')} (known: ${known.join(', ')})`);
  }
  return Object.entries(limits)
    .map(([kind, limit]) => `${kind}=${limit}`)
    .join(',');
}
