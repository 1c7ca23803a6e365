#!/usr/bin/env bash
# Deploys one image, named by its immutable digest, to the bulk-import worker service, the stack's admin API service
# when ADMIN_API_SERVICE names it, and (with --backend) the backend service (docs/DEPLOYMENT.md §4.2):
#   --image REPOSITORY@sha256:DIGEST   the image the backend's pipeline pushed (the "redeploy on image push" path), or
#   --build                            build this repository's image (standalone setup, worker only) and push it under
#                                      the full commit SHA, a tag that only this build creates (ECR tag immutability on).
# For each service it registers a new task definition revision that differs from the running one only in the image
# (repository@sha256:…). With --migrate it then runs `bulk-import migrate` as a one-off task of the worker's NEW
# revision, so the new image applies the schema it needs, and waits for it: a failed migration stops the deploy before
# any service moved. It updates each service to its new revision and waits until THE DEPLOYMENT IT STARTED reaches
# rolloutState=COMPLETED. A FAILED rollout, a circuit-breaker rollback, a deployment that disappears or a timeout
# exits non-zero with the reason from the service events, after putting every service it touched back on the task
# definition it ran before and deregistering the revisions it registered: nothing is left pointing at the bad image.
# A failed read of a deployment's state is no state: it is read again, and only 5 failures in a row end the wait, with
# exit 5 (the outcome is unknown): nothing is rolled back on a guess; the script prints the commands to check.
# Revisions it registered are deregistered whenever it stops before updating a service, too: the scheduled tasks run
# the family's latest ACTIVE revision (infra/scheduled-task.ts), which must stay the one the worker service runs.
# One deploy at a time: a lock on this machine, and a refusal while a service already has a deployment in progress.
# A work tree with changes (untracked files included) is refused. `--dry-run` runs the read-only calls and prints the
# others.
set -Eeuo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'USAGE'
usage: scripts/deploy.sh --env NAME --image REPOSITORY@sha256:DIGEST [--backend] [--migrate] [--dry-run]
       scripts/deploy.sh --env NAME --build [--migrate] [--dry-run]

  --env NAME        environment (prod, staging, …): names the lock and the log lines
  --image REF       deploy this image, named by digest (e.g. <account>.dkr.ecr.<region>.amazonaws.com/backend@sha256:…)
  --backend         also deploy REF to the backend service (BACKEND_SERVICE); both roll back together on a failure
  --build           build this repository's Dockerfile, push it as ECR_REPOSITORY_URI:<full commit SHA>, deploy its
                    digest to the worker service (standalone setup; the backend's image is built by the backend)
  --migrate         before any service moves: run `bulk-import migrate` as a task of the worker's new revision (the
                    new image, the service's network) and wait for it; deploy nothing if it fails
  --dry-run         run the read-only AWS calls, print the others

environment:
  ECS_CLUSTER             cluster of the worker service (stack output ClusterName)                    (required)
  WORKER_SERVICE          the worker service (stack output ServiceName)                               (required)
  WORKER_CONTAINER        the worker's container in its task definition                     (default: worker)
  ADMIN_API_SERVICE       the admin API service (stack output AdminApiServiceName), in ECS_CLUSTER   (optional)
  ADMIN_API_CONTAINER     its container                                                        (default: api)
  BACKEND_SERVICE         the backend service                                           (required with --backend)
  BACKEND_CLUSTER         cluster of the backend service                                (default: ECS_CLUSTER)
  BACKEND_CONTAINER       the backend's container      (default: the task definition's only container)
  ECR_REPOSITORY_URI      <account>.dkr.ecr.<region>.amazonaws.com/<name>, the repository --build pushes to
  AWS_REGION              region of the services          (default: from the image's ECR host name)
  DOCKER_PLATFORM         platform --build builds for; linux/arm64 with cpuArchitecture ARM64 (default: linux/amd64)
  DEPLOY_TIMEOUT_SECONDS  how long to wait for a rollout before rolling back (the rollback waits at least 600 s),
                          and for the --migrate task                                           (default: 1800)
  DEPLOY_POLL_SECONDS     seconds between two looks at a rollout                               (default: 15)
  DEPLOY_LOCK_DIR         where the lock file lives                                     (default: TMPDIR or /tmp)
USAGE
}

