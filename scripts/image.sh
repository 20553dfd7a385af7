#!/usr/bin/env bash
# Builds the Gauntlet image (deploy/Dockerfile) with docker or podman and tags
# it; optionally loads it into a local Kubernetes cluster.
#
#   scripts/image.sh [TAG] [--load kind|k3d|minikube] [--cluster NAME] [-- BUILD_ARGS...]
#
#   scripts/image.sh                               # gauntlet:dev, what docker-compose.yml
#                                                  # and k8s/overlays/dev use
#   scripts/image.sh --load kind                   # ... and `kind load` it
#   scripts/image.sh --load k3d --cluster dev      # into the k3d cluster `dev`
#   scripts/image.sh registry.example.com/gauntlet:0.1.0 -- --platform linux/amd64
#
# CONTAINER_TOOL=docker|podman picks the tool (default: docker if it is on
# PATH, else podman). --load copies the built image into the cluster's nodes,
# so pods with `imagePullPolicy: IfNotPresent` start without a registry:
#   kind      kind load docker-image TAG [--name NAME]   (podman: image-archive)
#   k3d       k3d image import TAG|ARCHIVE [--cluster NAME]
#   minikube  minikube image load TAG|ARCHIVE [--profile NAME]
# With podman the image goes through a docker-archive file, its name written
# out in full (docker.io/library/gauntlet:dev) so the cluster's runtime finds
# it under the name the manifests use.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}

tag=gauntlet:dev
load=""
cluster=""
build_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --load)
      [ $# -ge 2 ] || usage
      load=$2
      shift 2
      ;;
    --load=*)
      load=${1#--load=}
      shift
      ;;
    --cluster)
      [ $# -ge 2 ] || usage
      cluster=$2
      shift 2
      ;;
    --cluster=*)
      cluster=${1#--cluster=}
      shift
      ;;
    -h | --help) usage ;;
    --)
      shift
      build_args=("$@")
      break
      ;;
    -*) usage ;;
    *)
      tag=$1
      shift
      ;;
  esac
done
case "$load" in
  "" | kind | k3d | minikube) ;;
  *)
    echo "image.sh: --load takes kind, k3d or minikube, not '$load'" >&2
    exit 2
    ;;
esac

tool=${CONTAINER_TOOL:-}
if [ -z "$tool" ]; then
  if command -v docker >/dev/null 2>&1; then
    tool=docker
  elif command -v podman >/dev/null 2>&1; then
    tool=podman
  else
    echo "image.sh: neither docker nor podman found (set CONTAINER_TOOL)" >&2
    exit 1
  fi
fi
command -v "$tool" >/dev/null 2>&1 || {
  echo "image.sh: $tool not found" >&2
  exit 1
}

echo "==> building $tag with $tool"
case "$tool" in
  podman)
    # podman reads no <Dockerfile>.dockerignore by itself.
    podman build -f deploy/Dockerfile --ignorefile deploy/Dockerfile.dockerignore \
      -t "$tag" ${build_args[@]+"${build_args[@]}"} .
    ;;
  *)
    # BuildKit: it reads deploy/Dockerfile.dockerignore.
    DOCKER_BUILDKIT=1 "$tool" build -f deploy/Dockerfile -t "$tag" ${build_args[@]+"${build_args[@]}"} .
    ;;
esac

[ -n "$load" ] || exit 0
command -v "$load" >/dev/null 2>&1 || {
  echo "image.sh: $load not found" >&2
  exit 1
}

# The name as a container runtime spells it: gauntlet:dev is
# docker.io/library/gauntlet:dev, team/gauntlet:dev docker.io/team/gauntlet:dev.
full_name() {
  local first=${1%%/*}
  if [ "$first" = "$1" ]; then
    echo "docker.io/library/$1"
  elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then
    echo "$1"
  else
    echo "docker.io/$1"
  fi
}

source_ref=$tag
if [ "$tool" = podman ]; then
  archive_dir=$(mktemp -d "${TMPDIR:-/tmp}/gauntlet-image.XXXXXX")
  trap 'rm -rf "$archive_dir"' EXIT
  archive=$archive_dir/image.tar
  qualified=$(full_name "$tag")
  podman tag "$tag" "$qualified"
  podman save --format docker-archive -o "$archive" "$qualified"
  source_ref=$archive
fi

echo "==> loading $tag into $load${cluster:+ ($cluster)}"
case "$load" in
  kind)
    if [ "$tool" = podman ]; then
      kind load image-archive "$source_ref" ${cluster:+--name "$cluster"}
    else
      kind load docker-image "$source_ref" ${cluster:+--name "$cluster"}
    fi
    ;;
  k3d)
    k3d image import "$source_ref" ${cluster:+--cluster "$cluster"}
    ;;
  minikube)
    minikube image load "$source_ref" ${cluster:+--profile "$cluster"}
    ;;
esac
