// CDK app entry (cdk.json: "app"). Reads the context (`-c key=value`, cdk.json), synthesizes the worker stack, and
// turns a bad setting into one clear line and exit code 1 instead of a stack trace.
import { App } from 'aws-cdk-lib';
import { WorkerPropsError } from './bulk-import-worker-props.js';
import { SettingsError } from './settings.js';
import { addWorkerStack } from './worker-app.js';

// autoSynth off: synthesized once, below, and never on exit after a refusal (a half-built stack would still be
// written to cdk.out by the beforeExit hook the CLI otherwise gets).
const app = new App({ autoSynth: false });
try {
  addWorkerStack(app, { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION });
  app.synth();
} catch (error) {
  if (!(error instanceof SettingsError || error instanceof WorkerPropsError)) throw error;
  process.stderr.write(`bulk-import-worker infra: ${error.message}\n`);
  process.exitCode = 1;
}