fail() {
  printf 'deploy.sh: %s\n' "$*" >&2
  exit 1
}

dry_run=false
build=false
with_backend=false
migrate=false
environment=""
image_ref=""
while (($# > 0)); do
  case "$1" in
    --env) environment="${2:-}"; shift 2 || fail "--env needs a value" ;;
    --env=*) environment="${1#--env=}"; shift ;;
    --image) image_ref="${2:-}"; shift 2 || fail "--image needs REPOSITORY@sha256:DIGEST" ;;
    --image=*) image_ref="${1#--image=}"; shift ;;
    --build) build=true; shift ;;
    --backend) with_backend=true; shift ;;
    --migrate) migrate=true; shift ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; fail "unknown argument: $1" ;;
  esac
done

[[ "$environment" =~ ^[a-z][a-z0-9-]{0,19}$ ]] || { usage >&2; fail "--env NAME is required (lowercase, e.g. prod)"; }
if [[ "$build" == true && -n "$image_ref" ]]; then fail "--build and --image exclude each other"; fi
if [[ "$build" == false && -z "$image_ref" ]]; then usage >&2; fail "--image REPOSITORY@sha256:DIGEST or --build is required"; fi
if [[ "$build" == true && "$with_backend" == true ]]; then
  fail "--build deploys the worker only: the backend's image is built and pushed by the backend's pipeline, which then calls deploy.sh --image <digest> --backend"
fi
required=(ECS_CLUSTER WORKER_SERVICE)
[[ "$with_backend" == false ]] || required+=(BACKEND_SERVICE)
[[ "$build" == false ]] || required+=(ECR_REPOSITORY_URI)
for variable in "${required[@]}"; do
  [[ -n "${!variable:-}" ]] || fail "$variable is not set (see --help)"
done

readonly ecr_pattern='^(([0-9]{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?)/([a-z0-9._/-]+)$'
readonly timeout_seconds="${DEPLOY_TIMEOUT_SECONDS:-1800}"
readonly poll_seconds="${DEPLOY_POLL_SECONDS:-15}"
[[ "$timeout_seconds" =~ ^[0-9]+$ ]] || fail "DEPLOY_TIMEOUT_SECONDS=$timeout_seconds is not a number of seconds"
# A rollback gets its own wait, never shorter than 10 minutes: giving up on it would leave a service half-way.
readonly rollback_timeout_seconds=$((timeout_seconds > 600 ? timeout_seconds : 600))
[[ "$poll_seconds" =~ ^[0-9]+(\.[0-9]+)?$ ]] || fail "DEPLOY_POLL_SECONDS=$poll_seconds is not a number of seconds"

if [[ "$build" == true ]]; then
  [[ "$ECR_REPOSITORY_URI" =~ $ecr_pattern ]] ||
    fail "ECR_REPOSITORY_URI=$ECR_REPOSITORY_URI is not <account>.dkr.ecr.<region>.amazonaws.com/<repository>"
  repository="$ECR_REPOSITORY_URI"
  digest=""
else
  [[ "$image_ref" =~ ^([a-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+)@(sha256:[0-9a-f]{64})$ ]] ||
    fail "--image needs REPOSITORY@sha256:<64 hex digits> (a tag is not immutable), got: $image_ref"
  repository="${BASH_REMATCH[1]}"
  digest="${BASH_REMATCH[3]}"
fi
registry="" registry_id="" repository_name="" region="${AWS_REGION:-}"
if [[ "$repository" =~ $ecr_pattern ]]; then
  registry="${BASH_REMATCH[1]}"
  registry_id="${BASH_REMATCH[2]}"
  repository_name="${BASH_REMATCH[5]}"
  region="${region:-${BASH_REMATCH[3]}}"
fi
[[ -n "$region" ]] || fail "AWS_REGION is not set and $repository is not an ECR repository to read it from"
readonly repository registry registry_id repository_name region
readonly backend_cluster="${BACKEND_CLUSTER:-$ECS_CLUSTER}"
readonly worker_container="${WORKER_CONTAINER:-worker}"
readonly platform="${DOCKER_PLATFORM:-linux/amd64}"
# The AWS CLI must not open a pager in the middle of a script.
export AWS_PAGER=""

# The tree the script (and, with --build, the image) comes from must be exactly a commit.
git -C "$ROOT" rev-parse --verify --quiet HEAD >/dev/null || fail "$ROOT is not a git checkout with a commit"
if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=normal)" ]]; then
  fail "the work tree has changes or untracked files: commit or remove them first ($(git -C "$ROOT" status --porcelain --untracked-files=normal | head -n 3 | tr '\n' ' '))"
