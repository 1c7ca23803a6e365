// Stand-ins for the `aws`, `docker` and `cdk` executables that scripts/deploy.sh and scripts/campaign.sh call, put
// first on PATH in a sandbox. One Node script plays all three (by the name it is called under). It records every
// call, and keeps a small ECS/ECR model in a JSON state file: services with their task definition, deployments and
// events; task definition revisions; images by digest and tag. A deployment's fate is scripted per service (the
// `plans`): it completes, fails, is rolled back by the circuit breaker, or stays in progress until the test releases
// it. A `cdk deploy` applies the stack's desired count only when the template's count changes (CloudFormation leaves
// an unchanged service alone), and publishes it as the DesiredCount output; one can be made to fail after its rollback
// put the worker service on another task definition (`cdkDeployRollsBackTo`). One-off tasks (`run-task`) stop with a
// scripted exit code. STANDIN_FAIL makes the calls matching a pattern fail (exit 17), STANDIN_FAIL_TIMES only the
// first few of them. The model answers the exact `--query` expressions the scripts send and refuses any other, so a
// script that asks something new fails here rather than being answered by accident.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SEPARATOR = '\u001f';

/** What happens to the next deployment started on a service. */
type DeploymentPlan = 'complete' | 'fail' | 'rollback' | 'hold';

interface ServiceModel {
  status: 'ACTIVE' | 'DRAINING' | 'INACTIVE';
  taskDefinition: string;
  deployments: Array<{ id: string; taskDefinition: string; rolloutState: string; rolloutStateReason: string; polls: number; plan: DeploymentPlan }>;
  events: Array<{ message: string }>;
  /** Outcomes of the next deployments, in order; `complete` when empty. */
  plans: DeploymentPlan[];
  /** The service's desired count (1 when not given). */
  desiredCount?: number;
  /** `networkConfiguration` as describe-services reports it (run-task takes the same shape). */
  networkConfiguration?: unknown;
}

export interface StandInState {
  services: Record<string, ServiceModel>;
  taskDefinitions: Record<string, { taskDefinition: Record<string, unknown> & { family: string; revision: number; status: string }; tags: unknown[] }>;
  images: Record<string, Array<{ digest: string; tags: string[] }>>;
  /** ECR repositories by name: their tag mutability (MUTABLE or IMMUTABLE). */
  repositories: Record<string, { imageTagMutability: string }>;
  runningTasks: Record<string, string[]>;
  /** Application Auto Scaling targets by resource id (`service/<cluster>/<service>`): what is suspended. */
  scalableTargets: Record<string, { scalingIn: boolean; scalingOut: boolean; scheduled: boolean }>;
  stackOutputs: string;
  nextDeployment: number;
  /** The desired count of the template last deployed (undefined: unknown, the next deploy applies its own). */
  deployedDesiredCount?: number;
  /** The count a deploy without `-c desiredCount=` asks for (cdk.json's baseline; 1 when not given). */
  baselineDesiredCount?: number;
  /** The stack has autoscaling (`autoscaling=true` in cdk.json): its service names no count unless it is 0. */
  stackAutoscaling?: boolean;
  /** One-off tasks `run-task` started, by ARN. */
  tasks: Record<string, { taskDefinition: string; overrides: unknown; networkConfiguration: unknown; exitCode: number; polls: number }>;
  /** Exit codes of the next one-off tasks, in order; 0 when empty. */
  taskExitCodes: number[];
  /**
   * The next `cdk deploy` fails (exit 1) after CloudFormation's rollback put the stack's worker service on this task
   * definition: the stack's own revision, which names the image of the last `cdk deploy`.
   */
  cdkDeployRollsBackTo?: string;
}

/**
 * Stand-in code: takes `state.lock` in the sandbox (O_EXCL create, holding this process's pid) and frees it when the
 * process exits. A lock left by a process that is gone (killed by a timeout) is taken over.
 */
