// scripts/deploy.sh against stand-in `aws` and `docker` executables (test/support/cli-stand-ins.ts) that model the
// ECS services, task definitions and ECR images it touches. The script runs from a throwaway git repository holding
// a committed copy of it, so the real work tree's state does not matter. Covered: a deploy by digest of worker and
// backend that waits for the deployments it started; --build pushing only under the commit SHA; a circuit-breaker
// rollback, a failed rollout and a backend that fails while the worker succeeds, each ending non-zero with ECS's
// reason and every service back on its previous task definition; a failed read of a deployment's state, read again,
// and one that keeps failing (exit 5, nothing rolled back on a guess); a second deploy while one runs; a dirty tree;
// --migrate running `bulk-import migrate` on the new revision before any service moves.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { REPO_ROOT } from './fixtures/infra/synth.js';
import {
  newSandbox,
  removeSandboxes,
  runScript,
  scriptRepository,
  startScript,
  type Sandbox,
  type StandInState,
} from './support/cli-stand-ins.js';
import { waitFor } from './support/in-process-worker.js';

const ROOT = REPO_ROOT.replace(/\/$/, '');
const REGISTRY = '123456789012.dkr.ecr.eu-west-1.amazonaws.com';
const REPOSITORY = `${REGISTRY}/backend`;
const DIGEST = `sha256:${'ab'.repeat(32)}`;
const IMAGE = `${REPOSITORY}@${DIGEST}`;
const TD_ARN = 'arn:aws:ecs:eu-west-1:123456789012:task-definition';
const WORKER_TD = `${TD_ARN}/bulk-import-worker-prod:1`;
const BACKEND_TD = `${TD_ARN}/backend-api:1`;
const ADMIN_TD = `${TD_ARN}/bulk-import-admin-api-prod:1`;
const ENV = {
  ECS_CLUSTER: 'prod',
  WORKER_SERVICE: 'bulk-import-worker-prod',
  BACKEND_SERVICE: 'backend-api',
  DEPLOY_POLL_SECONDS: '0',
};

function initialState(): Partial<StandInState> {
  const definition = (family: string, containers: Array<{ name: string; image: string }>) => ({
    taskDefinition: {
      family,
      revision: 1,
      status: 'ACTIVE',
      taskDefinitionArn: `${TD_ARN}/${family}:1`,
      networkMode: 'awsvpc',
      requiresCompatibilities: ['FARGATE'],
      cpu: '1024',
      memory: '2048',
      registeredAt: '2026-12-01T00:00:00Z',
      compatibilities: ['EC2', 'FARGATE'],
      containerDefinitions: containers.map((container) => ({ ...container, essential: true, environment: [{ name: 'KEEP', value: 'me' }] })),
    },
    tags: [{ key: 'team', value: 'imports' }],
  });
  const service = (taskDefinition: string) => ({
    status: 'ACTIVE' as const,
    taskDefinition,
    deployments: [{ id: 'ecs-svc/old', taskDefinition, rolloutState: 'COMPLETED', rolloutStateReason: '', polls: 0, plan: 'complete' as const }],
    events: [],
    plans: [],
  });
  return {
    services: {
      'prod/bulk-import-worker-prod': service(WORKER_TD),
      'prod/backend-api': service(BACKEND_TD),
      'prod/bulk-import-admin-api-prod': service(ADMIN_TD),
    },
    taskDefinitions: {
      [ADMIN_TD]: definition('bulk-import-admin-api-prod', [{ name: 'api', image: `${REPOSITORY}:prod` }]),
      [WORKER_TD]: definition('bulk-import-worker-prod', [{ name: 'worker', image: `${REPOSITORY}:prod` }]),
      [BACKEND_TD]: definition('backend-api', [{ name: 'api', image: `${REPOSITORY}:prod` }]),
    },
    images: { backend: [{ digest: DIGEST, tags: ['build-1234'] }] },
  };
}