fi
readonly sha="$(git -C "$ROOT" rev-parse --verify HEAD)"

# One deploy at a time on this machine (a second one fails at once instead of racing the first); scripts/campaign.sh
# takes the same lock.
command -v flock >/dev/null || fail "flock (util-linux) is needed for the deploy lock"
readonly lock_file="${DEPLOY_LOCK_DIR:-${TMPDIR:-/tmp}}/bulk-import-deploy-$environment.lock"
exec 9>>"$lock_file" || fail "cannot open the lock file $lock_file"
flock --nonblock 9 || fail "another deploy or campaign change to $environment is running (lock $lock_file is held); wait for it to finish"

work_dir="$(mktemp -d "${TMPDIR:-/tmp}/bulk-import-deploy.XXXXXX")"
# Revisions registered but not (yet) given to any service: deregistered on any exit before the first update-service.
unused_revisions=()
deregister_revisions() {
  local arn
  for arn in "$@"; do
    aws ecs deregister-task-definition --region "$region" --task-definition "$arn" --query taskDefinition.status --output text >/dev/null ||
      printf 'deploy.sh: could not deregister %s: deregister it by hand (the scheduled tasks run the latest revision)\n' "$arn" >&2
  done
}
on_exit() {
  local status=$?
  if ((${#unused_revisions[@]} > 0)); then
    printf 'deploy.sh: no service was updated; deregistering the revisions registered: %s\n' "${unused_revisions[*]}" >&2
    deregister_revisions "${unused_revisions[@]}"
  fi
  rm -rf "$work_dir"
  exit "$status"
}
trap on_exit EXIT

step="setup"
trap 'status=$?; printf "deploy.sh: step \"%s\" failed (exit %s)\n" "$step" "$status" >&2; exit "$status"' ERR

trace() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
}

# A call that changes nothing: it runs under --dry-run too.
read_call() {
  trace "$@" >&2
  "$@"
}

# A call that changes something: printed, and run unless --dry-run.
write_call() {
  trace "$@" >&2
  if [[ "$dry_run" == true ]]; then return 0; fi
  "$@"
}

announce() {
  step="$1"
  printf '== %s\n' "$step"
}

# --- the image --------------------------------------------------------------------------------------------------

if [[ "$build" == true ]]; then
  readonly build_tag="$repository:$sha"
  announce "check that $repository_name has immutable tags"
  # The commit SHA tag may only ever name this commit's build: a MUTABLE repository lets any later push move it.
  mutability="$(read_call aws ecr describe-repositories --region "$region" --registry-id "$registry_id" \
    --repository-names "$repository_name" --query 'repositories[0].imageTagMutability' --output text)" ||
    fail "cannot read the tag mutability of $repository_name (does the repository exist?)"
  [[ "$mutability" == IMMUTABLE ]] ||
    fail "$repository_name has image tag mutability $mutability: --build pushes only to a repository with immutable tags (aws ecr put-image-tag-mutability --repository-name $repository_name --image-tag-mutability IMMUTABLE)"
  announce "look for an image already pushed as $build_tag"
  # With tag immutability the SHA tag can only ever name this commit's build: reuse it rather than push again.
  existing="$(read_call aws ecr describe-images --region "$region" --registry-id "$registry_id" --repository-name "$repository_name" \
    --image-ids "imageTag=$sha" --query 'imageDetails[0].imageDigest' --output text 2>/dev/null)" || existing=""
  if [[ "$existing" =~ ^sha256:[0-9a-f]{64}$ ]]; then
    digest="$existing"
    printf 'deploy.sh: %s is already pushed (%s); not building again\n' "$build_tag" "$digest"
  else
    announce "log in to $registry"
    printf '+ aws ecr get-login-password --region %q | docker login --username AWS --password-stdin %q\n' "$region" "$registry" >&2
    if [[ "$dry_run" == false ]]; then
      # The registry password goes from the AWS CLI to docker through a pipe, never through arguments or a file.
      aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
    fi
    announce "build $build_tag"
    # No --pull: the base image is pinned by digest in the Dockerfile (BASE_IMAGE), so the build is reproducible.
    write_call docker build --platform "$platform" --file "$ROOT/Dockerfile" --tag "$build_tag" \
      --label "org.opencontainers.image.revision=$sha" "$ROOT"
    announce "push $build_tag"
    write_call docker push "$build_tag"
    if [[ "$dry_run" == true ]]; then
      digest="sha256:<digest of $sha>"
    else
      digest="$(read_call aws ecr describe-images --region "$region" --registry-id "$registry_id" \
        --repository-name "$repository_name" --image-ids "imageTag=$sha" --query 'imageDetails[0].imageDigest' --output text)"
      [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]] || fail "ECR reports no digest for $build_tag (got: $digest)"
    fi
  fi
elif [[ -n "$repository_name" ]]; then
  announce "check that $repository@$digest exists"
  found="$(read_call aws ecr describe-images --region "$region" --registry-id "$registry_id" --repository-name "$repository_name" \
    --image-ids "imageDigest=$digest" --query 'imageDetails[0].imageDigest' --output text)" ||
    fail "ECR has no image $repository@$digest"
  [[ "$found" == "$digest" ]] || fail "ECR has no image $repository@$digest (got: $found)"
fi
readonly digest
readonly image="$repository@$digest"

# --- the services -----------------------------------------------------------------------------------------------
# Parallel arrays, one entry per service deployed: worker first, then the admin API, then the backend.
names=() clusters=() containers=() previous=() registered=() deployments=() outcomes=() reasons=()
names+=("$WORKER_SERVICE"); clusters+=("$ECS_CLUSTER"); containers+=("$worker_container")
if [[ -n "${ADMIN_API_SERVICE:-}" ]]; then
  names+=("$ADMIN_API_SERVICE"); clusters+=("$ECS_CLUSTER"); containers+=("${ADMIN_API_CONTAINER:-api}")
fi
if [[ "$with_backend" == true ]]; then
  names+=("$BACKEND_SERVICE"); clusters+=("$backend_cluster"); containers+=("${BACKEND_CONTAINER:-}")
fi

for i in "${!names[@]}"; do
  announce "read what ${names[i]} runs"
  state="$(read_call aws ecs describe-services --region "$region" --cluster "${clusters[i]}" --services "${names[i]}" \
    --query "services[0].[status, taskDefinition, length(deployments[?rolloutState=='IN_PROGRESS'])]" --output text)"
  read -r service_status task_definition in_progress <<<"$state"
  [[ "$service_status" == ACTIVE ]] || fail "service ${names[i]} in cluster ${clusters[i]} is not active (got: $state)"
  [[ "$in_progress" == 0 ]] ||
    fail "${names[i]} already has a deployment in progress (another deploy, or a stack update): wait until it completes"
  previous+=("$task_definition")
done

# The running revision with only the image changed, in the form RegisterTaskDefinition takes.
new_revision_input() {
  local container="$1"
  node --input-type=module -e '
    import { readFileSync } from "node:fs";
    const [container, image] = process.argv.slice(1);
    const { taskDefinition: old, tags } = JSON.parse(readFileSync(0, "utf8"));
    const names = old.containerDefinitions.map((definition) => definition.name);
    const name = container || (names.length === 1 ? names[0] : undefined);
    if (!name) throw new Error(`the task definition has several containers (${names.join(", ")}): set BACKEND_CONTAINER`);
    const target = old.containerDefinitions.find((definition) => definition.name === name);
    if (!target) throw new Error(`the task definition has no container ${name} (it has ${names.join(", ")})`);
    process.stderr.write(`deploy.sh: ${old.family} container ${name}: ${target.image} -> ${image}\n`);
    target.image = image;
    const accepted = ["family", "taskRoleArn", "executionRoleArn", "networkMode", "containerDefinitions", "volumes",
      "placementConstraints", "requiresCompatibilities", "cpu", "memory", "pidMode", "ipcMode", "proxyConfiguration",
      "inferenceAccelerators", "ephemeralStorage", "runtimePlatform", "enableFaultInjection"];
    const input = Object.fromEntries(accepted.filter((key) => old[key] !== undefined).map((key) => [key, old[key]]));
    if (tags?.length) input.tags = tags;
    process.stdout.write(JSON.stringify(input));
  ' "$container" "$image"
}

for i in "${!names[@]}"; do
  announce "register a revision of ${names[i]}'s task definition that runs $image"
  input_file="$work_dir/task-definition-$i.json"
  read_call aws ecs describe-task-definition --region "$region" --task-definition "${previous[i]}" --include TAGS --output json |
    new_revision_input "${containers[i]}" >"$input_file"
  if [[ "$dry_run" == true ]]; then
    trace aws ecs register-task-definition --region "$region" --cli-input-json "file://$input_file" >&2
    registered+=("<new revision of ${previous[i]##*/}>")
    continue
  fi
  arn="$(write_call aws ecs register-task-definition --region "$region" --cli-input-json "file://$input_file" \
    --query taskDefinition.taskDefinitionArn --output text)"
  [[ "$arn" == arn:*:task-definition/* ]] || fail "register-task-definition returned no ARN (got: $arn)"
  registered+=("$arn")
  unused_revisions+=("$arn")
done

# --- the migrations (--migrate) -----------------------------------------------------------------------------------
# `bulk-import migrate` of the NEW image, before any service runs it: a one-off task of the worker's new revision (it
# has the database secret) in the worker service's subnets and security group. The old image's migrate (a run-task of
# the family, before the revision exists) would not know the new migrations.

readonly migrate_overrides="{\"containerOverrides\":[{\"name\":\"$worker_container\",\"command\":[\"node\",\"bin/bulk-import.js\",\"migrate\"]}]}"

# Waits (at most DEPLOY_TIMEOUT_SECONDS) for one-off task $1 to stop; sets $migration_result to "exit 0" or what failed.
wait_for_task() {
  local task="$1" deadline=$((SECONDS + timeout_seconds)) state status exit_code reason
  while :; do
    state="$(aws ecs describe-tasks --region "$region" --cluster "$ECS_CLUSTER" --tasks "$task" \
      --query "tasks[0].[lastStatus, containers[?name=='$worker_container'] | [0].exitCode, stoppedReason]" --output text)"
    IFS=$'\t' read -r status exit_code reason <<<"$state"
    if [[ "$status" == STOPPED ]]; then
      migration_result="exit ${exit_code:-None}"
      [[ "$exit_code" == 0 ]] || migration_result+=" (${reason:-no reason given})"
      return 0
    fi
    if ((SECONDS >= deadline)); then
      migration_result="still $status after ${timeout_seconds}s; it may finish on its own"
      return 0
    fi
    sleep "$poll_seconds"
  done
}

if [[ "$migrate" == true ]]; then
  announce "run the migrations as a task of ${registered[0]}"
  network="$(read_call aws ecs describe-services --region "$region" --cluster "$ECS_CLUSTER" --services "$WORKER_SERVICE" \
    --query 'services[0].networkConfiguration' --output json)"
  run_task=(aws ecs run-task --region "$region" --cluster "$ECS_CLUSTER" --task-definition "${registered[0]}" --launch-type FARGATE
    --network-configuration "$network" --overrides "$migrate_overrides" --started-by bulk-import-deploy-migrate
    --query 'tasks[0].taskArn' --output text)
  if [[ "$dry_run" == true ]]; then
    trace "${run_task[@]}" >&2
    trace aws ecs describe-tasks --region "$region" --cluster "$ECS_CLUSTER" --tasks '<migration task>' >&2
  else
    migration_task="$(write_call "${run_task[@]}")"
    [[ "$migration_task" == arn:*:task/* ]] || fail "run-task started no migration task (got: $migration_task): nothing was deployed"
    announce "wait for the migrations ($migration_task)"
    wait_for_task "$migration_task"
    if [[ "$migration_result" != "exit 0" ]]; then
      printf 'deploy.sh: the migrations of %s failed: %s\n' "$image" "$migration_result" >&2
      printf 'deploy.sh: their output is in the worker log group, stream bulk-import-worker/%s/%s\n' "$worker_container" "${migration_task##*/}" >&2
      printf 'deploy.sh: %s was NOT deployed\n' "$image" >&2
      exit 4
    fi
    printf 'deploy.sh: the migrations ran (%s)\n' "$migration_task"
  fi
fi

# Starts a deployment of $2 on service index $1 and prints its id.
start_deployment() {
  local i="$1" task_definition="$2"
  write_call aws ecs update-service --region "$region" --cluster "${clusters[i]}" --service "${names[i]}" \
    --task-definition "$task_definition" \
    --query "service.deployments[?taskDefinition=='$task_definition'] | [0].id" --output text
}

# From here on the script accounts for every revision itself (the rollback below deregisters them).
unused_revisions=()
for i in "${!names[@]}"; do
  announce "update ${names[i]} to ${registered[i]}"
  # A call that fails (throttled, denied, the network) must not end the script here: the services already moving
  # would stay on the new image. It counts as this service's failure, and the rollback below puts the others back.
  if ! id="$(start_deployment "$i" "${registered[i]}")"; then
    deployments+=("")
    outcomes+=("FAILED")
    reasons+=("update-service failed (its error is above)")
    continue
  fi
  if [[ "$dry_run" == false && ! "$id" =~ ^ecs-svc/ ]]; then
    deployments+=("")
    outcomes+=("FAILED")
    reasons+=("update-service started no deployment of ${registered[i]} (got: $id)")
    continue
  fi
  deployments+=("$id")
  outcomes+=("")
  reasons+=("")
done

if [[ "$dry_run" == true ]]; then
  for i in "${!names[@]}"; do
    trace aws ecs describe-services --region "$region" --cluster "${clusters[i]}" --services "${names[i]}" \
      --query "services[0].deployments[?id=='<deployment id>'] | [0].[rolloutState, rolloutStateReason]" --output text >&2
  done
  printf 'deploy.sh: dry run, nothing was changed (would deploy %s)\n' "$image"
  exit 0
fi

# The last service events about deployment $2 of service index $1 (ECS names the deployment id in them).
deployment_events() {
  local i="$1" id="$2"
  aws ecs describe-services --region "$region" --cluster "${clusters[i]}" --services "${names[i]}" \
    --query "services[0].events[?contains(message, '$id')] | [:5].message" --output text 2>/dev/null | tr '\t' '\n' || true
}

# How many failed reads of a deployment's state in a row end the wait: one failure (a network blip, throttling,
# credentials being refreshed) says nothing about the deployment.
readonly status_read_attempts=5

# The command that reads the state of deployment $2 of service index $1.
deployment_status_call() {
  status_call=(aws ecs describe-services --region "$region" --cluster "${clusters[$1]}" --services "${names[$1]}"
    --query "services[0].deployments[?id=='$2'] | [0].[rolloutState, rolloutStateReason]" --output text)
}

# Prints the state of deployment $2 of service index $1 ("<rolloutState><TAB><reason>", or None when the service has
# no such deployment). A call that fails or answers nothing is not a state: it is tried again, and only
# $status_read_attempts of them in a row fail this.
read_deployment_status() {
  local attempt output
  deployment_status_call "$1" "$2"
  for ((attempt = 1; ; attempt++)); do
    if output="$("${status_call[@]}")" && [[ -n "$output" ]]; then
      printf '%s\n' "$output"
      return 0
    fi
    printf 'deploy.sh: %s: could not read the state of deployment %s (%s of %s failures in a row)\n' \
      "${names[$1]}" "$2" "$attempt" "$status_read_attempts" >&2
    ((attempt < status_read_attempts)) || return 1
    sleep "$poll_seconds"
  done
}

# Waits (at most $1 seconds) until every deployment started is COMPLETED, or one fails. Sets outcomes[i] to COMPLETED,
# FAILED, GONE, TIMEOUT or UNKNOWN (its state could not be read) and reasons[i] to ECS's words.
wait_for_deployments() {
  local limit="$1" deadline=$((SECONDS + $1)) i state reason pending
  while :; do
    pending=0
    for i in "${!names[@]}"; do
      [[ -z "${outcomes[i]}" ]] || continue
      if ! state="$(read_deployment_status "$i" "${deployments[i]}")"; then
        outcomes[i]=UNKNOWN
        reasons[i]="its state could not be read, $status_read_attempts tries in a row (the errors are above)"
        return 1
      fi
      IFS=$'\t' read -r state reason <<<"$state"
      case "$state" in
        COMPLETED) outcomes[i]=COMPLETED; printf 'deploy.sh: %s: deployment %s completed\n' "${names[i]}" "${deployments[i]}" ;;
        FAILED) outcomes[i]=FAILED; reasons[i]="${reason:-rollout failed}" ;;
        None) outcomes[i]=GONE; reasons[i]="the deployment left the service before it completed (rolled back or replaced)" ;;
        *) pending=$((pending + 1)) ;;
      esac
      if [[ "${outcomes[i]}" == FAILED || "${outcomes[i]}" == GONE ]]; then return 1; fi
    done
    ((pending > 0)) || return 0
    if ((SECONDS >= deadline)); then
      for i in "${!names[@]}"; do
        if [[ -z "${outcomes[i]}" ]]; then outcomes[i]=TIMEOUT; reasons[i]="not completed after ${limit}s"; fi
      done
      return 1
    fi
    sleep "$poll_seconds"
  done
}

