#!/usr/bin/env bash
# Deletes the kind cluster and (unless KEEP_REGISTRY=1) the local registry.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

log "deleting kind cluster $CLUSTER_NAME"
kind delete cluster --name "$CLUSTER_NAME"
if [[ "${KEEP_REGISTRY:-0}" != 1 ]]; then
  docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
fi
rm -rf "$WORK_DIR"