let sandbox: Sandbox;
let repo: ReturnType<typeof scriptRepository>;
beforeEach(() => {
  sandbox = newSandbox(initialState());
  repo = scriptRepository(sandbox, ROOT);
});
afterAll(() => removeSandboxes());

/** The id the stand-in gives the n-th deployment started. */
const deployment = (n: number) => `ecs-svc/${String(n).padStart(19, '0')}`;
/** A STANDIN_FAIL pattern for the script's reads of a deployment's state (of deployment `id`, or any). */
const statePoll = (id = '*') =>
  `aws ecs describe-services * --query services[0].deployments[?id=='${id}'] | [0].[rolloutState, rolloutStateReason] --output text`;
const commands = () => sandbox.calls().map((call) => call.slice(0, 3).join(' '));
const serviceTaskDefinitions = () => {
  const { services } = sandbox.state();
  return { worker: services['prod/bulk-import-worker-prod']!.taskDefinition, backend: services['prod/backend-api']!.taskDefinition };
};
const activeRevisions = () =>
  Object.values(sandbox.state().taskDefinitions)
    .filter((definition) => definition.taskDefinition.status === 'ACTIVE')
    .map((definition) => definition.taskDefinition.taskDefinitionArn)
    .filter((arn) => arn !== ADMIN_TD);

