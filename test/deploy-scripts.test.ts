// scripts/deploy.sh and scripts/campaign.sh against stand-in `docker`, `aws` and `cdk` executables placed first on
// PATH: each records its arguments (and, for `docker login --password-stdin`, what it read on stdin), prints a canned
// response when one is given, and fails on demand. The tests check the commands and their order, that a failing
// step stops everything after it with a non-zero exit, and that --dry-run runs nothing.
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { REPO_ROOT } from './fixtures/infra/synth.js';

const SEPARATOR = '\u001f';
const STAND_IN = `#!/usr/bin/env bash
# Stand-in for the real CLI of the same name: records the call, answers from a canned response, fails on demand.
name="$(basename "$0")"
line="$name"
for arg in "$@"; do line+=$'${SEPARATOR}'"$arg"; done
if [[ " $* " == *" --password-stdin "* ]]; then line+=$'${SEPARATOR}'"<stdin:$(cat)>"; fi
printf '%s\\n' "$line" >> "$STANDIN_LOG"
if [[ -n "\${STANDIN_FAIL:-}" && "$name $*" == $STANDIN_FAIL ]]; then
  echo "$name: stand-in failure" >&2
  exit 17
fi
response="$STANDIN_RESPONSES/\${name}_\${1:-}_\${2:-}"
if [[ -f "$response" ]]; then cat "$response"; fi
exit 0
`;

const ROOT = REPO_ROOT.replace(/\/$/, '');
const SHA = '0123456789abcdef0123456789abcdef01234567';
const REGISTRY = '123456789012.dkr.ecr.eu-west-1.amazonaws.com';
const REPOSITORY = `${REGISTRY}/backend`;
const PASSWORD = 'stand-in-registry-password';
const DEPLOY_ENV = {
  ECR_REPOSITORY_URI: REPOSITORY,
  ECS_CLUSTER: 'backend-prod',
  WORKER_SERVICE: 'bulk-import-worker-prod',
  BACKEND_SERVICE: 'backend-api',
  GIT_SHA: SHA,
};

interface Sandbox {
  dir: string;
  bin: string;
  log: string;
  responses: string;
}

const sandboxes: string[] = [];
afterAll(() => {
  for (const dir of sandboxes) rmSync(dir, { recursive: true, force: true });
});

function newSandbox(): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), 'bulk-import-scripts-'));
  sandboxes.push(dir);
  const bin = join(dir, 'bin');
  const responses = join(dir, 'responses');
  mkdirSync(bin);
  mkdirSync(responses);
  for (const name of ['docker', 'aws', 'cdk']) {
    writeFileSync(join(bin, name), STAND_IN);
    chmodSync(join(bin, name), 0o755);
  }
  writeFileSync(join(responses, 'aws_ecr_get-login-password'), `${PASSWORD}\n`);
  writeFileSync(
    join(responses, 'aws_cloudformation_describe-stacks'),
    'ClusterName\tbulk-import-prod\nServiceName\tbulk-import-worker-prod\n',
  );
  const log = join(dir, 'calls.log');
  writeFileSync(log, '');
  return { dir, bin, log, responses };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  calls: string[][];
}

function runScript(sandbox: Sandbox, script: string, args: string[], env: Record<string, string> = {}): Run {
  const baseEnv: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(AWS_|CDK_|ECR_|ECS_|GIT_SHA|DEPLOY_TAG|DOCKER_|BACKEND_|WORKER_SERVICE)/.test(key)) baseEnv[key] = value;
  }
  const result = spawnSync(script, args, {
    env: {
      ...baseEnv,
      PATH: `${sandbox.bin}:${process.env.PATH ?? ''}`,
      STANDIN_LOG: sandbox.log,
      STANDIN_RESPONSES: sandbox.responses,
      ...env,
    },
    encoding: 'utf8',
    timeout: 30_000,
  });
  const calls = readFileSync(sandbox.log, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split(SEPARATOR));
  return { code: result.status, stdout: result.stdout, stderr: result.stderr, calls };
}

const deployScript = join(ROOT, 'scripts', 'deploy.sh');
const campaignScript = join(ROOT, 'scripts', 'campaign.sh');