const HOLD_STATE_LOCK = String.raw`
import { openSync, closeSync, writeSync, unlinkSync } from 'node:fs';
function holdStateLock(dir) {
  const lockPath = join(dir, 'state.lock');
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      const fd = openSync(lockPath, 'wx');
      writeSync(fd, String(process.pid));
      closeSync(fd);
      process.on('exit', () => unlinkSync(lockPath));
      return;
    } catch (error) {
      if (error.code !== 'EEXIST') throw error;
    }
    let holder = 0;
    try { holder = Number(readFileSync(lockPath, 'utf8')); } catch {}
    if (holder > 0 && !alive(holder)) { try { unlinkSync(lockPath); } catch {} continue; }
    Atomics.wait(pause, 0, 0, 5);
  }
}
function alive(pid) {
  try { process.kill(pid, 0); return true; } catch (error) { return error.code === 'EPERM'; }
}
`;

const STAND_IN = String.raw`
import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

${HOLD_STATE_LOCK}

const name = process.argv[2];
const args = process.argv.slice(3);
const dir = process.env.STANDIN_DIR;
const statePath = join(dir, 'state.json');
const option = (flag) => { const at = args.indexOf(flag); return at >= 0 ? args[at + 1] : undefined; };
let line = [name, ...args].join('\u001f');
if (args.includes('--password-stdin')) line += '\u001f<stdin:' + readFileSync(0, 'utf8').trim() + '>';
appendFileSync(join(dir, 'calls.log'), line + '\n');
// Scripts run concurrently (a deploy polling while a second one starts): each call holds the state's lock from its
// read to its exit, so no call reads a half-written file or loses another's update.
holdStateLock(dir);
const glob = process.env.STANDIN_FAIL;
if (glob) {
  const pattern = new RegExp('^' + glob.split('*').map((part) => part.replace(/[.+?^$()|[\]{}\\]/g, '\\$&')).join('.*') + '$');
  if (pattern.test([name, ...args].join(' '))) {
    // STANDIN_FAIL_TIMES=N: only the first N matching calls fail (a blip), counted in the sandbox.
    const times = process.env.STANDIN_FAIL_TIMES;
    const countPath = join(dir, 'failures.count');
    const failed = existsSync(countPath) ? Number(readFileSync(countPath, 'utf8')) : 0;
    if (times === undefined || failed < Number(times)) {
      writeFileSync(countPath, String(failed + 1));
      process.stderr.write(name + ': stand-in failure\n');
      process.exit(17);
    }
  }
}
const state = JSON.parse(readFileSync(statePath, 'utf8'));
const save = () => { writeFileSync(statePath + '.next', JSON.stringify(state, null, 1)); renameSync(statePath + '.next', statePath); };
const out = (text) => process.stdout.write(text + '\n');
const refuse = (message, code = 255) => { process.stderr.write(name + ' stand-in: ' + message + '\n'); process.exit(code); };
const query = option('--query') ?? '';

function service() {
  const cluster = option('--cluster');
  const key = cluster + '/' + (option('--services') ?? option('--service'));
  const found = state.services[key];
  if (!found) refuse('no service ' + key);
  return [key, found];
}

/** One look at a deployment moves it on: the first look sees it in progress, the next its scripted outcome. */
function advance(model, deployment) {
  deployment.polls += 1;
  if (deployment.rolloutState !== 'IN_PROGRESS' || deployment.polls < 2) return;
  const serviceName = deployment.service;
  if (deployment.plan === 'complete') {
    deployment.rolloutState = 'COMPLETED';
    model.taskDefinition = deployment.taskDefinition;
    model.deployments = model.deployments.filter((other) => other === deployment);
    model.events.unshift({ message: '(service ' + serviceName + ') has reached a steady state.' });
  } else if (deployment.plan === 'fail') {
    deployment.rolloutState = 'FAILED';
    deployment.rolloutStateReason = 'ECS deployment circuit breaker: tasks failed to start.';
    model.events.unshift({ message: '(service ' + serviceName + ') (deployment ' + deployment.id + ') deployment failed: tasks failed to start.' });
    model.events.unshift({ message: '(service ' + serviceName + ') (task 1f2e) failed container health checks.' });
  } else if (deployment.plan === 'rollback') {
    deployment.rolloutState = 'FAILED';
    deployment.rolloutStateReason = 'ECS deployment circuit breaker: rolling back to deployment ecs-svc/previous.';
    const old = model.deployments.find((other) => other !== deployment);
    model.taskDefinition = old ? old.taskDefinition : model.taskDefinition;
    model.events.unshift({ message: '(service ' + serviceName + ') (deployment ' + deployment.id + ') deployment failed: tasks failed to start.' });
    model.events.unshift({ message: '(service ' + serviceName + ') rolling back to deployment ecs-svc/previous.' });
    deployment.removeAfter = deployment.polls + 1;
  } else if (deployment.plan === 'hold') {
    writeFileSync(join(dir, 'holding'), deployment.id);
    if (existsSync(join(dir, 'release'))) deployment.plan = 'complete';
  }
}

if (name === 'aws') {
  const [group, command] = args;
  if (group === 'ecr' && command === 'get-login-password') out(process.env.STANDIN_PASSWORD ?? 'stand-in-registry-password');
  else if (group === 'ecr' && command === 'describe-repositories') {
    if (query !== 'repositories[0].imageTagMutability') refuse('unknown query ' + query);
    const found = state.repositories[option('--repository-names')];
    if (!found) refuse('An error occurred (RepositoryNotFoundException): the repository does not exist', 254);
    out(found.imageTagMutability);
  } else if (group === 'ecr' && command === 'describe-images') {
    if (query !== 'imageDetails[0].imageDigest') refuse('unknown query ' + query);
    const [kind, value] = option('--image-ids').split('=');
    const image = (state.images[option('--repository-name')] ?? []).find((candidate) =>
      kind === 'imageDigest' ? candidate.digest === value : candidate.tags.includes(value));
    if (!image) refuse('An error occurred (ImageNotFoundException): the image does not exist', 254);
    out(image.digest);
  } else if (group === 'ecs' && command === 'describe-services') {
    const [, model] = service();
    let match;
    for (const deployment of model.deployments) {
      if (deployment.removeAfter !== undefined && deployment.polls >= deployment.removeAfter) {
        model.deployments = model.deployments.filter((other) => other !== deployment);
      }
    }
    if (query === "services[0].[status, taskDefinition, length(deployments[?rolloutState=='IN_PROGRESS'])]") {
      out([model.status, model.taskDefinition, model.deployments.filter((d) => d.rolloutState === 'IN_PROGRESS').length].join('\t'));
    } else if ((match = /^services\[0\]\.deployments\[\?id=='([^']+)'\] \| \[0\]\.\[rolloutState, rolloutStateReason\]$/.exec(query))) {
      const deployment = model.deployments.find((candidate) => candidate.id === match[1]);
      if (!deployment) out('None');
      else {
        advance(model, deployment);
        out(deployment.rolloutState + '\t' + (deployment.rolloutStateReason || 'None'));
      }
    } else if ((match = /^services\[0\]\.events\[\?contains\(message, '([^']+)'\)\] \| \[:5\]\.message$/.exec(query))) {
      out(model.events.filter((event) => event.message.includes(match[1])).slice(0, 5).map((event) => event.message).join('\t'));
    } else if (query === 'services[0].taskDefinition') {
      out(model.taskDefinition);
    } else if (query === 'services[0].desiredCount') {
      out(String(model.desiredCount ?? 1));
    } else if (query === 'services[0].networkConfiguration' && option('--output') === 'json') {
      out(JSON.stringify(model.networkConfiguration ?? null));
    } else if (query === 'services[0].{desired:desiredCount,running:runningCount,taskDefinition:taskDefinition}') {
      out('desired ' + (model.desiredCount ?? 1) + ' running ' + (model.desiredCount ?? 1) + ' ' + model.taskDefinition);
    } else refuse('unknown query ' + query);
    save();
  } else if (group === 'ecs' && command === 'describe-task-definition') {
    const found = state.taskDefinitions[option('--task-definition')];
    if (!found) refuse('no task definition ' + option('--task-definition'));
    out(JSON.stringify(found));
  } else if (group === 'ecs' && command === 'register-task-definition') {
    const input = JSON.parse(readFileSync(option('--cli-input-json').replace(/^file:\/\//, ''), 'utf8'));
    appendFileSync(join(dir, 'registered.log'), JSON.stringify(input) + '\n');
    const revision = Math.max(0, ...Object.values(state.taskDefinitions).filter((t) => t.taskDefinition.family === input.family).map((t) => t.taskDefinition.revision)) + 1;
    const arn = 'arn:aws:ecs:eu-west-1:123456789012:task-definition/' + input.family + ':' + revision;
    const { tags, ...definition } = input;
    state.taskDefinitions[arn] = { taskDefinition: { ...definition, taskDefinitionArn: arn, revision, status: 'ACTIVE' }, tags: tags ?? [] };
    save();
    out(arn);
  } else if (group === 'ecs' && command === 'deregister-task-definition') {
    const found = state.taskDefinitions[option('--task-definition')];
    if (!found) refuse('no task definition ' + option('--task-definition'));
    found.taskDefinition.status = 'INACTIVE';
    save();
    out('INACTIVE');
  } else if (group === 'ecs' && command === 'update-service') {
    const [key, model] = service();
    const taskDefinition = option('--task-definition');
    if (taskDefinition) {
      if (!state.taskDefinitions[taskDefinition]) refuse('no task definition ' + taskDefinition);
      const id = 'ecs-svc/' + String(state.nextDeployment++).padStart(19, '0');
      for (const other of model.deployments) if (other.rolloutState === 'IN_PROGRESS') other.rolloutState = 'STOPPED';
      model.taskDefinition = taskDefinition; // the PRIMARY deployment's, as ECS reports it
      model.deployments.unshift({ id, service: key.split('/')[1], taskDefinition, rolloutState: 'IN_PROGRESS', rolloutStateReason: '', polls: 0, plan: model.plans.shift() ?? 'complete' });
      // Without --query: a command an operator pastes from a script's message.
      if (query !== '' && query !== "service.deployments[?taskDefinition=='" + taskDefinition + "'] | [0].id") refuse('unknown query ' + query);
      out(id);
    }
    const desired = option('--desired-count');
    if (desired !== undefined) {
      model.desiredCount = Number(desired);
      if (query === 'service.desiredCount') out(desired);
    }
    save();
  } else if (group === 'ecs' && command === 'run-task') {
    const taskDefinition = option('--task-definition');
    if (!state.taskDefinitions[taskDefinition] || state.taskDefinitions[taskDefinition].taskDefinition.status !== 'ACTIVE') refuse('no active task definition ' + taskDefinition);
    if (query !== 'tasks[0].taskArn') refuse('unknown query ' + query);
    const arn = 'arn:aws:ecs:eu-west-1:123456789012:task/' + option('--cluster') + '/' + String(Object.keys(state.tasks ?? {}).length + 1).padStart(32, '0');
    state.tasks = state.tasks ?? {};
    state.tasks[arn] = {
      taskDefinition,
      overrides: JSON.parse(option('--overrides')),
      networkConfiguration: JSON.parse(option('--network-configuration')),
      exitCode: (state.taskExitCodes ?? []).shift() ?? 0,
      polls: 0,
    };
    save();
    out(arn);
  } else if (group === 'ecs' && command === 'describe-tasks') {
    // The first look sees the task running, the next one stopped with its scripted exit code.
    const task = (state.tasks ?? {})[option('--tasks')];
    if (!task) refuse('no task ' + option('--tasks'));
    if (query !== "tasks[0].[lastStatus, containers[?name=='worker'] | [0].exitCode, stoppedReason]") refuse('unknown query ' + query);
    task.polls += 1;
    save();
    out(task.polls < 2 ? 'RUNNING\tNone\tNone' : 'STOPPED\t' + task.exitCode + '\tEssential container in task exited');
  } else if (group === 'ecs' && command === 'list-tasks') {
    out((state.runningTasks[option('--cluster') + '/' + option('--service-name')] ?? []).join('\t'));
  } else if (group === 'cloudformation' && command === 'describe-stacks') {
    out(state.stackOutputs);
  } else if (group === 'application-autoscaling' && command === 'describe-scalable-targets') {
    if (option('--service-namespace') !== 'ecs') refuse('unknown namespace ' + option('--service-namespace'));
    if (query !== 'ScalableTargets[0].SuspendedState.[DynamicScalingInSuspended,DynamicScalingOutSuspended,ScheduledScalingSuspended]') refuse('unknown query ' + query);
    const target = (state.scalableTargets ?? {})[option('--resource-ids')];
    const text = (flag) => (flag ? 'True' : 'False');
    out(target ? [text(target.scalingIn), text(target.scalingOut), text(target.scheduled)].join('\t') : 'None');
  } else if (group === 'application-autoscaling' && command === 'register-scalable-target') {
    const id = option('--resource-id');
    const target = (state.scalableTargets ?? {})[id];
    if (!target) refuse('An error occurred (ValidationException): MinCapacity and MaxCapacity are required to register ' + id, 254);
    if (option('--service-namespace') !== 'ecs' || option('--scalable-dimension') !== 'ecs:service:DesiredCount') refuse('unknown target');
    const match = /^DynamicScalingInSuspended=(true|false),DynamicScalingOutSuspended=(true|false),ScheduledScalingSuspended=(true|false)$/.exec(option('--suspended-state') ?? '');
    if (!match) refuse('unknown --suspended-state ' + option('--suspended-state'));
    Object.assign(target, { scalingIn: match[1] === 'true', scalingOut: match[2] === 'true', scheduled: match[3] === 'true' });
    save();
  }
} else if (name === 'docker') {
  if (args[0] === 'push') {
    const [repository, tag] = args[1].split(/:(?=[^:/]+$)/);
    const repositoryName = repository.replace(/^[^/]+\//, '');
    const digest = 'sha256:' + createHash('sha256').update(args[1]).digest('hex');
    (state.images[repositoryName] ??= []).push({ digest, tags: [tag] });
    save();
  }
} else if (name === 'cdk') {
  if (args[0] === 'diff') out('Stack ' + args[1] + '\n[~] AWS::ECS::Service Service (stand-in diff)');
  // The stack has no autoscaling with desiredCount 0 (infra/bulk-import-worker-props.ts): the deploy removes it.
  if (args[0] === 'deploy' && args.includes('desiredCount=0')) {
    state.scalableTargets = {};
    save();
  }
  if (args[0] === 'deploy') {
    // CloudFormation updates the service's count only when the template's count changed; the output always says it.
    const asked = args.find((arg) => arg.startsWith('desiredCount='));
    const count = asked ? Number(asked.slice('desiredCount='.length)) : (state.baselineDesiredCount ?? 1);
    const outputs = Object.fromEntries(state.stackOutputs.split('\n').filter(Boolean).map((line) => line.split('\t')));
    if (state.cdkDeployRollsBackTo) {
      state.services[outputs.ClusterName + '/' + outputs.ServiceName].taskDefinition = state.cdkDeployRollsBackTo;
      delete state.cdkDeployRollsBackTo;
      save();
      process.stderr.write(args[1] + ' failed: The stack named ' + args[1] + ' failed to deploy: UPDATE_ROLLBACK_COMPLETE\n');
      process.exit(1);
    }
    if (count !== state.deployedDesiredCount) {
      state.deployedDesiredCount = count;
      const service = state.services[outputs.ClusterName + '/' + outputs.ServiceName];
      if (service && (count === 0 || !state.stackAutoscaling)) service.desiredCount = count;
    }
    outputs.DesiredCount = String(count);
    state.stackOutputs = Object.entries(outputs).map(([key, value]) => key + '\t' + value + '\n').join('');
    save();
  }
}
`;