announce "wait for the deployments to reach rolloutState=COMPLETED"
failed=false
for i in "${!names[@]}"; do [[ "${outcomes[i]}" != FAILED ]] || failed=true; done
if [[ "$failed" == false ]] && wait_for_deployments "$timeout_seconds"; then
  step="done"
  deployed="${names[0]}"
  for name in "${names[@]:1}"; do deployed+=" and $name"; done
  printf 'deploy.sh: %s run %s\n' "$deployed" "$image"
  exit 0
fi

# A command's words quoted for a shell, on one line, indented: what an operator pastes.
pasteable() {
  printf '  %q' "$1"
  printf ' %q' "${@:2}"
  printf '\n'
}

# Prints how to read the state of deployment $2 of service index $1.
print_status_command() {
  deployment_status_call "$1" "$2"
  pasteable "${status_call[@]}"
}

# --- a deployment whose state could not be read: say so, change nothing ---------------------------------------------
# Its state is unknown, not failed: ECS carries the deployment on, and it may be completing. Rolling it back would act
# on a guess (and the calls would likely fail the same way), so nothing is rolled back or deregistered: the script says
# where each service stood, how to look, and how to put a service back by hand.
report_unknown_deploy() {
  local i
  for i in "${!names[@]}"; do
    case "${outcomes[i]}" in
      COMPLETED) printf 'deploy.sh: %s: deployment %s completed: it runs %s\n' "${names[i]}" "${deployments[i]}" "${registered[i]}" >&2 ;;
      UNKNOWN) printf 'deploy.sh: %s: deployment %s of %s: state UNKNOWN: %s\n' "${names[i]}" "${deployments[i]}" "${registered[i]}" "${reasons[i]}" >&2 ;;
      *) printf 'deploy.sh: %s: deployment %s of %s: not seen completed when the script stopped waiting\n' "${names[i]}" "${deployments[i]}" "${registered[i]}" >&2 ;;
    esac
  done
  printf 'deploy.sh: check each deployment (COMPLETED: deployed; FAILED, or None once it left the service: not deployed):\n' >&2
  for i in "${!names[@]}"; do
    [[ "${outcomes[i]}" == COMPLETED ]] || print_status_command "$i" "${deployments[i]}" >&2
  done
  printf 'deploy.sh: to put a service back on what it ran before, then deregister its new revision (the scheduled tasks run the latest ACTIVE revision):\n' >&2
  for i in "${!names[@]}"; do
    pasteable aws ecs update-service --region "$region" --cluster "${clusters[i]}" --service "${names[i]}" --task-definition "${previous[i]}" >&2
    pasteable aws ecs deregister-task-definition --region "$region" --task-definition "${registered[i]}" >&2
  done
  printf 'deploy.sh: whether %s is deployed is UNKNOWN: nothing was rolled back, the new revisions stay registered: %s\n' "$image" "${registered[*]}" >&2
}

