#!/usr/bin/env bash
# Deploys a new image of the backend and the bulk-import worker (they run the same image; docs/DEPLOYMENT.md §2):
#   1. build the image from the Dockerfile and tag it with the git SHA,
#   2. push it to the backend's ECR repository, and move the environment's deploy tag (the stack's imageTag) to it,
#   3. force a new deployment of the backend service and of the worker service,
#   4. wait until both services are stable.
# Any failing step stops the script with a non-zero exit and names the step. `--dry-run` prints the commands only.
# `--redeploy SHA` skips the build and moves the deploy tag back to an image pushed earlier (an image rollback).
set -Eeuo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'USAGE'
usage: scripts/deploy.sh --env NAME [--dry-run] [--redeploy SHA] [--allow-dirty]

  --env NAME       environment (prod, staging, …); the deploy tag defaults to it
  --dry-run        print every command instead of running it
  --redeploy SHA   no build: point the deploy tag at the image pushed for SHA and redeploy (rollback)
  --allow-dirty    build although the work tree has uncommitted changes (the SHA tag would lie)

environment:
  ECR_REPOSITORY_URI  the backend's repository, <account>.dkr.ecr.<region>.amazonaws.com/<name>   (required)
  ECS_CLUSTER         cluster of the worker service (stack output ClusterName)                    (required)
  WORKER_SERVICE      the worker service (stack output ServiceName)                               (required)
  BACKEND_SERVICE     the backend service                                                         (required)
  BACKEND_CLUSTER     cluster of the backend service                          (default: ECS_CLUSTER)
  DEPLOY_TAG          tag both task definitions run (the stack's imageTag)    (default: --env NAME)
  AWS_REGION          region of the repository and services                   (default: from ECR_REPOSITORY_URI)
  DOCKER_PLATFORM     platform to build for; linux/arm64 with cpuArchitecture ARM64 (default: linux/amd64)
  GIT_SHA             the commit to tag with                                  (default: git rev-parse HEAD)
USAGE
}

fail() {
  printf 'deploy.sh: %s\n' "$*" >&2
  exit 1
}

dry_run=false
allow_dirty=false
environment=""
redeploy_sha=""
while (($# > 0)); do
  case "$1" in
    --env) environment="${2:-}"; shift 2 || fail "--env needs a value" ;;
    --env=*) environment="${1#--env=}"; shift ;;
    --dry-run) dry_run=true; shift ;;
    --redeploy) redeploy_sha="${2:-}"; shift 2 || fail "--redeploy needs a SHA" ;;
    --redeploy=*) redeploy_sha="${1#--redeploy=}"; shift ;;
    --allow-dirty) allow_dirty=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; fail "unknown argument: $1" ;;
  esac
done

[[ "$environment" =~ ^[a-z][a-z0-9-]{0,19}$ ]] || { usage >&2; fail "--env NAME is required (lowercase, e.g. prod)"; }
for variable in ECR_REPOSITORY_URI ECS_CLUSTER WORKER_SERVICE BACKEND_SERVICE; do
  [[ -n "${!variable:-}" ]] || fail "$variable is not set (see --help)"
done
[[ "$ECR_REPOSITORY_URI" =~ ^([0-9]{12}\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com(\.cn)?)/([a-z0-9._/-]+)$ ]] ||
  fail "ECR_REPOSITORY_URI=$ECR_REPOSITORY_URI is not <account>.dkr.ecr.<region>.amazonaws.com/<repository>"
readonly registry="${BASH_REMATCH[1]}"
readonly repository_uri="$ECR_REPOSITORY_URI"
readonly region="${AWS_REGION:-${BASH_REMATCH[2]}}"
readonly backend_cluster="${BACKEND_CLUSTER:-$ECS_CLUSTER}"
readonly deploy_tag="${DEPLOY_TAG:-$environment}"
readonly platform="${DOCKER_PLATFORM:-linux/amd64}"
[[ "$deploy_tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || fail "DEPLOY_TAG=$deploy_tag is not a valid image tag"
# The AWS CLI must not open a pager in the middle of a script.
export AWS_PAGER=""

if [[ -n "$redeploy_sha" ]]; then
  [[ "$redeploy_sha" =~ ^[0-9a-f]{7,40}$ ]] || fail "--redeploy needs a git SHA, got: $redeploy_sha"
  sha="$redeploy_sha"
elif [[ -n "${GIT_SHA:-}" ]]; then
  [[ "$GIT_SHA" =~ ^[0-9a-f]{7,40}$ ]] || fail "GIT_SHA=$GIT_SHA is not a git SHA"
  sha="$GIT_SHA"
else
  sha="$(git -C "$ROOT" rev-parse --verify HEAD)" || fail "cannot read the git SHA of $ROOT"
  if [[ "$allow_dirty" == false && -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]]; then
    fail "the work tree has uncommitted changes: commit them, or pass --allow-dirty (the image would not match $sha)"
  fi
fi
readonly sha
readonly image="$repository_uri:$sha"
readonly deploy_image="$repository_uri:$deploy_tag"

step="setup"
trap 'status=$?; printf "deploy.sh: step \"%s\" failed (exit %s); nothing after it ran\n" "$step" "$status" >&2; exit "$status"' ERR

# Prints a command, then runs it (unless --dry-run).
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "$dry_run" == true ]]; then return 0; fi
  "$@"
}

# The registry password goes from the AWS CLI to docker through a pipe, never through arguments or a file.
login() {
  printf '+ aws ecr get-login-password --region %q | docker login --username AWS --password-stdin %q\n' "$region" "$registry"
  if [[ "$dry_run" == true ]]; then return 0; fi
  aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"
}

announce() {
  step="$1"
  printf '== %s\n' "$step"
}

announce "log in to $registry"
login

if [[ -z "$redeploy_sha" ]]; then
  announce "build $image"
  run docker build --platform "$platform" --pull --file "$ROOT/Dockerfile" --tag "$image" \
    --label "org.opencontainers.image.revision=$sha" "$ROOT"
  announce "push $image"
  run docker push "$image"
else
  announce "fetch $image"
  run docker pull --platform "$platform" "$image"
fi

announce "move $deploy_tag to $sha"
run docker tag "$image" "$deploy_image"
run docker push "$deploy_image"

announce "deploy $BACKEND_SERVICE and $WORKER_SERVICE"
run aws ecs update-service --region "$region" --cluster "$backend_cluster" --service "$BACKEND_SERVICE" \
  --force-new-deployment --query 'service.deployments[0].id' --output text
run aws ecs update-service --region "$region" --cluster "$ECS_CLUSTER" --service "$WORKER_SERVICE" \
  --force-new-deployment --query 'service.deployments[0].id' --output text

announce "wait until $BACKEND_SERVICE and $WORKER_SERVICE are stable"
run aws ecs wait services-stable --region "$region" --cluster "$backend_cluster" --services "$BACKEND_SERVICE"
run aws ecs wait services-stable --region "$region" --cluster "$ECS_CLUSTER" --services "$WORKER_SERVICE"

step="done"
if [[ "$dry_run" == true ]]; then
  printf 'deploy.sh: dry run, nothing was changed\n'
else
  printf 'deploy.sh: %s and %s run %s (%s)\n' "$BACKEND_SERVICE" "$WORKER_SERVICE" "$sha" "$deploy_image"
fi