export interface Sandbox {
  dir: string;
  bin: string;
  /** Every call, as the argument lists. */
  calls(): string[][];
  state(): StandInState;
  setState(update: (state: StandInState) => void): void;
  /** The task definitions the scripts registered, as they sent them. */
  registered(): Array<Record<string, unknown> & { containerDefinitions: Array<{ name: string; image: string }> }>;
  env: Record<string, string>;
}

const sandboxes: string[] = [];

export function removeSandboxes(): void {
  for (const dir of sandboxes.splice(0)) rmSync(dir, { recursive: true, force: true });
}

export function newSandbox(initial: Partial<StandInState> = {}): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), 'bulk-import-scripts-'));
  sandboxes.push(dir);
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(dir, 'stand-in.mjs'), STAND_IN);
  for (const name of ['docker', 'aws', 'cdk']) {
    writeFileSync(join(bin, name), `#!/bin/sh\nexec '${process.execPath}' '${join(dir, 'stand-in.mjs')}' ${name} "$@"\n`);
    chmodSync(join(bin, name), 0o755);
  }
  const state: StandInState = {
    services: {},
    taskDefinitions: {},
    images: {},
    repositories: {},
    runningTasks: {},
    scalableTargets: {},
    stackOutputs: '',
    nextDeployment: 1,
    tasks: {},
    taskExitCodes: [],
    ...initial,
  };
  writeFileSync(join(dir, 'state.json'), JSON.stringify(state));
  writeFileSync(join(dir, 'calls.log'), '');
  const read = () => JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as StandInState;
  return {
    dir,
    bin,
    calls: () =>
      readFileSync(join(dir, 'calls.log'), 'utf8')
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => line.split(SEPARATOR)),
    state: read,
    setState(update) {
      const current = read();
      update(current);
      // Renamed into place, so a stand-in running meanwhile never reads a half-written file.
      writeFileSync(join(dir, 'state.json.next'), JSON.stringify(current));
      renameSync(join(dir, 'state.json.next'), join(dir, 'state.json'));
    },
    registered: () =>
      existsSync(join(dir, 'registered.log'))
        ? readFileSync(join(dir, 'registered.log'), 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line))
        : [],
    env: { STANDIN_DIR: dir, DEPLOY_LOCK_DIR: dir },
  };
}

