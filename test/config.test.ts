import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, requireDatabaseUrl } from '../worker/config.js';

function refusal(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected loadConfig to refuse the environment');
}

describe('configuration', () => {
  it('has working defaults for an empty environment', () => {
    const config = loadConfig({});
    expect(config.importRoot).toBe('/import');
    expect(config.logLevel).toBe('info');
    expect(config.s3Endpoint).toBeUndefined();
    expect(config.s3ForcePathStyle).toBe(false);
    expect(config.worker.heartbeatMs).toBe(Math.floor(config.worker.leaseMs / 3));
    // A run waits out an outage of S3 or the database for up to an hour, retrying at least every two minutes.
    expect(config.worker.outageBudgetMs).toBe(3_600_000);
    expect(config.worker.outageBackoffMaxMs).toBe(120_000);
  });

  it('reads the dependency outage settings; a budget of 0 turns the waiting off', () => {
    const config = loadConfig({ DEPENDENCY_OUTAGE_BUDGET_MS: '0', DEPENDENCY_OUTAGE_BACKOFF_MAX_MS: '30000' });
    expect(config.worker.outageBudgetMs).toBe(0);
    expect(config.worker.outageBackoffMaxMs).toBe(30_000);
  });

  it('parses valid values', () => {
    const config = loadConfig({
      DATABASE_URL: 'postgres://u:p@db:5432/app',
      S3_ENDPOINT: 'http://127.0.0.1:4568',
      S3_BUCKET: 'my-bucket',
      IMPORT_ROOT: '/mnt/import/',
      WORKER_CONCURRENCY: '4',
      WORKER_KINDS: 'mass-import, noop',
      WORKER_KIND_CONCURRENCY: 'csv-import=2,csv-finalize=1',
      LOG_LEVEL: 'debug',
    });
    expect(config.s3ForcePathStyle).toBe(true);
    expect(config.importRoot).toBe('/mnt/import');
    expect(config.worker.concurrency).toBe(4);
    expect(config.worker.kinds).toEqual(['mass-import', 'noop']);
    expect(config.worker.kindConcurrency).toEqual({ 'csv-import': 2, 'csv-finalize': 1 });
  });

  it.each([
    [{ WORKER_CONCURRENCY: 'lots' }, 'WORKER_CONCURRENCY', 'a whole number from 1 to 1000'],
    [{ WORKER_CONCURRENCY: '0' }, 'WORKER_CONCURRENCY', 'a whole number from 1 to 1000'],
    [{ DATABASE_URL: 'mysql://x@y/z' }, 'DATABASE_URL', 'a Postgres URL'],
    [{ S3_ENDPOINT: 'localhost:4568' }, 'S3_ENDPOINT', 'an http:// or https:// URL'],
    [{ S3_BUCKET: 'Bad_Bucket' }, 'S3_BUCKET', 'an S3 bucket name'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL', 'one of fatal, error, warn, info, debug, trace, silent'],
    [{ IMPORT_ROOT: 'import' }, 'IMPORT_ROOT', 'an absolute path'],
    [{ S3_FORCE_PATH_STYLE: 'maybe' }, 'S3_FORCE_PATH_STYLE', 'true or false'],
    [{ WORKER_KIND_CONCURRENCY: 'csv-import:2' }, 'WORKER_KIND_CONCURRENCY', 'kind=limit pairs'],
    [{ RETRY_BACKOFF_BASE_MS: '5000', RETRY_BACKOFF_MAX_MS: '100' }, 'RETRY_BACKOFF_MAX_MS', 'must be at least'],
    [{ DEPENDENCY_OUTAGE_BUDGET_MS: '1h' }, 'DEPENDENCY_OUTAGE_BUDGET_MS', 'a whole number from 0 to 604800000'],
    [{ MASS_IMPORT_BUFFER_LIMIT_BYTES: '1024' }, 'MASS_IMPORT_BUFFER_LIMIT_BYTES', 'a whole number from 65536 to 1073741824'],
    [{ DEPENDENCY_OUTAGE_BACKOFF_MAX_MS: '500' }, 'DEPENDENCY_OUTAGE_BACKOFF_MAX_MS', 'must be at least RETRY_BACKOFF_BASE_MS'],
    // An idle worker touches the health heartbeat once a poll: a healthy idle task would be replaced.
    [{ WORKER_POLL_INTERVAL_MS: '20000' }, 'WORKER_POLL_INTERVAL_MS', 'at most a quarter of HEALTH_MAX_AGE_MS (60000)'],
    [{ WORKER_POLL_INTERVAL_MS: '3000', HEALTH_MAX_AGE_MS: '10000' }, 'WORKER_POLL_INTERVAL_MS', 'at most a quarter of HEALTH_MAX_AGE_MS'],
  ])('refuses %j naming the variable and the expected form', (env, variable, expected) => {
    const error = refusal(env);
    expect(error.variable).toBe(variable);
    expect(error.message).toContain(variable);
    expect(error.message).toContain(expected);
  });

  it('knows whether the environment gives the AWS SDK a source of credentials (a task role, keys, a profile)', () => {
    expect(loadConfig({}).awsCredentialsConfigured).toBe(false);
    expect(loadConfig({ AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/credentials/abc' }).awsCredentialsConfigured).toBe(true);
    expect(loadConfig({ AWS_ACCESS_KEY_ID: 'AKIAEXAMPLE' }).awsCredentialsConfigured).toBe(true);
    expect(loadConfig({ AWS_PROFILE: '' }).awsCredentialsConfigured).toBe(false);
  });

  it('does not echo a database password in the refusal', () => {
    const error = refusal({ DATABASE_URL: 'mysql://user:secret@db/app' });
    expect(error.message).not.toContain('secret');
  });

  it('explains how to provide a missing database URL', () => {
    expect(() => requireDatabaseUrl(loadConfig({}))).toThrow(/DATABASE_URL is not set/);
  });
});