describe('scripts/deploy.sh', () => {
  let sandbox: Sandbox;
  beforeEach(() => {
    sandbox = newSandbox();
  });

  it('builds, tags with the SHA, pushes, moves the deploy tag, redeploys both services and waits', () => {
    const run = runScript(sandbox, deployScript, ['--env', 'prod'], DEPLOY_ENV);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.calls).toEqual([
      ['aws', 'ecr', 'get-login-password', '--region', 'eu-west-1'],
      ['docker', 'login', '--username', 'AWS', '--password-stdin', REGISTRY, `<stdin:${PASSWORD}>`],
      ['docker', 'build', '--platform', 'linux/amd64', '--pull', '--file', `${ROOT}/Dockerfile`, '--tag', `${REPOSITORY}:${SHA}`,
        '--label', `org.opencontainers.image.revision=${SHA}`, ROOT],
      ['docker', 'push', `${REPOSITORY}:${SHA}`],
      ['docker', 'tag', `${REPOSITORY}:${SHA}`, `${REPOSITORY}:prod`],
      ['docker', 'push', `${REPOSITORY}:prod`],
      ['aws', 'ecs', 'update-service', '--region', 'eu-west-1', '--cluster', 'backend-prod', '--service', 'backend-api',
        '--force-new-deployment', '--query', 'service.deployments[0].id', '--output', 'text'],
      ['aws', 'ecs', 'update-service', '--region', 'eu-west-1', '--cluster', 'backend-prod', '--service', 'bulk-import-worker-prod',
        '--force-new-deployment', '--query', 'service.deployments[0].id', '--output', 'text'],
      ['aws', 'ecs', 'wait', 'services-stable', '--region', 'eu-west-1', '--cluster', 'backend-prod', '--services', 'backend-api'],
      ['aws', 'ecs', 'wait', 'services-stable', '--region', 'eu-west-1', '--cluster', 'backend-prod', '--services', 'bulk-import-worker-prod'],
    ]);
    // The registry password travels on stdin only.
    expect(run.calls.slice(0, 1).concat(run.calls.slice(2)).flat().join(' ')).not.toContain(PASSWORD);
    expect(run.stdout).toContain(`backend-api and bulk-import-worker-prod run ${SHA}`);
  });

  it('stops at a failing push with a non-zero exit: no deploy tag moved, no service touched', () => {
    const run = runScript(sandbox, deployScript, ['--env', 'prod'], { ...DEPLOY_ENV, STANDIN_FAIL: 'docker push *' });
    expect(run.code).toBe(17);
    expect(run.stderr).toContain(`deploy.sh: step "push ${REPOSITORY}:${SHA}" failed (exit 17)`);
    expect(run.calls.at(-1)).toEqual(['docker', 'push', `${REPOSITORY}:${SHA}`]);
    expect(run.calls.filter(([name]) => name === 'aws').map((call) => call[1])).toEqual(['ecr']);
    expect(run.calls.some((call) => call[1] === 'tag')).toBe(false);
  });

  it('stops when the registry login fails: nothing is built', () => {
    const run = runScript(sandbox, deployScript, ['--env', 'prod'], { ...DEPLOY_ENV, STANDIN_FAIL: 'aws ecr get-login-password*' });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(`step "log in to ${REGISTRY}" failed`);
    expect(run.calls.some(([name, command]) => name === 'docker' && command === 'build')).toBe(false);
  });

  it('fails when a service does not become stable', () => {
    const run = runScript(sandbox, deployScript, ['--env', 'prod'], {
      ...DEPLOY_ENV,
      STANDIN_FAIL: 'aws ecs wait services-stable * --services backend-api',
    });
    expect(run.code).toBe(17);
    expect(run.stderr).toContain('step "wait until backend-api and bulk-import-worker-prod are stable" failed');
    expect(run.calls.at(-1)).toContain('backend-api');
  });

  it('--dry-run prints the commands in order and runs none', () => {
    const run = runScript(sandbox, deployScript, ['--env', 'staging', '--dry-run'], {
      ...DEPLOY_ENV,
      WORKER_SERVICE: 'bulk-import-worker-staging',
    });
    expect(run.code).toBe(0);
    expect(run.calls).toEqual([]);
    const commands = run.stdout.split('\n').filter((line) => line.startsWith('+ '));
    expect(commands.map((line) => line.split(' ').slice(1, 4).join(' '))).toEqual([
      'aws ecr get-login-password',
      'docker build --platform',
      'docker push 123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend:0123456789abcdef0123456789abcdef01234567',
      'docker tag 123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend:0123456789abcdef0123456789abcdef01234567',
      'docker push 123456789012.dkr.ecr.eu-west-1.amazonaws.com/backend:staging',
      'aws ecs update-service',
      'aws ecs update-service',
      'aws ecs wait',
      'aws ecs wait',
    ]);
    expect(run.stdout).toContain('--service bulk-import-worker-staging --force-new-deployment');
    expect(run.stdout).toContain('deploy.sh: dry run, nothing was changed');
  });

  it('--redeploy moves the deploy tag back to an earlier image without building (rollback)', () => {
    const earlier = 'fedcba9876543210fedcba9876543210fedcba98';
    const run = runScript(sandbox, deployScript, ['--env', 'prod', '--redeploy', earlier], {
      ...DEPLOY_ENV,
      BACKEND_CLUSTER: 'backend-api-cluster',
      DOCKER_PLATFORM: 'linux/arm64',
    });
    expect(run.code).toBe(0);
    const commands = run.calls.map((call) => call.slice(0, 3).join(' '));
    expect(commands).toEqual([
      'aws ecr get-login-password',
      `docker login --username`,
      'docker pull --platform',
      `docker tag ${REPOSITORY}:${earlier}`,
      `docker push ${REPOSITORY}:prod`,
      'aws ecs update-service',
      'aws ecs update-service',
      'aws ecs wait',
      'aws ecs wait',
    ]);
    expect(run.calls[2]).toEqual(['docker', 'pull', '--platform', 'linux/arm64', `${REPOSITORY}:${earlier}`]);
    expect(run.calls[5]).toContain('backend-api-cluster');
    expect(run.calls[6]).toContain('backend-prod');
  });

  it.each([
    [['--env', 'prod'], { ...DEPLOY_ENV, WORKER_SERVICE: '' }, /WORKER_SERVICE is not set/],
    [[], DEPLOY_ENV, /--env NAME is required/],
    [['--env', 'prod'], { ...DEPLOY_ENV, ECR_REPOSITORY_URI: 'backend' }, /ECR_REPOSITORY_URI=backend is not/],
    [['--env', 'prod', '--redeploy', 'HEAD~1'], DEPLOY_ENV, /--redeploy needs a git SHA/],
    [['--env', 'prod', '--bogus'], DEPLOY_ENV, /unknown argument: --bogus/],
  ] as Array<[string[], Record<string, string>, RegExp]>)('refuses %j before calling anything', (args, env, message) => {
    const run = runScript(sandbox, deployScript, args, env);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(message);
    expect(run.calls).toEqual([]);
  });

  it('tags with the checked-out commit and refuses a work tree with uncommitted changes', () => {
    // A throwaway repository holding the script, so the real work tree's state does not matter.
    const repo = join(sandbox.dir, 'repo');
    mkdirSync(join(repo, 'scripts'), { recursive: true });
    copyFileSync(deployScript, join(repo, 'scripts', 'deploy.sh'));
    chmodSync(join(repo, 'scripts', 'deploy.sh'), 0o755);
    writeFileSync(join(repo, 'Dockerfile'), 'FROM scratch\n');
    const git = (...args: string[]) => {
      const result = spawnSync('git', ['-c', 'user.name=Test', '-c', 'user.email=test@example.com', ...args], { cwd: repo, encoding: 'utf8' });
      if (result.status !== 0) throw new Error(result.stderr);
      return result.stdout.trim();
    };
    git('init', '-q');
    git('add', '.');
    git('commit', '-q', '-m', 'initial');
    const head = git('rev-parse', 'HEAD');
    const env = { ...DEPLOY_ENV, GIT_SHA: '' };

    writeFileSync(join(repo, 'Dockerfile'), 'FROM scratch\nLABEL changed=yes\n');
    const dirty = runScript(sandbox, join(repo, 'scripts', 'deploy.sh'), ['--env', 'prod'], env);
    expect(dirty.code).not.toBe(0);
    expect(dirty.stderr).toMatch(/uncommitted changes/);
    expect(dirty.calls).toEqual([]);

    git('checkout', '--', 'Dockerfile');
    const clean = runScript(sandbox, join(repo, 'scripts', 'deploy.sh'), ['--env', 'prod'], env);
    expect(clean.code).toBe(0);
    expect(clean.calls.find((call) => call[1] === 'build')).toContain(`${REPOSITORY}:${head}`);
  });
});