export interface ScriptRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of the test process without anything the scripts read, plus the sandbox's stand-ins first on PATH. */
function scriptEnv(sandbox: Sandbox, env: Record<string, string>): NodeJS.ProcessEnv {
  const base: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!/^(AWS_|CDK_|ECR_|ECS_|DEPLOY_|DOCKER_|BACKEND_|WORKER_SERVICE|WORKER_CONTAINER|STANDIN_)/.test(key)) base[key] = value;
  }
  return { ...base, PATH: `${sandbox.bin}:${process.env.PATH ?? ''}`, ...sandbox.env, ...env };
}

export function runScript(sandbox: Sandbox, script: string, args: string[], env: Record<string, string> = {}): ScriptRun {
  const result = spawnSync(script, args, { env: scriptEnv(sandbox, env), encoding: 'utf8', timeout: 60_000 });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Starts a script without waiting for it; `done` resolves when it exits. */
export function startScript(sandbox: Sandbox, script: string, args: string[], env: Record<string, string> = {}): { done: Promise<ScriptRun> } {
  const child = spawn(script, args, { env: scriptEnv(sandbox, env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return { done: new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr }))) };
}

/**
 * A throwaway git repository holding a copy of the scripts and the Dockerfile, committed, so that a script's
 * work-tree checks see a clean tree whatever state the real checkout is in. Returns the copy's script paths.
 */