describe('scripts/deploy.sh --image', () => {
  it('registers revisions naming the digest, updates worker and backend, and waits for the deployments it started', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--backend'], ENV);
    expect(run.stderr).not.toMatch(/failed|NOT deployed/);
    expect(run.code).toBe(0);
    expect(serviceTaskDefinitions()).toEqual({ worker: `${TD_ARN}/bulk-import-worker-prod:2`, backend: `${TD_ARN}/backend-api:2` });
    const [worker, backend] = sandbox.registered();
    expect(worker!.containerDefinitions[0]!.image).toBe(IMAGE);
    expect(backend!.containerDefinitions[0]!.image).toBe(IMAGE);
    // Only the image changed; read-only fields are not sent back; tags are kept.
    expect(worker).toMatchObject({ family: 'bulk-import-worker-prod', cpu: '1024', memory: '2048', tags: [{ key: 'team', value: 'imports' }] });
    expect(worker!.containerDefinitions[0]).toMatchObject({ name: 'worker', environment: [{ name: 'KEEP', value: 'me' }] });
    expect(Object.keys(worker!)).not.toEqual(expect.arrayContaining(['revision']));
    expect(worker).not.toHaveProperty('taskDefinitionArn');
    expect(worker).not.toHaveProperty('compatibilities');
    // No docker, no tag moved; waited on the deployment ids, not on services-stable.
    expect(commands().some((command) => command.startsWith('docker'))).toBe(false);
    expect(commands()).not.toContain('aws ecs wait');
    const polls = sandbox.calls().filter((call) => call.some((arg) => arg.includes("deployments[?id=='ecs-svc/")));
    expect(polls.length).toBeGreaterThanOrEqual(4); // each deployment seen in progress, then completed
    expect(run.stdout).toContain(`bulk-import-worker-prod and backend-api run ${IMAGE}`);
  });

  it('without --backend deploys the worker only', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], ENV);
    expect(run.code).toBe(0);
    expect(serviceTaskDefinitions()).toEqual({ worker: `${TD_ARN}/bulk-import-worker-prod:2`, backend: BACKEND_TD });
  });

  it('a circuit-breaker rollback exits non-zero with the reason, the new revision deregistered', () => {
    sandbox.setState((state) => state.services['prod/bulk-import-worker-prod']!.plans.push('rollback'));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], ENV);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/bulk-import-worker-prod: deployment ecs-svc\/\d+ FAILED: ECS deployment circuit breaker: rolling back/);
    expect(run.stderr).toMatch(/bulk-import-worker-prod event: .*deployment failed: tasks failed to start/);
    expect(run.stderr).toContain(`bulk-import-worker-prod is back on ${WORKER_TD} (ECS rolled it back`);
    expect(serviceTaskDefinitions().worker).toBe(WORKER_TD);
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD]);
    expect(run.stdout).not.toContain(' run ');
  });

  it('a failed rollout without rollback: the script puts the service back itself and waits for that', () => {
    sandbox.setState((state) => state.services['prod/bulk-import-worker-prod']!.plans.push('fail'));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], ENV);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('FAILED: ECS deployment circuit breaker: tasks failed to start.');
    expect(run.stderr).toContain(`runs ${TD_ARN}/bulk-import-worker-prod:2: putting it back on ${WORKER_TD}`);
    const updates = sandbox.calls().filter((call) => call[2] === 'update-service');
    expect(updates.map((call) => call[call.indexOf('--task-definition') + 1])).toEqual([`${TD_ARN}/bulk-import-worker-prod:2`, WORKER_TD]);
    expect(serviceTaskDefinitions().worker).toBe(WORKER_TD);
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD]);
  });

  it('a backend that fails while the worker succeeds: both end on their previous revisions', () => {
    sandbox.setState((state) => state.services['prod/backend-api']!.plans.push('fail'));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--backend'], ENV);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/backend-api: deployment ecs-svc\/\d+ FAILED/);
    expect(run.stderr).toContain(`putting it back on ${BACKEND_TD}`);
    expect(run.stderr).toContain(`putting it back on ${WORKER_TD}`);
    expect(serviceTaskDefinitions()).toEqual({ worker: WORKER_TD, backend: BACKEND_TD });
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD]);
    expect(run.stderr).toContain(`${IMAGE} was NOT deployed; every service runs the task definition it ran before`);
  });

  it('a rollback that fails: exit 3, and the new revisions of services not seen back stay registered', () => {
    // The worker's rollout fails, and so does the deployment that puts it back; the backend's is not waited for after.
    sandbox.setState((state) => state.services['prod/bulk-import-worker-prod']!.plans.push('fail', 'fail'));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--backend'], ENV);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain('ROLLBACK OF bulk-import-worker-prod FAILED');
    // The scheduled tasks run the latest ACTIVE revision of the worker family: the one the worker may still run.
    const kept = [`${TD_ARN}/bulk-import-worker-prod:2`, `${TD_ARN}/backend-api:2`];
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD, ...kept]);
    expect(run.stderr).toContain(`kept registered (a service may run them): ${kept.join(' ')}`);
  });

  it('a failed read of a deployment\'s state is read again: a blip does not roll a healthy deploy back', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], { ...ENV, STANDIN_FAIL: statePoll(), STANDIN_FAIL_TIMES: '1' });
    expect(run.stderr).not.toMatch(/NOT deployed|UNKNOWN/);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain(`bulk-import-worker-prod: could not read the state of deployment ${deployment(1)} (1 of 5 failures in a row)`);
    expect(sandbox.calls().filter((call) => call[2] === 'update-service')).toHaveLength(1);
    expect(serviceTaskDefinitions().worker).toBe(`${TD_ARN}/bulk-import-worker-prod:2`);
    expect(run.stdout).toContain(`bulk-import-worker-prod run ${IMAGE}`);
  });

  it('a state that cannot be read five times in a row: exit 5, nothing rolled back, the commands to check and to put back', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--backend'], { ...ENV, STANDIN_FAIL: statePoll() });
    expect(run.code).toBe(5);
    expect(sandbox.calls().filter((call) => call.some((arg) => arg.includes("deployments[?id=='ecs-svc/")))).toHaveLength(5);
    expect(run.stderr).toContain(`bulk-import-worker-prod: deployment ${deployment(1)} of ${TD_ARN}/bulk-import-worker-prod:2: state UNKNOWN`);
    expect(run.stderr).toContain(`backend-api: deployment ${deployment(2)} of ${TD_ARN}/backend-api:2: not seen completed`);
    expect(run.stderr).not.toMatch(/deployment \S+ FAILED|NOT deployed|putting it back/);
    expect(run.stderr).toContain(`whether ${IMAGE} is deployed is UNKNOWN: nothing was rolled back`);
    // No rollback on a guess: the services stay on their deployments, the new revisions stay registered.
    expect(sandbox.calls().filter((call) => call[2] === 'update-service')).toHaveLength(2);
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD, `${TD_ARN}/bulk-import-worker-prod:2`, `${TD_ARN}/backend-api:2`]);
    // The commands it prints run as they are: the state read, then putting a service back and deregistering.
    const printed = run.stderr.split('\n').filter((line) => line.startsWith('  aws '));
    expect(printed).toHaveLength(2 + 4);
    const paste = (line: string) => runScript(sandbox, 'bash', ['-c', line], ENV);
    expect(paste(printed[0]!)).toMatchObject({ code: 0, stdout: 'IN_PROGRESS\tNone\n' });
    for (const line of printed.slice(2, 4)) expect(paste(line).code).toBe(0);
    expect(serviceTaskDefinitions().worker).toBe(WORKER_TD);
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD, `${TD_ARN}/backend-api:2`]);
  });

  it('a failed read of the rollback\'s state is read again: not a false "ROLLBACK FAILED"', () => {
    sandbox.setState((state) => state.services['prod/bulk-import-worker-prod']!.plans.push('fail'));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], { ...ENV, STANDIN_FAIL: statePoll(deployment(2)), STANDIN_FAIL_TIMES: '1' });
    expect(run.stderr).not.toContain('ROLLBACK OF');
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`could not read the state of deployment ${deployment(2)} (1 of 5 failures in a row)`);
    expect(serviceTaskDefinitions().worker).toBe(WORKER_TD);
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD]);
  });

  it('a rollback whose state cannot be read: exit 5, says it is unknown (not failed), the new revision kept', () => {
    sandbox.setState((state) => state.services['prod/bulk-import-worker-prod']!.plans.push('fail'));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], { ...ENV, STANDIN_FAIL: statePoll(deployment(2)) });
    expect(run.code).toBe(5);
    expect(run.stderr).toContain('WHETHER THE ROLLBACK OF bulk-import-worker-prod COMPLETED IS UNKNOWN');
    expect(run.stderr).not.toContain('ROLLBACK OF bulk-import-worker-prod FAILED');
    expect(run.stderr).toContain(`${IMAGE} was NOT deployed and whether the rollback completed is UNKNOWN`);
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD, `${TD_ARN}/bulk-import-worker-prod:2`]);
  });

  it('an update-service call that fails (throttled, denied) puts the service already moving back', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--backend'], {
      ...ENV,
      STANDIN_FAIL: 'aws ecs update-service * --service backend-api *',
    });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('backend-api: deployment (none) FAILED: update-service failed');
    expect(run.stderr).toContain(`putting it back on ${WORKER_TD}`);
    expect(serviceTaskDefinitions()).toEqual({ worker: WORKER_TD, backend: BACKEND_TD });
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD]);
    expect(run.stderr).toContain(`${IMAGE} was NOT deployed; every service runs the task definition it ran before`);
  });

  it('with ADMIN_API_SERVICE the admin API moves with the worker, and one failing puts the other back', () => {
    const adminEnv = { ...ENV, ADMIN_API_SERVICE: 'bulk-import-admin-api-prod' };
    sandbox.setState((state) => state.services['prod/bulk-import-admin-api-prod']!.plans.push('rollback'));
    const failed = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], adminEnv);
    expect(failed.code).toBe(2);
    expect(failed.stderr).toContain(`putting it back on ${WORKER_TD}`);
    expect(sandbox.state().services['prod/bulk-import-admin-api-prod']!.taskDefinition).toBe(ADMIN_TD);
    expect(serviceTaskDefinitions().worker).toBe(WORKER_TD);

    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], adminEnv);
    expect(run.code).toBe(0);
    expect(sandbox.state().services['prod/bulk-import-admin-api-prod']!.taskDefinition).toBe(`${TD_ARN}/bulk-import-admin-api-prod:3`);
    expect(sandbox.registered().at(-1)!.containerDefinitions[0]).toMatchObject({ name: 'api', image: IMAGE });
  });

  it('a second deploy while one runs is refused at once; the first one still completes', async () => {
    sandbox.setState((state) => state.services['prod/bulk-import-worker-prod']!.plans.push('hold'));
    const first = startScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], ENV);
    await waitFor(async () => sandbox.calls().some((call) => call.some((arg) => arg.includes("deployments[?id=='ecs-svc/"))), 20_000);
    const second = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--backend'], ENV);
    expect(second.code).not.toBe(0);
    expect(second.stderr).toMatch(/another deploy or campaign change to prod is running \(lock .* is held\)/);
    // From another machine (another lock directory) the deployment in progress refuses it.
    const elsewhere = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], { ...ENV, DEPLOY_LOCK_DIR: repo.root });
    expect(elsewhere.code).not.toBe(0);
    expect(elsewhere.stderr).toContain('bulk-import-worker-prod already has a deployment in progress');
    expect(sandbox.calls().filter((call) => call[2] === 'update-service')).toHaveLength(1);
    writeFileSync(join(sandbox.dir, 'release'), '');
    const done = await first.done;
    expect(done.code).toBe(0);
    expect(serviceTaskDefinitions().worker).toBe(`${TD_ARN}/bulk-import-worker-prod:2`);
  });

  it('a rollout that does not complete in time is rolled back', () => {
    sandbox.setState((state) => state.services['prod/bulk-import-worker-prod']!.plans.push('hold'));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], { ...ENV, DEPLOY_TIMEOUT_SECONDS: '1' });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('TIMEOUT: not completed after 1s');
    expect(serviceTaskDefinitions().worker).toBe(WORKER_TD);
  });

  it('refuses an image ECR does not have, before registering anything', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', `${REPOSITORY}@sha256:${'cd'.repeat(32)}`], ENV);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('ECR has no image');
    expect(commands().filter((command) => command.startsWith('aws ecs'))).toEqual([]);
  });

  it('refuses a work tree with changes, untracked files included', () => {
    writeFileSync(join(repo.root, 'notes.txt'), 'untracked\n');
    const untracked = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE], ENV);
    expect(untracked.code).not.toBe(0);
    expect(untracked.stderr).toContain('the work tree has changes or untracked files');
    expect(sandbox.calls()).toEqual([]);
  });

  it.each([
    [['--env', 'prod', '--image', `${REPOSITORY}:prod`], ENV, /--image needs REPOSITORY@sha256/],
    [['--env', 'prod'], ENV, /--image REPOSITORY@sha256:DIGEST or --build is required/],
    [['--env', 'prod', '--image', IMAGE, '--backend'], { ...ENV, BACKEND_SERVICE: '' }, /BACKEND_SERVICE is not set/],
    [['--env', 'prod', '--build', '--backend'], ENV, /--build deploys the worker only/],
    [['--env', 'prod', '--build'], ENV, /ECR_REPOSITORY_URI is not set/],
    [['--image', IMAGE], ENV, /--env NAME is required/],
    [['--env', 'prod', '--redeploy', 'abc1234'], ENV, /unknown argument: --redeploy/],
  ] as Array<[string[], Record<string, string>, RegExp]>)('refuses %j before calling anything', (args, env, message) => {
    const run = runScript(sandbox, repo.deploy, args, env);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(message);
    expect(sandbox.calls()).toEqual([]);
  });

  it('--dry-run reads but changes nothing', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--backend', '--dry-run'], ENV);
    expect(run.code).toBe(0);
    expect(commands().every((command) => /^aws (ecr describe-images|ecs describe-)/.test(command))).toBe(true);
    expect(run.stderr).toContain('+ aws ecs register-task-definition');
    expect(run.stderr).toContain('+ aws ecs update-service');
    expect(serviceTaskDefinitions()).toEqual({ worker: WORKER_TD, backend: BACKEND_TD });
    expect(run.stdout).toContain('dry run, nothing was changed');
  });
});