describe('scripts/campaign.sh', () => {
  let sandbox: Sandbox;
  let cdk: string;
  beforeEach(() => {
    sandbox = newSandbox();
    cdk = join(sandbox.bin, 'cdk');
  });

  const waitAndDescribe = [
    ['aws', 'ecs', 'wait', 'services-stable', '--cluster', 'bulk-import-prod', '--services', 'bulk-import-worker-prod'],
    ['aws', 'ecs', 'describe-services', '--cluster', 'bulk-import-prod', '--services', 'bulk-import-worker-prod', '--query',
      'services[0].{desired:desiredCount,running:runningCount,taskDefinition:taskDefinition}', '--output', 'table'],
  ];
  const describeStacks = ['aws', 'cloudformation', 'describe-stacks', '--stack-name', 'BulkImportWorker-prod', '--query',
    "Stacks[0].Outputs[?OutputKey=='ClusterName'||OutputKey=='ServiceName'].[OutputKey,OutputValue]", '--output', 'text'];

  it('start: deploys the stack with the mount on and N tasks, then waits for the service the stack names', () => {
    const run = runScript(sandbox, campaignScript, ['start', '--env', 'prod', '--tasks', '4'], { CDK_BIN: cdk });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.calls).toEqual([
      ['cdk', 'deploy', 'BulkImportWorker-prod', '--require-approval', 'never', '--no-notices',
        '-c', 'environment=prod', '-c', 'importCampaign=true', '-c', 'desiredCount=4'],
      describeStacks,
      ...waitAndDescribe,
    ]);
    expect(run.stdout).toContain('campaign.sh: campaign started on BulkImportWorker-prod');
  });

  it('stop: deploys with the mount off and the baseline task count', () => {
    const run = runScript(sandbox, campaignScript, ['stop', '--env', 'prod'], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    expect(run.calls[0]).toEqual(['cdk', 'deploy', 'BulkImportWorker-prod', '--require-approval', 'never', '--no-notices',
      '-c', 'environment=prod', '-c', 'importCampaign=false']);
    expect(run.calls.slice(1)).toEqual([describeStacks, ...waitAndDescribe]);
  });

  it('stop --tasks 0 is the rollback: no worker runs', () => {
    const run = runScript(sandbox, campaignScript, ['stop', '--env', 'prod', '--tasks', '0', '--', '-c', 'alarmEmail=oncall@example.com'], {
      CDK_BIN: cdk,
      AWS_REGION: 'eu-west-1',
    });
    expect(run.code).toBe(0);
    expect(run.calls[0]).toEqual(['cdk', 'deploy', 'BulkImportWorker-prod', '--require-approval', 'never', '--no-notices',
      '-c', 'environment=prod', '-c', 'importCampaign=false', '-c', 'desiredCount=0', '-c', 'alarmEmail=oncall@example.com']);
    expect(run.calls.slice(1).every((call) => call[0] === 'aws' && call.includes('--region') && call.includes('eu-west-1'))).toBe(true);
  });

  it('stops with a non-zero exit when the deploy fails: no waiting on a service that did not change', () => {
    const run = runScript(sandbox, campaignScript, ['start', '--env', 'prod', '--tasks', '2'], { CDK_BIN: cdk, STANDIN_FAIL: 'cdk deploy *' });
    expect(run.code).toBe(17);
    expect(run.stderr).toContain('campaign.sh: step "start the campaign: /import mounted read-only, 2 task(s)" failed (exit 17)');
    expect(run.calls.map(([name]) => name)).toEqual(['cdk']);
  });

  it('fails when the stack does not name its cluster and service', () => {
    writeFileSync(join(sandbox.responses, 'aws_cloudformation_describe-stacks'), '');
    const run = runScript(sandbox, campaignScript, ['start', '--env', 'prod', '--tasks', '2'], { CDK_BIN: cdk });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('has no ClusterName/ServiceName outputs');
    expect(run.calls.some((call) => call[2] === 'wait')).toBe(false);
  });

  it('--dry-run prints the deploy and the waits and runs nothing', () => {
    const run = runScript(sandbox, campaignScript, ['start', '--env', 'staging', '--tasks', '3', '--dry-run'], { CDK_BIN: cdk });
    expect(run.code).toBe(0);
    expect(run.calls).toEqual([]);
    expect(run.stdout).toContain(`+ ${cdk} deploy BulkImportWorker-staging --require-approval never --no-notices -c environment=staging -c importCampaign=true -c desiredCount=3`);
    expect(run.stdout).toMatch(/\+ aws ecs wait services-stable --cluster \\<ClusterName\\> --services \\<ServiceName\\>/);
    expect(run.stdout).toContain('campaign.sh: dry run, nothing was changed');
  });

  it.each([
    [['start', '--env', 'prod'], /start needs --tasks N/],
    [['start', '--env', 'prod', '--tasks', '0'], /start needs --tasks N with N from 1 to 100/],
    [['stop', '--env', 'prod', '--tasks', 'many'], /--tasks must be a number from 0 to 100/],
    [['stop'], /--env NAME is required/],
    [['pause', '--env', 'prod'], /unknown action: pause/],
  ])('refuses %j before calling anything', (args, message) => {
    const run = runScript(sandbox, campaignScript, args, { CDK_BIN: cdk });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(message);
    expect(run.calls).toEqual([]);
  });

  it('uses the project CDK CLI by default', () => {
    expect(existsSync(join(ROOT, 'node_modules', '.bin', 'cdk'))).toBe(true);
    const run = runScript(sandbox, campaignScript, ['stop', '--env', 'prod', '--dry-run']);
    expect(run.stdout).toContain(`+ ${ROOT}/node_modules/.bin/cdk deploy BulkImportWorker-prod`);
  });
});
