// The real `cdk synth`, as CI and operators run it: the local CDK CLI executes cdk.json's app with `-c` strings,
// offline and with no AWS credentials, into a temporary output directory. It also runs cdk-nag (a finding would
// fail the synth) and shows a bad setting as one clear line.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, REQUIRED_CONTEXT, validationFindings } from './fixtures/infra/synth.js';

const CLI_TIMEOUT = 180_000;
const tempDirs: string[] = [];
afterAll(() => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

interface SynthRun {
  code: number | null;
  stdout: string;
  stderr: string;
  outdir: string;
}

/** Runs the project's own CDK CLI with no credentials anywhere it could find them. */
function cdkSynth(context: Record<string, string>): Promise<SynthRun> {
  const home = mkdtempSync(join(tmpdir(), 'bulk-import-cdk-cli-'));
  tempDirs.push(home);
  const outdir = join(home, 'cdk.out');
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(AWS_|CDK_)/.test(key)) env[key] = value;
  }
  Object.assign(env, {
    HOME: home,
    AWS_CONFIG_FILE: join(home, 'no-config'),
    AWS_SHARED_CREDENTIALS_FILE: join(home, 'no-credentials'),
    AWS_EC2_METADATA_DISABLED: 'true',
    CDK_DISABLE_CLI_TELEMETRY: 'true',
    CI: 'true',
  });
  const args = ['synth', '--quiet', '--no-notices', '--no-version-reporting', '--lookups=false', '--output', outdir];
  for (const [key, value] of Object.entries(context)) args.push('-c', `${key}=${value}`);
  return new Promise((resolve, reject) => {
    const child = spawn(join(REPO_ROOT, 'node_modules', '.bin', 'cdk'), args, { cwd: REPO_ROOT, env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, outdir }));
  });
}

describe('cdk synth (CLI, offline, no credentials)', () => {
  it('synthesizes the prod campaign from -c strings, with cdk-nag passing', { timeout: CLI_TIMEOUT }, async () => {
    const run = await cdkSynth({
      ...REQUIRED_CONTEXT,
      databaseSecret: 'prod/backend/database',
      environment: 'prod',
      desiredCount: '2',
      importCampaign: 'true',
      databaseIamAuth: 'db-ABCDEFGHIJKLMNOPQRSTUVWXY0/bulk_import',
    });
    expect(run.stderr).not.toMatch(/Validation failed|AwsSolutions-/);
    expect(run.code).toBe(0);
    const templateFile = join(run.outdir, 'BulkImportWorker-prod.template.json');
    expect(existsSync(templateFile)).toBe(true);
    const template = JSON.parse(readFileSync(templateFile, 'utf8')) as { Resources: Record<string, { Type: string; Properties: Record<string, unknown> }> };
    const byType = (type: string) => Object.values(template.Resources).filter((resource) => resource.Type === type);

    const [service] = byType('AWS::ECS::Service');
    expect(service!.Properties.DesiredCount).toBe(2);
    const [taskDefinition] = byType('AWS::ECS::TaskDefinition');
    expect(JSON.stringify(taskDefinition!.Properties.Volumes)).toContain('"Name":"import"');
    const [container] = taskDefinition!.Properties.ContainerDefinitions as Array<{ Environment: Array<{ Name: string; Value: unknown }> }>;
    expect(container!.Environment).toEqual(
      expect.arrayContaining([
        { Name: 'DATABASE_SSL_MODE', Value: 'verify-full' },
        { Name: 'DATABASE_SSL_ROOT_CERT', Value: '/app/certs/rds-ca-bundle.pem' },
        { Name: 'DATABASE_IAM_AUTH', Value: 'true' },
      ]),
    );
    const statements = byType('AWS::IAM::Policy').flatMap(
      (policy) => (policy.Properties.PolicyDocument as { Statement: Array<{ Action: unknown; Resource: unknown }> }).Statement,
    );
    const connect = statements.filter((statement) => JSON.stringify(statement.Action).includes('rds-db:'));
    expect(connect.map((statement) => [statement.Action, JSON.stringify(statement.Resource)])).toEqual([
      ['rds-db:connect', expect.stringMatching(/:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXY0\/bulk_import"\]\]\}$/)],
    ]);
    // Single-metric alarms by metric name; the others (running below desired, work waits, repeated failures per
    // kind) are metric math: test/infra-observability.test.ts.
    const alarms = byType('AWS::CloudWatch::Alarm').map((alarm) => alarm.Properties.MetricName);
    expect([...new Set(alarms.filter((name) => name !== undefined))].sort()).toEqual([
      'AuditFindings',
      'DeadJobs',
      'MaxConsecutiveFailures',
      'OldestQueuedAgeSeconds',
      'OldestRunningAgeSeconds',
    ]);
    expect(validationFindings(run.outdir)).toEqual([]);
  });

  it('stops with one clear line naming a malformed setting', { timeout: CLI_TIMEOUT }, async () => {
    const run = await cdkSynth({ ...REQUIRED_CONTEXT, environment: 'staging', desiredCount: 'lots' });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('bulk-import-worker infra: context desiredCount="lots" is invalid: expected a whole number from 0 to 100');
    expect(existsSync(join(run.outdir, 'BulkImportWorker-staging.template.json'))).toBe(false);
  });
});

describe('cdk synth refuses an open database egress in prod', () => {
  it('names the missing database security group or CIDR in one line, and writes no template', { timeout: CLI_TIMEOUT }, async () => {
    const { databaseCidr: _databaseCidr, ...withoutDatabase } = REQUIRED_CONTEXT;
    const run = await cdkSynth({ ...withoutDatabase, environment: 'prod', databaseSecret: 'prod/backend/database' });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/bulk-import-worker infra: .*prod needs databaseSecurityGroupId .* or databaseCidr/);
    expect(existsSync(join(run.outdir, 'BulkImportWorker-prod.template.json'))).toBe(false);
  });
});