describe('scripts/deploy.sh --migrate', () => {
  const NETWORK = { awsvpcConfiguration: { subnets: ['subnet-0aaaaaaaaaaaaaaa1'], securityGroups: ['sg-0123456789abcdef0'], assignPublicIp: 'DISABLED' } };
  const NEW_WORKER_TD = `${TD_ARN}/bulk-import-worker-prod:2`;
  const runTask = ['aws', 'ecs', 'run-task', '--region', 'eu-west-1', '--cluster', 'prod', '--task-definition', NEW_WORKER_TD,
    '--launch-type', 'FARGATE', '--network-configuration', JSON.stringify(NETWORK),
    '--overrides', JSON.stringify({ containerOverrides: [{ name: 'worker', command: ['node', 'bin/bulk-import.js', 'migrate'] }] }),
    '--started-by', 'bulk-import-deploy-migrate', '--query', 'tasks[0].taskArn', '--output', 'text'];
  beforeEach(() => sandbox.setState((state) => (state.services['prod/bulk-import-worker-prod']!.networkConfiguration = NETWORK)));

  it('runs bulk-import migrate as a task of the new worker revision, waits until it stopped, then updates the services', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--backend', '--migrate'], ENV);
    expect(run.stderr).not.toMatch(/failed|NOT deployed/);
    expect(run.code).toBe(0);
    const names = commands();
    const runAt = names.indexOf('aws ecs run-task');
    expect(runAt).toBeGreaterThan(names.lastIndexOf('aws ecs register-task-definition'));
    // The new revision (the new image), not the family: its latest ACTIVE revision would be the old image until then.
    expect(sandbox.calls()[runAt]).toEqual(runTask);
    expect(sandbox.registered()[0]).toMatchObject({ family: 'bulk-import-worker-prod', containerDefinitions: [{ image: IMAGE }] });
    expect(names.lastIndexOf('aws ecs describe-tasks')).toBeLessThan(names.indexOf('aws ecs update-service'));
    expect(Object.values(sandbox.state().tasks).map((task) => task.polls)).toEqual([2]);
    expect(serviceTaskDefinitions()).toEqual({ worker: NEW_WORKER_TD, backend: `${TD_ARN}/backend-api:2` });
    expect(run.stdout).toContain('deploy.sh: the migrations ran (arn:aws:ecs:eu-west-1:123456789012:task/prod/');
  });

  it('a migration that fails: no service is updated, the new revisions are deregistered, exit 4', () => {
    sandbox.setState((state) => state.taskExitCodes.push(1));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--backend', '--migrate'], ENV);
    expect(run.code).toBe(4);
    expect(run.stderr).toContain(`deploy.sh: the migrations of ${IMAGE} failed: exit 1 (Essential container in task exited)`);
    expect(run.stderr).toMatch(/worker log group, stream bulk-import-worker\/worker\/0{31}1\n/);
    expect(run.stderr).toContain(`deploy.sh: ${IMAGE} was NOT deployed`);
    expect(commands()).not.toContain('aws ecs update-service');
    expect(serviceTaskDefinitions()).toEqual({ worker: WORKER_TD, backend: BACKEND_TD });
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD]);
  });

  it('a migration task that cannot be started stops the deploy the same way', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--migrate'], { ...ENV, STANDIN_FAIL: 'aws ecs run-task *' });
    expect(run.code).toBe(17);
    expect(run.stderr).toContain(`step "run the migrations as a task of ${NEW_WORKER_TD}" failed (exit 17)`);
    expect(commands()).not.toContain('aws ecs update-service');
    expect(activeRevisions()).toEqual([WORKER_TD, BACKEND_TD]);
  });

  it('--dry-run prints the migration task and starts nothing', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--image', IMAGE, '--migrate', '--dry-run'], ENV);
    expect(run.code).toBe(0);
    expect(commands().every((command) => /^aws (ecr describe-images|ecs describe-)/.test(command))).toBe(true);
    expect(run.stderr).toContain('+ aws ecs run-task --region eu-west-1 --cluster prod --task-definition \\<new\\ revision\\ of\\ bulk-import-worker-prod:1\\>');
    expect(sandbox.state().tasks).toEqual({});
  });
});

