#!/usr/bin/env bash
# Starts or stops an import campaign (docs/DEPLOYMENT.md §6). The campaign is part of the stack, so both go through
# `cdk deploy`, and the task definition, the read-only /import mount, the task role's EFS permission and the
# RunningTaskCount alarm always agree with what runs:
#   start  importCampaign=true,  desiredCount=N            (the share is mounted read-only at /import)
#   stop   importCampaign=false, desiredCount=the baseline (environments.<env>.desiredCount in cdk.json, else 1),
#          or --tasks N; `stop --tasks 0` is the rollback: no worker runs, queued jobs wait, nothing is lost.
# It keeps the image the worker service runs: the digest in the service's task definition goes to cdk as
# `-c imageDigest=…` (unless given after --), so the deploy does not go back to the mutable imageTag.
# It refuses a work tree with changes (untracked files included), shows the `cdk diff` of the stack and deploys only
# after a yes (asked on a terminal, or --yes). After the deploy it sets the service to the count the stack asks for
# (stack output DesiredCount) when the service's count differs: a deploy that changes nothing leaves the count where it
# was (0 after a hard stop), and with autoscaling the stack does not set it at all. Then it waits until the worker
# service is stable and prints what runs. `stop --hard` first stops every running task (StopTask: SIGTERM, the worker
# drains, releases its leases and its scale-in protection, exits) instead of waiting for busy tasks to go idle
# (docs/DEPLOYMENT.md §6.3); the service's autoscaling, when the stack has it, is suspended meanwhile (it would start
# tasks again as they stop) and restored as it was after the deploy if the stack still has it. A hard stop that fails
# after setting the count to 0 (a failed deploy) says that the service is left at 0, with the command that gives it
# back the count it had; one whose call to set 0 failed says the count is unknown, and how to read it. A failed deploy
# whose rollback left the worker on another image than the one pinned (the stack's own task definition names the image
# of the last `cdk deploy`, not deploy.sh's) says so, with the scripts/deploy.sh command that restores the pinned one.
# One campaign.sh or deploy.sh per environment at a time on this machine: both take the same lock.
# `--dry-run` runs the diff and prints the other commands.
set -Eeuo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'USAGE'
usage: scripts/campaign.sh start --env NAME --tasks N [--yes] [--dry-run] [-- CDK_ARGS…]
       scripts/campaign.sh stop  --env NAME [--tasks N] [--hard] [--yes] [--dry-run] [-- CDK_ARGS…]

  start            mount the campaign share read-only at /import and run N worker tasks (1-100)
  stop             remove the mount and go back to the baseline task count (or --tasks N, 0 stops the worker)
  --env NAME       environment (prod, staging, …): the stack BulkImportWorker-NAME
  --hard           stop: stop every running worker task now (each drains and exits within the stop timeout)
                   instead of letting busy tasks finish what they hold first (the deploy waits for them, but
                   CloudFormation gives up after about 3 hours and rolls the stack back: docs/DEPLOYMENT.md §4.4)
  --yes            deploy after showing the diff without asking (for a terminal-less run)
  --dry-run        show the diff, print the other commands, change nothing
  -- CDK_ARGS…     passed to cdk deploy, e.g. -- -c alarmEmail=oncall@example.com

environment:
  CDK_BIN          the CDK CLI (default: the project's node_modules/.bin/cdk)
  AWS_REGION       region of the stack (default: the AWS CLI's)
  DEPLOY_LOCK_DIR  where the lock shared with scripts/deploy.sh lives (default: TMPDIR or /tmp)
USAGE
}

fail() {
  printf 'campaign.sh: %s\n' "$*" >&2
  exit 1
}

(($# > 0)) || { usage >&2; exit 64; }
action="$1"
shift
case "$action" in
  start | stop) ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; fail "unknown action: $action (start or stop)" ;;
esac

dry_run=false
assume_yes=false
hard=false
environment=""
tasks=""
cdk_args=()
while (($# > 0)); do
  case "$1" in
    --env) environment="${2:-}"; shift 2 || fail "--env needs a value" ;;
    --env=*) environment="${1#--env=}"; shift ;;
    --tasks) tasks="${2:-}"; shift 2 || fail "--tasks needs a number" ;;
    --tasks=*) tasks="${1#--tasks=}"; shift ;;
    --dry-run) dry_run=true; shift ;;
    --yes) assume_yes=true; shift ;;
    --hard) hard=true; shift ;;
    --) shift; cdk_args=("$@"); break ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; fail "unknown argument: $1" ;;
  esac