for i in "${!names[@]}"; do
  if [[ "${outcomes[i]}" == UNKNOWN ]]; then
    report_unknown_deploy
    exit 5
  fi
done

# --- a failure: report it, then put every service back ------------------------------------------------------------
trap - ERR
set +e
for i in "${!names[@]}"; do
  case "${outcomes[i]}" in
    COMPLETED | '') continue ;;
  esac
  printf 'deploy.sh: %s: deployment %s %s: %s\n' "${names[i]}" "${deployments[i]:-(none)}" "${outcomes[i]}" "${reasons[i]}" >&2
  if [[ -n "${deployments[i]}" ]]; then
    events="$(deployment_events "$i" "${deployments[i]}")"
    [[ -z "$events" ]] || printf '%s\n' "$events" | sed "s/^/deploy.sh: ${names[i]} event: /" >&2
  fi
done

announce "roll back: every service back on the task definition it ran before"
rollback_failed=false
rolling_back=false
for i in "${!names[@]}"; do
  current="$(aws ecs describe-services --region "$region" --cluster "${clusters[i]}" --services "${names[i]}" \
    --query 'services[0].taskDefinition' --output text)"
  if [[ "$current" == "${previous[i]}" ]]; then
    printf 'deploy.sh: %s is back on %s (ECS rolled it back, or it never moved)\n' "${names[i]}" "${previous[i]}" >&2
    outcomes[i]=COMPLETED # nothing to wait for
    continue
  fi
  printf 'deploy.sh: %s runs %s: putting it back on %s\n' "${names[i]}" "$current" "${previous[i]}" >&2
  deployments[i]="$(start_deployment "$i" "${previous[i]}")"
  outcomes[i]=""
  rolling_back=true