describe('scripts/deploy.sh --build', () => {
  const BUILD_ENV = { ...ENV, ECR_REPOSITORY_URI: `${REGISTRY}/bulk-import-worker`, DOCKER_PLATFORM: 'linux/arm64' };
  beforeEach(() => sandbox.setState((state) => (state.repositories['bulk-import-worker'] = { imageTagMutability: 'IMMUTABLE' })));

  it('builds, pushes under the full commit SHA only, and deploys the pushed digest to the worker', () => {
    const sha = repo.git('rev-parse', 'HEAD');
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--build'], BUILD_ENV);
    expect(run.stderr).not.toMatch(/failed|NOT deployed/);
    expect(run.code).toBe(0);
    const docker = sandbox.calls().filter(([name]) => name === 'docker');
    expect(docker.map((call) => call.slice(0, 2).join(' '))).toEqual(['docker login', 'docker build', 'docker push']);
    expect(docker[0]!.at(-1)).toBe('<stdin:stand-in-registry-password>');
    expect(docker[1]).toEqual(['docker', 'build', '--platform', 'linux/arm64', '--file', `${repo.root}/Dockerfile`, '--tag',
      `${REGISTRY}/bulk-import-worker:${sha}`, '--label', `org.opencontainers.image.revision=${sha}`, repo.root]);
    expect(docker[2]).toEqual(['docker', 'push', `${REGISTRY}/bulk-import-worker:${sha}`]);
    const pushed = sandbox.state().images['bulk-import-worker']!;
    expect(pushed.map((image) => image.tags)).toEqual([[sha]]);
    expect(sandbox.registered()[0]!.containerDefinitions[0]!.image).toBe(`${REGISTRY}/bulk-import-worker@${pushed[0]!.digest}`);
    expect(serviceTaskDefinitions().backend).toBe(BACKEND_TD);
    // The password only ever travels on stdin.
    expect(sandbox.calls().filter((call) => call[1] !== 'login').flat().join(' ')).not.toContain('stand-in-registry-password');
  });

  it('an image already pushed for this commit is deployed again, not rebuilt', () => {
    const sha = repo.git('rev-parse', 'HEAD');
    const digest = `sha256:${'ef'.repeat(32)}`;
    sandbox.setState((state) => (state.images['bulk-import-worker'] = [{ digest, tags: [sha] }]));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--build'], BUILD_ENV);
    expect(run.code).toBe(0);
    expect(sandbox.calls().some(([name]) => name === 'docker')).toBe(false);
    expect(sandbox.registered()[0]!.containerDefinitions[0]!.image).toBe(`${REGISTRY}/bulk-import-worker@${digest}`);
  });

  it('refuses a repository with mutable tags before building or touching a service', () => {
    sandbox.setState((state) => (state.repositories['bulk-import-worker'] = { imageTagMutability: 'MUTABLE' }));
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--build'], BUILD_ENV);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('bulk-import-worker has image tag mutability MUTABLE: --build pushes only to a repository with immutable tags');
    expect(sandbox.calls().some(([name]) => name === 'docker')).toBe(false);
    expect(commands().filter((command) => command.startsWith('aws ecs'))).toEqual([]);
  });

  it('a failing push stops before any service is touched', () => {
    const run = runScript(sandbox, repo.deploy, ['--env', 'prod', '--build'], { ...BUILD_ENV, STANDIN_FAIL: 'docker push *' });
    expect(run.code).toBe(17);
    expect(run.stderr).toMatch(/step "push .*bulk-import-worker:[0-9a-f]{40}" failed \(exit 17\)/);
    expect(commands().filter((command) => command.startsWith('aws ecs'))).toEqual([]);
  });
});