done

[[ "$environment" =~ ^[a-z][a-z0-9-]{0,19}$ ]] || { usage >&2; fail "--env NAME is required (lowercase, e.g. prod)"; }
if [[ "$action" == start ]]; then
  [[ "$tasks" =~ ^[0-9]+$ ]] && ((10#$tasks >= 1 && 10#$tasks <= 100)) ||
    fail "start needs --tasks N with N from 1 to 100 (a campaign without workers imports nothing)"
elif [[ -n "$tasks" ]]; then
  [[ "$tasks" =~ ^[0-9]+$ ]] && ((10#$tasks <= 100)) || fail "--tasks must be a number from 0 to 100, got: $tasks"
fi

[[ "$hard" == false || "$action" == stop ]] || fail "--hard is for stop only"

# What is deployed must be exactly a commit: cdk synthesizes the stack from this work tree.
git -C "$ROOT" rev-parse --verify --quiet HEAD >/dev/null || fail "$ROOT is not a git checkout with a commit"
if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=normal)" ]]; then
  fail "the work tree has changes or untracked files: commit or remove them first ($(git -C "$ROOT" status --porcelain --untracked-files=normal | head -n 3 | tr '\n' ' '))"
fi

# One campaign.sh or deploy.sh to this environment at a time on this machine: the same lock as deploy.sh's, so a
# deploy cannot roll out an image while a campaign changes the task count (or the other way round).
# A dry run changes nothing and takes no lock.
if [[ "$dry_run" == false ]]; then
  command -v flock >/dev/null || fail "flock (util-linux) is needed for the deploy lock"
  readonly lock_file="${DEPLOY_LOCK_DIR:-${TMPDIR:-/tmp}}/bulk-import-deploy-$environment.lock"
  exec 9>>"$lock_file" || fail "cannot open the lock file $lock_file"
  flock --nonblock 9 || fail "a deploy or campaign change to $environment is running (lock $lock_file is held); wait for it to finish"
fi

readonly stack="BulkImportWorker-$environment"
cdk_bin="${CDK_BIN:-$ROOT/node_modules/.bin/cdk}"
region_args=()
[[ -z "${AWS_REGION:-}" ]] || region_args=(--region "$AWS_REGION")
export AWS_PAGER=""

step="setup"
trap 'status=$?; ((BASH_SUBSHELL == 0)) || exit "$status"; printf "campaign.sh: step \"%s\" failed (exit %s)\n" "$step" "$status" >&2; exit "$status"' ERR
# Set from just before the hard stop suspends the service's autoscaling until it is restored: any exit in between (a
# failed step, `fail`, Ctrl-C, a TERM) says so and how to restore it. $scaling_before: the flags it found.
autoscaling_suspended=false
scaling_before=""
# Where the hard stop's count of 0 stands until the count is the stack's again after the deploy: `asked` while its
# update-service call runs (a failed call may or may not have set it), `set` once ECS answered 0. Any exit in between
# says so, and how to give the service back the count it had ($count_before_hard_stop).
hard_stop_zero="none"
count_before_hard_stop=""
# `running` while the cdk deploy runs: a deploy that fails there may leave the worker on another image (on_exit).
stack_deploy="none"
on_exit() {
  local status=$?
  # Not after Ctrl-C: CloudFormation goes on with the update, and the image the service ends up on is not known yet.
  if [[ "$stack_deploy" == running && -n "${pinned_image:-}" && $status != 130 && $BASH_SUBSHELL == 0 && "$dry_run" == false ]]; then
    (warn_if_worker_image_moved) ||
      printf 'campaign.sh: could not read which image the worker service runs after the failed deploy: check that it is still %s (a rollback can put it back on the image of the last `cdk deploy`)\n' "$pinned_image" >&2
  fi
  if [[ "$hard_stop_zero" == set && $BASH_SUBSHELL == 0 ]]; then
    printf 'campaign.sh: the service %s is left at desired count 0: the hard stop set it to 0 (from %s) and the script stopped before setting the count the stack asks for. No worker runs; queued jobs wait. Restore the count it had (or the one you want):\n  %s\n' \
      "$service" "$count_before_hard_stop" "$(count_restore_command_text)" >&2
  elif [[ "$hard_stop_zero" == asked && $BASH_SUBSHELL == 0 ]]; then
    printf 'campaign.sh: the hard stop'"'"'s call to set the service %s to desired count 0 (from %s) failed: ECS may or may not have applied it. Read its count:\n  %s\nIf it is 0, no worker runs and queued jobs wait: restore the count it had (or the one you want):\n  %s\n' \
      "$service" "$count_before_hard_stop" "$(count_read_command_text)" "$(count_restore_command_text)" >&2
  fi
  if [[ "$autoscaling_suspended" == true && $BASH_SUBSHELL == 0 ]]; then
    printf 'campaign.sh: the autoscaling of %s may still be suspended (no scaling out or in). Restore it once the service is as you want it:\n  %s\n' \
      "$service" "$(restore_command_text)" >&2
  fi
  exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT

# Prints a command the way it runs.
trace() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
}

# Prints a command, then runs it (unless --dry-run).
run() {
  trace "$@"
  if [[ "$dry_run" == true ]]; then return 0; fi
  "$@"
}

announce() {
  step="$1"
  printf '== %s\n' "$step"
}

context=(-c "environment=$environment")
if [[ "$action" == start ]]; then
  context+=(-c importCampaign=true -c "desiredCount=$((10#$tasks))")
  announce "start the campaign: /import mounted read-only, $((10#$tasks)) task(s)"
else
  context+=(-c importCampaign=false)
  [[ -z "$tasks" ]] || context+=(-c "desiredCount=$((10#$tasks))")
  announce "stop the campaign: no /import mount, ${tasks:-the baseline number of} task(s)"
fi
# cdk.json (the app and its per-environment settings) is read from the repository root.
cd "$ROOT"

# Reads the worker's cluster and service from the stack outputs into $cluster and $service, and the count the deployed
# stack asks for into $stack_count (empty for a stack deployed before it had that output).
read_outputs() {
  if [[ "$dry_run" == true ]]; then
    trace_outputs_call
    cluster='<ClusterName>'
    service='<ServiceName>'
    stack_count='<DesiredCount>'
    return 0
  fi
  read_outputs_now
}

describe_stack=(aws cloudformation describe-stacks ${region_args[@]+"${region_args[@]}"} --stack-name "$stack"
  --query "Stacks[0].Outputs[?OutputKey=='ClusterName'||OutputKey=='ServiceName'||OutputKey=='DesiredCount'].[OutputKey,OutputValue]"
  --output text)
trace_outputs_call() { trace "${describe_stack[@]}"; }

read_outputs_now() {
  local outputs
  trace_outputs_call
  outputs="$("${describe_stack[@]}")"
  cluster="$(awk '$1 == "ClusterName" { print $2 }' <<<"$outputs" | tail -n 1)"
  service="$(awk '$1 == "ServiceName" { print $2 }' <<<"$outputs" | tail -n 1)"
  stack_count="$(awk '$1 == "DesiredCount" { print $2 }' <<<"$outputs" | tail -n 1)"
  [[ -n "$cluster" && -n "$service" ]] || fail "stack $stack has no ClusterName/ServiceName outputs"
}

# Reads the task definition the worker service ($cluster, $service) runs into $task_definition and the image of its
# worker container into $worker_image. Read-only. Returns 1, with the reason on stderr, when it cannot.
read_worker_image() {
  local describe_service describe_task_definition
  describe_service=(aws ecs describe-services ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --services "$service"
    --query 'services[0].taskDefinition' --output text)
  trace "${describe_service[@]}"
  task_definition="$("${describe_service[@]}")" || return 1
  if [[ "$task_definition" != arn:*:task-definition/* ]]; then
    printf 'campaign.sh: service %s has no task definition (got: %s)\n' "$service" "$task_definition" >&2
    return 1
  fi
  describe_task_definition=(aws ecs describe-task-definition ${region_args[@]+"${region_args[@]}"}
    --task-definition "$task_definition" --output json)
  trace "${describe_task_definition[@]}"
  worker_image="$("${describe_task_definition[@]}" | node -e '
      const input = JSON.parse(require("node:fs").readFileSync(0, "utf8"));
      const container = input.taskDefinition.containerDefinitions.find((c) => c.name === process.argv[1]);
      process.stdout.write(container ? container.image : "");
    ' "${WORKER_CONTAINER:-worker}")" || return 1
  if [[ -z "$worker_image" ]]; then
    printf 'campaign.sh: %s has no %s container\n' "$task_definition" "${WORKER_CONTAINER:-worker}" >&2
    return 1
  fi
}

# The image the worker ran before the deploy, whose digest the deploy pins: what the worker must still run if the
# deploy fails (warn_if_worker_image_moved). Empty when the deploy names the imageTag or -- -c imageDigest=… is given.
pinned_image=""

# The image the worker service runs now, by digest, so the deploy keeps it (docs/DEPLOYMENT.md §2): without
# imageDigest the stack's task definition would name the mutable imageTag again. Read-only, so it runs under --dry-run.
pin_running_image() {
  read_outputs_now
  read_worker_image || fail "cannot read the image the worker service $service runs"
  if [[ "$worker_image" =~ @(sha256:[0-9a-f]{64})$ ]]; then
    pinned_image="$worker_image"
    context+=(-c "imageDigest=${BASH_REMATCH[1]}")
    printf 'campaign.sh: keeping the running image %s\n' "$worker_image"
  else
    printf 'campaign.sh: the worker runs %s, named by tag, not digest: deploying imageTag\n' "$worker_image" >&2
  fi
}

if [[ " ${cdk_args[*]-} " != *" imageDigest="* ]]; then
  announce "read the image the worker runs"
  pin_running_image
fi

announce "what the deploy changes (cdk diff)"
trace "$cdk_bin" diff "$stack" --no-notices "${context[@]}" ${cdk_args[@]+"${cdk_args[@]}"}
"$cdk_bin" diff "$stack" --no-notices "${context[@]}" ${cdk_args[@]+"${cdk_args[@]}"}

if [[ "$dry_run" == false && "$assume_yes" == false ]]; then
  [[ -t 0 ]] || fail "no terminal to confirm the diff above: review it, then run again with --yes"
  read -r -p "Deploy these changes to $stack? [y/N] " answer
  [[ "$answer" =~ ^[Yy]([Ee][Ss])?$ ]] || fail "not deployed (answer: ${answer:-no})"
fi

# The service's scalable target (autoscaling=true in the stack), into $scaling_state: what is suspended now, as
# "<scaling in> <scaling out> <scheduled scaling>" (True or False each), or None when the service has no autoscaling.
# Read-only.
read_autoscaling_state() {
  local describe=(aws application-autoscaling describe-scalable-targets ${region_args[@]+"${region_args[@]}"}
    --service-namespace ecs --resource-ids "service/$cluster/$service"
    --query 'ScalableTargets[0].SuspendedState.[DynamicScalingInSuspended,DynamicScalingOutSuspended,ScheduledScalingSuspended]'
    --output text)
  trace "${describe[@]}"
  scaling_state=None
  if [[ "$dry_run" == true ]]; then return 0; fi
  scaling_state="$("${describe[@]}")"
  scaling_state="$(tr -s '\t ' '  ' <<<"$scaling_state")"
  # A flag the API leaves out is not suspended.
  [[ "$scaling_state" == None ]] || scaling_state="${scaling_state//None/False}"
  [[ "$scaling_state" =~ ^(None|(True|False) (True|False) (True|False))$ ]] || fail "unexpected autoscaling state of $service: $scaling_state"
}

# The command that sets the service's suspended flags (scaling in, scaling out, scheduled: true or false each), into
# $scaling_command.
scaling_command_for() {
  scaling_command=(aws application-autoscaling register-scalable-target ${region_args[@]+"${region_args[@]}"} --service-namespace ecs
    --resource-id "service/$cluster/$service" --scalable-dimension ecs:service:DesiredCount
    --suspended-state "DynamicScalingInSuspended=$1,DynamicScalingOutSuspended=$2,ScheduledScalingSuspended=$3")
}
set_scaling_flags() {
  scaling_command_for "$@"
  run "${scaling_command[@]}"
}
# The flags as they were before the hard stop ($scaling_before, "True False False"), lowercase, as three words.
flags_before() {
  tr '[:upper:]' '[:lower:]' <<<"$scaling_before"
}
# The restore command as an operator pastes it.
restore_command_text() {
  # shellcheck disable=SC2046 # three words on purpose
  scaling_command_for $(flags_before)
  local last=$((${#scaling_command[@]} - 1))
  printf "%s '%s'" "${scaling_command[*]:0:last}" "${scaling_command[last]}"
}

# The command that gives the service back the desired count it had before the hard stop, as an operator pastes it.
count_restore_command_text() {
  pasteable aws ecs update-service ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --service "$service" \
    --desired-count "$count_before_hard_stop"
}

# The command that reads the service's desired count, as an operator pastes it.
count_read_command_text() {
  pasteable aws ecs describe-services ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --services "$service" \
    --query 'services[0].desiredCount' --output text
}

# A command's words quoted for a shell, on one line.
pasteable() {
  printf '%q' "$1"
  printf ' %q' "${@:2}"
}

if [[ "$hard" == true ]]; then
  # Scale-in protection keeps a busy task through a lower desiredCount and through deployments, but not through
  # StopTask. Desired count 0 first, so ECS starts no replacement; after the deploy the count asked for is set again
  # (set_stack_count: a deploy that changes nothing would leave the service at 0).
  announce "hard stop: stop every running worker task now"
  read_outputs
  # Autoscaling would start tasks again while they are stopped (the queue is not empty): suspended first.
  read_autoscaling_state
  if [[ "$dry_run" == true ]]; then
    printf 'campaign.sh: if the service has autoscaling, it is suspended here and resumed after the deploy\n'
  elif [[ "$scaling_state" == "True True True" ]]; then
    printf 'campaign.sh: the autoscaling of %s is already suspended (in, out, scheduled): left as it is\n' "$service"
  elif [[ "$scaling_state" != None ]]; then
    # Whatever someone suspended already is restored as it was after the deploy; all of it is suspended meanwhile.
    announce "suspend the autoscaling of $service while its tasks stop (found in, out, scheduled: $scaling_state)"
    scaling_before="$scaling_state"
    autoscaling_suspended=true
    set_scaling_flags true true true
  fi
  announce "stop every running worker task"
  # The count the service has now, so that a failure from here on can say how to give it back (on_exit).
  describe_count_before=(aws ecs describe-services ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --services "$service"
    --query 'services[0].desiredCount' --output text)
  trace "${describe_count_before[@]}"
  if [[ "$dry_run" == false ]]; then
    count_before_hard_stop="$("${describe_count_before[@]}")"
    [[ "$count_before_hard_stop" =~ ^[0-9]+$ ]] || fail "unexpected desired count of $service: $count_before_hard_stop"
    hard_stop_zero="asked"
  fi
  run aws ecs update-service ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --service "$service" \
    --desired-count 0 --query 'service.desiredCount' --output text
  [[ "$dry_run" == true ]] || hard_stop_zero="set"
  list_tasks=(aws ecs list-tasks ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --service-name "$service"
    --desired-status RUNNING --query 'taskArns' --output text)
  trace "${list_tasks[@]}"
  tasks_running=()
  if [[ "$dry_run" == false ]]; then
    # Read first, then split: a failed list-tasks must stop the script, not look like "no task running".
    task_list="$("${list_tasks[@]}")"
    read -r -a tasks_running <<<"$(tr '\t' ' ' <<<"$task_list" | sed 's/^None$//')"
  fi
  for task in ${tasks_running[@]+"${tasks_running[@]}"}; do
    run aws ecs stop-task ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --task "$task" \
      --reason "campaign.sh stop --hard" --query 'task.desiredStatus' --output text
  done
  if ((${#tasks_running[@]} > 0)); then
    run aws ecs wait tasks-stopped ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --tasks "${tasks_running[@]}"
  fi
fi

# After a failed deploy: CloudFormation's rollback puts the service back on the stack's own task definition, and that
# names the image of the last `cdk deploy`, not the one scripts/deploy.sh rolled out since (its revisions are outside
# the stack): the worker would silently run an older image. Compares the image it runs with the pinned one and says
# loudly how to restore it. Runs in a subshell from on_exit: a failing read ends only it.
warn_if_worker_image_moved() {
  read_worker_image >/dev/null || return 1
  [[ "$worker_image" != "$pinned_image" ]] || return 0
  local restore=("ECS_CLUSTER=$cluster" "WORKER_SERVICE=$service" scripts/deploy.sh --env "$environment" --image "$pinned_image")
  [[ -z "${AWS_REGION:-}" ]] || restore=("AWS_REGION=$AWS_REGION" "${restore[@]}")
  printf 'campaign.sh: WARNING: THE WORKER RUNS ANOTHER IMAGE NOW: %s runs %s (%s), not %s, the image it ran before this deploy and the one the deploy pinned.\n' \
    "$service" "$worker_image" "$task_definition" "$pinned_image" >&2
  printf 'campaign.sh: the failed deploy'"'"'s rollback put the service back on the stack'"'"'s own task definition, which names the image of the last `cdk deploy` (scripts/deploy.sh registers its revisions outside the stack). Restore the image it ran (add ADMIN_API_SERVICE=<stack output AdminApiServiceName> when the stack has the admin API: it moves back the same way):\n  %s\n' \
    "$(pasteable "${restore[@]}")" >&2
}

announce "deploy $stack"
stack_deploy=running
run "$cdk_bin" deploy "$stack" --require-approval never --no-notices "${context[@]}" ${cdk_args[@]+"${cdk_args[@]}"}
stack_deploy=done

announce "read the stack outputs"
read_outputs

# The service's count is the stack's only when this deploy changed it: CloudFormation leaves a service it has nothing to
# update alone, and with autoscaling the template names no count. So the count is compared and set here.
set_stack_count() {
  local describe_count=(aws ecs describe-services ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --services "$service"
    --query 'services[0].desiredCount' --output text)
  local set_count=(aws ecs update-service ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --service "$service"
    --desired-count "$stack_count" --query 'service.desiredCount' --output text)
  trace "${describe_count[@]}"
  if [[ "$dry_run" == true ]]; then
    printf 'campaign.sh: if the count of the service differs from the stack output DesiredCount:\n'
    trace "${set_count[@]}"
    return 0
  fi
  [[ "$stack_count" =~ ^[0-9]+$ ]] || fail "stack $stack has no DesiredCount output (got: ${stack_count:-none}): the service's count cannot be checked"
  local current
  current="$("${describe_count[@]}")"
  [[ "$current" != "$stack_count" ]] || return 0
  announce "set $service to the stack's $stack_count task(s) (the deploy left it at $current)"
  run "${set_count[@]}"
}
set_stack_count
# The service has the stack's count now (0 too when the stack asks for 0: then that is what was asked for).
hard_stop_zero="none"

if [[ "$autoscaling_suspended" == true ]]; then
  # The deploy removes the autoscaling with desiredCount 0; otherwise it is the stack's again, and resumed.
  read_autoscaling_state
  if [[ "$scaling_state" != None ]]; then
    announce "restore the autoscaling of $service (in, out, scheduled: $scaling_before)"
    # shellcheck disable=SC2046 # three words on purpose
    set_scaling_flags $(flags_before)
  else
    printf 'campaign.sh: the deploy removed the autoscaling of %s (desiredCount 0): nothing to resume\n' "$service"
  fi
  autoscaling_suspended=false
fi

announce "wait until $service is stable"
run aws ecs wait services-stable ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --services "$service"
run aws ecs describe-services ${region_args[@]+"${region_args[@]}"} --cluster "$cluster" --services "$service" \
  --query 'services[0].{desired:desiredCount,running:runningCount,taskDefinition:taskDefinition}' --output table

step="done"
if [[ "$dry_run" == true ]]; then
  printf 'campaign.sh: dry run, nothing was changed\n'
else
  printf 'campaign.sh: campaign %s on %s\n' "$([[ "$action" == start ]] && echo started || echo stopped)" "$stack"
fi
