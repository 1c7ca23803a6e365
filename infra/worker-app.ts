// Builds the CDK app from its context: normalised settings, the one stack, tags, and cdk-nag's AWS Solutions checks
// (a finding that is not acknowledged with a reason fails synthesis). Shared by infra/app.ts and the tests.
import { type App, type Environment, Tags, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { BulkImportWorkerStack } from './bulk-import-worker-stack.js';
import { readWorkerSettings, SettingsError, type WorkerStackSettings } from './settings.js';

export interface WorkerApp {
  stack: BulkImportWorkerStack;
  settings: WorkerStackSettings;
}

/**
 * Adds the worker stack to `app` from the app's context. `defaultEnv` is where the CDK CLI's account and region
 * come from (CDK_DEFAULT_ACCOUNT/REGION); it is only used when a VPC lookup needs a concrete environment.
 */
export function addWorkerStack(
  app: App,
  defaultEnv: { account?: string | undefined; region?: string | undefined } = {},
): WorkerApp {
  const settings = readWorkerSettings((key) => app.node.tryGetContext(key));
  const stack = new BulkImportWorkerStack(app, settings.stackName, {
    settings,
    env: stackEnvironment(settings, defaultEnv),
    description: `bulk-import worker (${settings.environment}): Fargate service, campaign mount, alarms`,
    terminationProtection: settings.environment === 'prod',
  });
  Tags.of(stack).add('project', 'bulk-import-worker');
  Tags.of(stack).add('environment', settings.environment);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { stack, settings };
}

/** Environment-agnostic unless account/region are set, or a VPC lookup needs them. */
function stackEnvironment(
  settings: WorkerStackSettings,
  defaultEnv: { account?: string | undefined; region?: string | undefined },
): Environment | undefined {
  const account = settings.account ?? (settings.vpc.kind === 'lookup' ? defaultEnv.account : undefined);
  const region = settings.region ?? (settings.vpc.kind === 'lookup' ? defaultEnv.region : undefined);
  if (settings.vpc.kind === 'lookup' && (!account || !region)) {
    throw new SettingsError(
      'vpcId',
      'looking up vpcId needs an account and region: pass -c account=… -c region=…, run the CDK CLI with ' +
        'credentials, or import the VPC offline with -c privateSubnetIds=… -c availabilityZones=…',
    );
  }
  return account || region ? { account, region } : undefined;
}
