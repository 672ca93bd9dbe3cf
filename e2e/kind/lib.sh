#!/usr/bin/env bash
# Shared settings and helpers of the kind end-to-end scripts; sourced, not run.
# shellcheck shell=bash

# Every setting can be overridden from the environment.
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$E2E_DIR/../.." && pwd)
CLUSTER_NAME=${CLUSTER_NAME:-sandbox-router-e2e}
REG_NAME=${REG_NAME:-kind-registry}
# The registry as the host sees it (localhost:$REG_PORT) and as the nodes'
# containerd is told to reach it (http://$REG_NAME:5000, hosts.toml).
REG_PORT=${REG_PORT:-5001}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-}
ISTIO_PROFILE=${ISTIO_PROFILE:-minimal}
# What `make oci` wrote.
OCI_LAYOUT=${OCI_LAYOUT:-$REPO_ROOT/target/oci/sandbox-router}
OCI_ARCHIVE=${OCI_ARCHIVE:-$REPO_ROOT/target/oci/sandbox-router.tar}
# crane | skopeo | oras | docker | auto (the first of these that is installed).
PUSH_TOOL=${PUSH_TOOL:-auto}
PLUGIN_REPO=${PLUGIN_REPO:-sandbox-router}
PLUGIN_TAG=${PLUGIN_TAG:-e2e}
ROUTESERVICE_IMAGE=${ROUTESERVICE_IMAGE:-localhost:$REG_PORT/routeservice:e2e}
# Scratch files of a run (the token, rendered manifests); git-ignored.
WORK_DIR=${WORK_DIR:-$E2E_DIR/.work}
# How long a routing change may take to reach the sidecars: the filter's
# RouteService sync interval is 5 s, its cache TTL 30 s.
CONVERGE_SECONDS=${CONVERGE_SECONDS:-90}

log() { printf '\n==> %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
fail() {
  printf '\nFAIL: %s\n' "$*" >&2
  exit 1
}

# retry SECONDS DELAY COMMAND...: runs COMMAND until it succeeds or SECONDS pass.
retry() {
  local seconds=$1 delay=$2
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep "$delay"
  done
}

kctx() { kubectl --context "kind-$CLUSTER_NAME" "$@"; }

# The manifest digest the registry serves for repo:tag (sha256:<hex>).
registry_digest() {
  local repo=$1 tag=$2
  curl -fsS -o /dev/null -D - \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://localhost:$REG_PORT/v2/$repo/manifests/$tag" |
    tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }'
}