done
rollback_unknown=false
if [[ "$rolling_back" == true ]] && ! wait_for_deployments "$rollback_timeout_seconds"; then
  for i in "${!names[@]}"; do
    case "${outcomes[i]}" in
      COMPLETED) ;;
      UNKNOWN | '')
        rollback_unknown=true
        [[ -n "${outcomes[i]}" ]] || reasons[i]="the wait ended on another service before this one was seen back"
        printf 'deploy.sh: WHETHER THE ROLLBACK OF %s COMPLETED IS UNKNOWN (%s): check it now (docs/DEPLOYMENT.md §4.3):\n' "${names[i]}" "${reasons[i]}" >&2
        print_status_command "$i" "${deployments[i]}" >&2
        ;;
      *)
        rollback_failed=true
        printf 'deploy.sh: ROLLBACK OF %s FAILED (%s): check it now (docs/DEPLOYMENT.md §4.3)\n' "${names[i]}" "${reasons[i]}" >&2
        ;;
    esac
  done
fi

# Only the revisions of services seen back on their previous one: a service whose rollback did not complete (or was
# not waited for once another's failed) may still run its new one, and the scheduled tasks run the latest ACTIVE
# revision of the family, which must stay the one the service runs.
rolled_back=() still_running=()
for i in "${!names[@]}"; do
  if [[ "${outcomes[i]}" == COMPLETED ]]; then rolled_back+=("${registered[i]}"); else still_running+=("${registered[i]}"); fi
done
deregister_revisions ${rolled_back[@]+"${rolled_back[@]}"}
if [[ "$rollback_failed" == true ]]; then
  printf 'deploy.sh: %s was NOT deployed and the rollback did not complete; kept registered (a service may run them): %s\n' \
    "$image" "${still_running[*]}" >&2
  exit 3
fi
if [[ "$rollback_unknown" == true ]]; then
  printf 'deploy.sh: %s was NOT deployed and whether the rollback completed is UNKNOWN; kept registered (a service may run them): %s\n' \
    "$image" "${still_running[*]}" >&2
  exit 5
fi
printf 'deploy.sh: %s was NOT deployed; every service runs the task definition it ran before, the new revisions are deregistered\n' "$image" >&2
exit 2