export function scriptRepository(sandbox: Sandbox, sourceRoot: string): { root: string; deploy: string; campaign: string; git(...args: string[]): string } {
  const root = join(sandbox.dir, 'repo');
  mkdirSync(join(root, 'scripts'), { recursive: true });
  for (const file of ['scripts/deploy.sh', 'scripts/campaign.sh', 'Dockerfile']) {
    writeFileSync(join(root, file), readFileSync(join(sourceRoot, file)));
  }
  writeFileSync(join(root, '.gitignore'), 'node_modules/\n');
  chmodSync(join(root, 'scripts', 'deploy.sh'), 0o755);
  chmodSync(join(root, 'scripts', 'campaign.sh'), 0o755);
  const git = (...args: string[]) => {
    const result = spawnSync('git', ['-c', 'user.name=Test', '-c', 'user.email=test@example.com', '-c', 'commit.gpgsign=false', ...args], {
      cwd: root,
      encoding: 'utf8',
    });
    if (result.status !== 0) throw new Error(result.stderr);
    return result.stdout.trim();
  };
  git('init', '-q');
  git('add', '.');
  git('commit', '-q', '-m', 'initial');
  return { root, deploy: join(root, 'scripts', 'deploy.sh'), campaign: join(root, 'scripts', 'campaign.sh'), git };
}
