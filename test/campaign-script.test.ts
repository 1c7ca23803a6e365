// scripts/campaign.sh against stand-in `cdk` and `aws` executables (test/support/cli-stand-ins.ts), run from a
// throwaway git repository holding a committed copy of it. Covered: the diff before every deploy, the refusal of a
// dirty tree and of an unconfirmed deploy without a terminal, start/stop with their context, the hard stop
// (desired count 0, StopTask for each running task, wait, then the deploy), the count the stack asks for set after a
// deploy that did not set it (nothing changed, or autoscaling), a failed deploy whose rollback left the worker on
// another image than the pinned one (the warning and the deploy.sh command that restores it), failures and argument
// checks.
import { spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { REPO_ROOT } from './fixtures/infra/synth.js';
import { newSandbox, removeSandboxes, runScript, scriptRepository, type Sandbox } from './support/cli-stand-ins.js';

const ROOT = REPO_ROOT.replace(/\/$/, '');
const TASK_DEFINITION = 'arn:aws:ecs:eu-west-1:123456789012:task-definition/bulk-import-worker-prod:3';
const DIGEST = `sha256:${'c4'.repeat(32)}`;
const RUNNING_IMAGE = `123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend@${DIGEST}`;

let sandbox: Sandbox;
let repo: ReturnType<typeof scriptRepository>;
let cdk: string;
beforeEach(() => {
  sandbox = newSandbox({
    stackOutputs: 'ClusterName\tbulk-import-prod\nServiceName\tbulk-import-worker-prod\n',
    services: {
      'bulk-import-prod/bulk-import-worker-prod': { status: 'ACTIVE', taskDefinition: TASK_DEFINITION, deployments: [], events: [], plans: [] },
    },
    taskDefinitions: {
      [TASK_DEFINITION]: {
        taskDefinition: {
          family: 'bulk-import-worker-prod',
          revision: 3,
          status: 'ACTIVE',
          containerDefinitions: [{ name: 'otel-collector', image: 'public.ecr.aws/aws-observability/aws-otel-collector:v0.40.0' }, { name: 'worker', image: RUNNING_IMAGE }],
        },
        tags: [],
      },
    },
  });
  repo = scriptRepository(sandbox, ROOT);
  cdk = join(sandbox.bin, 'cdk');
});
afterAll(() => removeSandboxes());

const diff = (...context: string[]) => ['cdk', 'diff', 'BulkImportWorker-prod', '--no-notices', '-c', 'environment=prod', ...context];
const deploy = (...context: string[]) =>
  ['cdk', 'deploy', 'BulkImportWorker-prod', '--require-approval', 'never', '--no-notices', '-c', 'environment=prod', ...context];
const describeStacks = ['aws', 'cloudformation', 'describe-stacks', '--stack-name', 'BulkImportWorker-prod', '--query',
  "Stacks[0].Outputs[?OutputKey=='ClusterName'||OutputKey=='ServiceName'||OutputKey=='DesiredCount'].[OutputKey,OutputValue]", '--output', 'text'];
/** The reads that find the digest the worker runs (before the diff), with `region` after the command when given. */
const pinCalls = (...region: string[]) => [
  [...describeStacks.slice(0, 3), ...region, ...describeStacks.slice(3)],
  ['aws', 'ecs', 'describe-services', ...region, '--cluster', 'bulk-import-prod', '--services', 'bulk-import-worker-prod', '--query', 'services[0].taskDefinition', '--output', 'text'],
  ['aws', 'ecs', 'describe-task-definition', ...region, '--task-definition', TASK_DEFINITION, '--output', 'json'],
];
const PIN = ['-c', `imageDigest=${DIGEST}`];
const SCALABLE_TARGET = 'service/bulk-import-prod/bulk-import-worker-prod';
const describeScalableTarget = (...region: string[]) => ['aws', 'application-autoscaling', 'describe-scalable-targets', ...region,
  '--service-namespace', 'ecs', '--resource-ids', SCALABLE_TARGET, '--query',
  'ScalableTargets[0].SuspendedState.[DynamicScalingInSuspended,DynamicScalingOutSuspended,ScheduledScalingSuspended]', '--output', 'text'];
const registerScalableTarget = (suspended: boolean, scalingOut = suspended, scheduled = suspended) => ['aws', 'application-autoscaling',
  'register-scalable-target', '--service-namespace', 'ecs', '--resource-id', SCALABLE_TARGET, '--scalable-dimension', 'ecs:service:DesiredCount',
  '--suspended-state', `DynamicScalingInSuspended=${suspended},DynamicScalingOutSuspended=${scalingOut},ScheduledScalingSuspended=${scheduled}`];
const waitAndDescribe = [
  ['aws', 'ecs', 'wait', 'services-stable', '--cluster', 'bulk-import-prod', '--services', 'bulk-import-worker-prod'],
  ['aws', 'ecs', 'describe-services', '--cluster', 'bulk-import-prod', '--services', 'bulk-import-worker-prod', '--query',
    'services[0].{desired:desiredCount,running:runningCount,taskDefinition:taskDefinition}', '--output', 'table'],
];
/** After the deploy: the service's count against the stack's DesiredCount output. */
const countCheck = ['aws', 'ecs', 'describe-services', '--cluster', 'bulk-import-prod', '--services', 'bulk-import-worker-prod',
  '--query', 'services[0].desiredCount', '--output', 'text'];
const setCount = (count: number) => ['aws', 'ecs', 'update-service', '--cluster', 'bulk-import-prod', '--service', 'bulk-import-worker-prod',
  '--desired-count', `${count}`, '--query', 'service.desiredCount', '--output', 'text'];
/** What follows a deploy that set the count itself: the outputs, the count checked, the wait. */
const afterDeploy = [describeStacks, countCheck, ...waitAndDescribe];
const WORKER_SERVICE = 'bulk-import-prod/bulk-import-worker-prod';

describe('scripts/campaign.sh', () => {
  it('start: shows the diff, then deploys with the mount on and N tasks, then waits for the service the stack names', () => {
    const run = runScript(sandbox, repo.campaign, ['start', '--env', 'prod', '--tasks', '4', '--yes'], { CDK_BIN: cdk });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const context = ['-c', 'importCampaign=true', '-c', 'desiredCount=4'];
    expect(sandbox.calls()).toEqual([...pinCalls(), diff(...context, ...PIN), deploy(...context, ...PIN), ...afterDeploy]);
    expect(run.stdout).toContain(`campaign.sh: keeping the running image ${RUNNING_IMAGE}`);
    expect(run.stdout).toContain('[~] AWS::ECS::Service Service (stand-in diff)');
    expect(run.stdout).toContain('campaign.sh: campaign started on BulkImportWorker-prod');
  });

  it('stop: deploys with the mount off and the baseline task count', () => {
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--yes'], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    expect(sandbox.calls()).toEqual([...pinCalls(), diff('-c', 'importCampaign=false', ...PIN), deploy('-c', 'importCampaign=false', ...PIN), ...afterDeploy]);
  });

  it('without a terminal and without --yes: shows the diff and deploys nothing', () => {
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod'], { CDK_BIN: cdk });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('no terminal to confirm the diff above: review it, then run again with --yes');
    expect(sandbox.calls().map((call) => call.slice(0, 2).join(' '))).toEqual(['aws cloudformation', 'aws ecs', 'aws ecs', 'cdk diff']);
  });

  it('passes an imageDigest given after -- as it is, without reading the running one', () => {
    const given = `sha256:${'0f'.repeat(32)}`;
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--yes', '--', '-c', `imageDigest=${given}`], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    const context = ['-c', 'importCampaign=false', '-c', `imageDigest=${given}`];
    expect(sandbox.calls()).toEqual([diff(...context), deploy(...context), ...afterDeploy]);
  });

  it('deploys imageTag, and says so, when the worker runs an image named by tag', () => {
    sandbox.setState((state) => {
      const definition = state.taskDefinitions[TASK_DEFINITION]!.taskDefinition as unknown as { containerDefinitions: Array<{ name: string; image: string }> };
      definition.containerDefinitions[1]!.image = '123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend:prod';
    });
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--yes'], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('named by tag, not digest: deploying imageTag');
    expect(sandbox.calls()).toEqual([...pinCalls(), diff('-c', 'importCampaign=false'), deploy('-c', 'importCampaign=false'), ...afterDeploy]);
  });

  it('refuses a work tree with changes, untracked files included', () => {
    writeFileSync(join(repo.root, 'scratch.json'), '{}\n');
    const run = runScript(sandbox, repo.campaign, ['start', '--env', 'prod', '--tasks', '2', '--yes'], { CDK_BIN: cdk });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('the work tree has changes or untracked files');
    expect(sandbox.calls()).toEqual([]);
  });

  it('stop --hard: desired count 0, StopTask for each running task, wait for them, then the deploy', () => {
    sandbox.setState((state) => {
      state.runningTasks['bulk-import-prod/bulk-import-worker-prod'] = ['arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/aaa', 'arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/bbb'];
    });
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--tasks', '0', '--hard', '--yes'], { CDK_BIN: cdk, AWS_REGION: 'eu-west-1' });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const region = ['--region', 'eu-west-1'];
    const tasks = ['arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/aaa', 'arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/bbb'];
    const context = ['-c', 'importCampaign=false', '-c', 'desiredCount=0'];
    expect(sandbox.calls().slice(0, 13)).toEqual([
      ...pinCalls(...region),
      diff(...context, ...PIN),
      [...describeStacks.slice(0, 3), ...region, ...describeStacks.slice(3)],
      describeScalableTarget(...region),
      ['aws', 'ecs', 'describe-services', ...region, '--cluster', 'bulk-import-prod', '--services', 'bulk-import-worker-prod',
        '--query', 'services[0].desiredCount', '--output', 'text'],
      ['aws', 'ecs', 'update-service', ...region, '--cluster', 'bulk-import-prod', '--service', 'bulk-import-worker-prod',
        '--desired-count', '0', '--query', 'service.desiredCount', '--output', 'text'],
      ['aws', 'ecs', 'list-tasks', ...region, '--cluster', 'bulk-import-prod', '--service-name', 'bulk-import-worker-prod',
        '--desired-status', 'RUNNING', '--query', 'taskArns', '--output', 'text'],
      ...tasks.map((task) => ['aws', 'ecs', 'stop-task', ...region, '--cluster', 'bulk-import-prod', '--task', task,
        '--reason', 'campaign.sh stop --hard', '--query', 'task.desiredStatus', '--output', 'text']),
      ['aws', 'ecs', 'wait', 'tasks-stopped', ...region, '--cluster', 'bulk-import-prod', '--tasks', ...tasks],
      deploy(...context, ...PIN),
    ]);
  });

  it('stop --hard with no task running goes straight to the deploy', () => {
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--hard', '--yes'], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    const names = sandbox.calls().map((call) => call.slice(0, 3).join(' '));
    expect(names.slice(0, 10)).toEqual(['aws cloudformation describe-stacks', 'aws ecs describe-services', 'aws ecs describe-task-definition', 'cdk diff BulkImportWorker-prod', 'aws cloudformation describe-stacks', 'aws application-autoscaling describe-scalable-targets', 'aws ecs describe-services', 'aws ecs update-service', 'aws ecs list-tasks', 'cdk deploy BulkImportWorker-prod']);
    // No autoscaling: nothing suspended, nothing to resume.
    expect(sandbox.calls().filter((call) => call[2] === 'register-scalable-target')).toEqual([]);
  });

  it('stop --hard when the deploy changes nothing: the service goes back to the count the stack asks for, not left at 0', () => {
    const tasks = ['arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/aaa', 'arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/bbb'];
    sandbox.setState((state) => {
      // No campaign runs and the stack is deployed at its baseline of 2: the stop's deploy has nothing to update.
      state.baselineDesiredCount = 2;
      state.deployedDesiredCount = 2;
      state.stackOutputs += 'DesiredCount\t2\n';
      state.services[WORKER_SERVICE]!.desiredCount = 2;
      state.runningTasks[WORKER_SERVICE] = tasks;
    });
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--hard', '--yes'], { CDK_BIN: cdk });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    // The hard stop set 0, the deploy changed nothing: left at that, the fleet would stay down (services-stable
    // passes with 0 of 0).
    expect(sandbox.state().services[WORKER_SERVICE]!.desiredCount).toBe(2);
    const calls = sandbox.calls();
    const deployAt = calls.findIndex(([name, command]) => name === 'cdk' && command === 'deploy');
    expect(calls.slice(deployAt + 1)).toEqual([describeStacks, countCheck, setCount(2), ...waitAndDescribe]);
    expect(run.stdout).toContain("== set bulk-import-worker-prod to the stack's 2 task(s) (the deploy left it at 0)");
    expect(run.stdout).toContain('campaign.sh: campaign stopped on BulkImportWorker-prod');
  });

  it('start with autoscaling: the service names no count in the stack, so the N tasks are set after the deploy', () => {
    sandbox.setState((state) => {
      state.stackAutoscaling = true;
      state.scalableTargets[SCALABLE_TARGET] = { scalingIn: false, scalingOut: false, scheduled: false };
      state.services[WORKER_SERVICE]!.desiredCount = 2;
    });
    const run = runScript(sandbox, repo.campaign, ['start', '--env', 'prod', '--tasks', '4', '--yes'], { CDK_BIN: cdk });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(sandbox.state().services[WORKER_SERVICE]!.desiredCount).toBe(4);
    const context = ['-c', 'importCampaign=true', '-c', 'desiredCount=4'];
    expect(sandbox.calls()).toEqual([...pinCalls(), diff(...context, ...PIN), deploy(...context, ...PIN), describeStacks, countCheck, setCount(4), ...waitAndDescribe]);
  });

  it('stop --hard with autoscaling: suspended before the tasks stop, restored after the deploy that keeps it', () => {
    sandbox.setState((state) => {
      state.scalableTargets[SCALABLE_TARGET] = { scalingIn: false, scalingOut: false, scheduled: false };
      state.runningTasks['bulk-import-prod/bulk-import-worker-prod'] = ['arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/aaa'];
    });
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--tasks', '2', '--hard', '--yes'], { CDK_BIN: cdk });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const names = sandbox.calls().map((call) => [call[1], call[2]].join(' '));
    const at = (name: string, from = 0) => names.indexOf(name, from);
    const suspend = at('application-autoscaling register-scalable-target');
    expect(suspend).toBeGreaterThan(at('application-autoscaling describe-scalable-targets'));
    expect(suspend).toBeLessThan(at('ecs update-service'));
    expect(at('ecs update-service')).toBeLessThan(at('ecs stop-task'));
    const deployAt = names.findIndex((name) => name.startsWith('deploy '));
    const resume = at('application-autoscaling register-scalable-target', suspend + 1);
    expect(resume).toBeGreaterThan(deployAt);
    expect(sandbox.calls()[suspend]).toEqual(registerScalableTarget(true));
    expect(sandbox.calls()[resume]).toEqual(registerScalableTarget(false));
    expect(sandbox.state().scalableTargets[SCALABLE_TARGET]).toEqual({ scalingIn: false, scalingOut: false, scheduled: false });
    expect(run.stdout).toContain('== restore the autoscaling of bulk-import-worker-prod (in, out, scheduled: False False False)');
  });

  it('stop --hard --tasks 0 with autoscaling: the deploy removes it, so nothing is resumed', () => {
    sandbox.setState((state) => (state.scalableTargets[SCALABLE_TARGET] = { scalingIn: false, scalingOut: false, scheduled: false }));
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--tasks', '0', '--hard', '--yes'], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    expect(sandbox.calls().filter((call) => call[2] === 'register-scalable-target')).toEqual([registerScalableTarget(true)]);
    expect(run.stdout).toContain('the deploy removed the autoscaling of bulk-import-worker-prod (desiredCount 0): nothing to resume');
  });

  it('a hard stop that fails with the autoscaling suspended says so, and how to resume it', () => {
    sandbox.setState((state) => {
      state.scalableTargets[SCALABLE_TARGET] = { scalingIn: false, scalingOut: false, scheduled: false };
      state.runningTasks['bulk-import-prod/bulk-import-worker-prod'] = ['arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/aaa'];
    });
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--tasks', '2', '--hard', '--yes'], { CDK_BIN: cdk, STANDIN_FAIL: 'aws ecs stop-task *' });
    expect(run.code).toBe(17);
    expect(run.stderr).toContain('campaign.sh: step "stop every running worker task" failed (exit 17)');
    expect(run.stderr).toContain('campaign.sh: the autoscaling of bulk-import-worker-prod may still be suspended');
    const resume = registerScalableTarget(false);
    expect(run.stderr).toContain(`\n  ${resume.slice(0, -1).join(' ')} '${resume.at(-1)}'\n`);
    // The count first (the service is at 0), then the autoscaling, in the order an operator restores them.
    const countAt = run.stderr.indexOf('campaign.sh: the service bulk-import-worker-prod is left at desired count 0');
    expect(countAt).toBeGreaterThanOrEqual(0);
    expect(countAt).toBeLessThan(run.stderr.indexOf('may still be suspended'));
    // Left suspended: the operator decides when the service may scale again.
    expect(sandbox.state().scalableTargets[SCALABLE_TARGET]).toEqual({ scalingIn: true, scalingOut: true, scheduled: true });
  });

  it('a deploy that fails after the hard stop says the service is left at desired count 0, and how to restore its count', () => {
    sandbox.setState((state) => {
      state.services[WORKER_SERVICE]!.desiredCount = 3;
      state.runningTasks[WORKER_SERVICE] = ['arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/aaa'];
    });
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--hard', '--yes'], { CDK_BIN: cdk, AWS_REGION: 'eu-west-1', STANDIN_FAIL: 'cdk deploy *' });
    expect(run.code).toBe(17);
    expect(run.stderr).toContain('campaign.sh: step "deploy BulkImportWorker-prod" failed (exit 17)');
    expect(sandbox.state().services[WORKER_SERVICE]!.desiredCount).toBe(0);
    expect(run.stderr).toContain('campaign.sh: the service bulk-import-worker-prod is left at desired count 0: the hard stop set it to 0 (from 3)');
    expect(run.stderr).toContain(
      '\n  aws ecs update-service --region eu-west-1 --cluster bulk-import-prod --service bulk-import-worker-prod --desired-count 3\n',
    );
    // No autoscaling here: nothing about it.
    expect(run.stderr).not.toContain('may still be suspended');
  });

  it('a hard stop whose call to set the count to 0 fails says the count is unknown, how to read it and how to restore it', () => {
    sandbox.setState((state) => {
      state.services[WORKER_SERVICE]!.desiredCount = 3;
      state.runningTasks[WORKER_SERVICE] = ['arn:aws:ecs:eu-west-1:123456789012:task/bulk-import-prod/aaa'];
    });
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--hard', '--yes'], {
      CDK_BIN: cdk,
      AWS_REGION: 'eu-west-1',
      STANDIN_FAIL: 'aws ecs update-service * --desired-count 0 *',
    });
    expect(run.code).toBe(17);
    expect(run.stderr).toContain('campaign.sh: step "stop every running worker task" failed (exit 17)');
    expect(sandbox.state().services[WORKER_SERVICE]!.desiredCount).toBe(3);
    // Not "left at desired count 0": the call failed, so the script cannot know.
    expect(run.stderr).not.toContain('is left at desired count 0');
    expect(run.stderr).toContain(
      "campaign.sh: the hard stop's call to set the service bulk-import-worker-prod to desired count 0 (from 3) failed: ECS may or may not have applied it.",
    );
    expect(run.stderr).toContain(
      "\n  aws ecs describe-services --region eu-west-1 --cluster bulk-import-prod --services bulk-import-worker-prod --query services\\[0\\].desiredCount --output text\n",
    );
    expect(run.stderr).toContain(
      '\n  aws ecs update-service --region eu-west-1 --cluster bulk-import-prod --service bulk-import-worker-prod --desired-count 3\n',
    );
  });

  it('a list of tasks that cannot be read stops the hard stop (it is not "no task running"), and says so once', () => {
    sandbox.setState((state) => (state.scalableTargets[SCALABLE_TARGET] = { scalingIn: false, scalingOut: false, scheduled: false }));
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--tasks', '2', '--hard', '--yes'], { CDK_BIN: cdk, STANDIN_FAIL: 'aws ecs list-tasks *' });
    expect(run.code).toBe(17);
    expect(run.stderr.match(/step "stop every running worker task" failed/g)).toHaveLength(1);
    expect(run.stderr.match(/may still be suspended/g)).toHaveLength(1);
    expect(sandbox.calls().some((call) => call[0] === 'cdk' && call[1] === 'deploy')).toBe(false);
  });

  it('autoscaling suspended in part by someone: all of it is suspended for the stop, then restored exactly as it was', () => {
    sandbox.setState((state) => (state.scalableTargets[SCALABLE_TARGET] = { scalingIn: true, scalingOut: false, scheduled: false }));
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--tasks', '2', '--hard', '--yes'], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    expect(sandbox.calls().filter((call) => call[2] === 'register-scalable-target')).toEqual([registerScalableTarget(true), registerScalableTarget(true, false, false)]);
    expect(sandbox.state().scalableTargets[SCALABLE_TARGET]).toEqual({ scalingIn: true, scalingOut: false, scheduled: false });
  });

  it('autoscaling all suspended already: the hard stop leaves it so', () => {
    sandbox.setState((state) => (state.scalableTargets[SCALABLE_TARGET] = { scalingIn: true, scalingOut: true, scheduled: true }));
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--tasks', '2', '--hard', '--yes'], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    expect(sandbox.calls().filter((call) => call[2] === 'register-scalable-target')).toEqual([]);
    expect(run.stdout).toContain('the autoscaling of bulk-import-worker-prod is already suspended (in, out, scheduled): left as it is');
  });

  it('waits for no one: a deploy or another campaign change to the same environment holding the lock refuses it', async () => {
    const lock = join(sandbox.dir, 'bulk-import-deploy-prod.lock');
    // One process holds it (the sleep inherits the locked descriptor), so killing it frees the lock.
    const holder = spawn('bash', ['-c', 'exec 9>>"$1"; flock 9; echo held; exec sleep 60', 'hold', lock], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.once('error', reject);
        holder.stdout.once('data', () => resolve());
      });
      const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--yes'], { CDK_BIN: cdk });
      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/a deploy or campaign change to prod is running \(lock .*bulk-import-deploy-prod\.lock is held\)/);
      expect(sandbox.calls()).toEqual([]);
    } finally {
      holder.kill();
    }
  });

  it('stops with a non-zero exit when the deploy fails: no waiting on a service that did not change', () => {
    const run = runScript(sandbox, repo.campaign, ['start', '--env', 'prod', '--tasks', '2', '--yes'], { CDK_BIN: cdk, STANDIN_FAIL: 'cdk deploy *' });
    expect(run.code).toBe(17);
    expect(run.stderr).toContain('campaign.sh: step "deploy BulkImportWorker-prod" failed (exit 17)');
    // Then only the image the worker runs is read again: still the pinned one, so nothing more is said.
    expect(sandbox.calls().map((call) => call.slice(0, 3).join(' '))).toEqual([
      'aws cloudformation describe-stacks', 'aws ecs describe-services', 'aws ecs describe-task-definition', 'cdk diff BulkImportWorker-prod',
      'cdk deploy BulkImportWorker-prod', 'aws ecs describe-services', 'aws ecs describe-task-definition']);
    expect(run.stderr).not.toContain('WARNING');
  });

  describe('a deploy whose rollback puts the worker back on the image of the last cdk deploy', () => {
    // What the stack's own task definition names: the image of the last `cdk deploy`, older than deploy.sh's since.
    const STACK_TASK_DEFINITION = 'arn:aws:ecs:eu-west-1:123456789012:task-definition/bulk-import-worker-prod:2';
    const STALE_IMAGE = `123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend@sha256:${'9a'.repeat(32)}`;
    beforeEach(() =>
      sandbox.setState((state) => {
        state.taskDefinitions[STACK_TASK_DEFINITION] = {
          taskDefinition: { family: 'bulk-import-worker-prod', revision: 2, status: 'ACTIVE', containerDefinitions: [{ name: 'worker', image: STALE_IMAGE }] },
          tags: [],
        };
        state.cdkDeployRollsBackTo = STACK_TASK_DEFINITION;
      }),
    );

    it('says so loudly, with the deploy.sh command that restores the pinned image; the exit stays a failure', () => {
      const run = runScript(sandbox, repo.campaign, ['start', '--env', 'prod', '--tasks', '2', '--yes'], { CDK_BIN: cdk, AWS_REGION: 'eu-west-1' });
      expect(run.code).toBe(1);
      expect(run.stderr).toContain('campaign.sh: step "deploy BulkImportWorker-prod" failed (exit 1)');
      expect(run.stderr).toContain(
        `campaign.sh: WARNING: THE WORKER RUNS ANOTHER IMAGE NOW: bulk-import-worker-prod runs ${STALE_IMAGE} (${STACK_TASK_DEFINITION}), not ${RUNNING_IMAGE}, the image it ran before this deploy and the one the deploy pinned.`,
      );
      const restore = `AWS_REGION=eu-west-1 ECS_CLUSTER=bulk-import-prod WORKER_SERVICE=bulk-import-worker-prod scripts/deploy.sh --env prod --image ${RUNNING_IMAGE}`;
      expect(run.stderr).toContain(`\n  ${restore}\n`);
      // Pasted in the checkout, it puts the worker back on the pinned image.
      sandbox.setState((state) => (state.images.backend = [{ digest: DIGEST, tags: [] }]));
      const restored = runScript(sandbox, 'bash', ['-c', `cd "$1" && ${restore}`, 'restore', repo.root], { DEPLOY_POLL_SECONDS: '0' });
      expect(restored.code).toBe(0);
      const { services, taskDefinitions } = sandbox.state();
      const runs = taskDefinitions[services[WORKER_SERVICE]!.taskDefinition]!.taskDefinition as unknown as { containerDefinitions: Array<{ image: string }> };
      expect(runs.containerDefinitions[0]!.image).toBe(RUNNING_IMAGE);
    });

    it('an imageDigest given after --: nothing of its own to compare with, so nothing is said', () => {
      const given = `sha256:${'0f'.repeat(32)}`;
      const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--yes', '--', '-c', `imageDigest=${given}`], { CDK_BIN: cdk });
      expect(run.code).toBe(1);
      expect(run.stderr).not.toContain('WARNING');
    });
  });

  it('fails when the stack does not name its cluster and service', () => {
    sandbox.setState((state) => (state.stackOutputs = ''));
    const run = runScript(sandbox, repo.campaign, ['start', '--env', 'prod', '--tasks', '2', '--yes'], { CDK_BIN: cdk });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('has no ClusterName/ServiceName outputs');
    expect(sandbox.calls().some((call) => call[2] === 'wait')).toBe(false);
  });

  it('--dry-run shows the diff and prints the deploy and the waits', () => {
    const run = runScript(sandbox, repo.campaign, ['start', '--env', 'prod', '--tasks', '3', '--dry-run'], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    expect(sandbox.calls().map((call) => call.slice(0, 2).join(' '))).toEqual(['aws cloudformation', 'aws ecs', 'aws ecs', 'cdk diff']);
    expect(run.stdout).toContain(`+ ${cdk} deploy BulkImportWorker-prod --require-approval never --no-notices -c environment=prod -c importCampaign=true -c desiredCount=3`);
    expect(run.stdout).toMatch(/\+ aws ecs wait services-stable --cluster \\<ClusterName\\> --services \\<ServiceName\\>/);
    expect(run.stdout).toMatch(/\+ aws ecs update-service --cluster \\<ClusterName\\> --service \\<ServiceName\\> --desired-count \\<DesiredCount\\>/);
    expect(run.stdout).toContain('campaign.sh: dry run, nothing was changed');
  });

  it.each([
    [['start', '--env', 'prod'], /start needs --tasks N/],
    [['start', '--env', 'prod', '--tasks', '0'], /start needs --tasks N with N from 1 to 100/],
    [['start', '--env', 'prod', '--tasks', '2', '--hard'], /--hard is for stop only/],
    [['stop', '--env', 'prod', '--tasks', 'many'], /--tasks must be a number from 0 to 100/],
    [['stop'], /--env NAME is required/],
    [['pause', '--env', 'prod'], /unknown action: pause/],
  ])('refuses %j before calling anything', (args, message) => {
    const run = runScript(sandbox, repo.campaign, args, { CDK_BIN: cdk });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(message);
    expect(sandbox.calls()).toEqual([]);
  });

  it('uses the project CDK CLI by default', () => {
    mkdirSync(join(repo.root, 'node_modules', '.bin'), { recursive: true });
    copyFileSync(cdk, join(repo.root, 'node_modules', '.bin', 'cdk'));
    const run = runScript(sandbox, repo.campaign, ['stop', '--env', 'prod', '--dry-run']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`+ ${repo.root}/node_modules/.bin/cdk deploy BulkImportWorker-prod`);
    expect(sandbox.calls()).toEqual([...pinCalls(), diff('-c', 'importCampaign=false', ...PIN)]);
  });
});
