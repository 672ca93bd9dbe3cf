#!/usr/bin/env bash
# Creates (or reuses) the kind cluster and a local registry, following kind's
# local-registry recipe: a registry:2 container on localhost:$REG_PORT, the
# nodes' containerd told that localhost:$REG_PORT is http://$REG_NAME:5000,
# the registry attached to the `kind` network, and the KEP-1755 ConfigMap.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

log "local registry $REG_NAME on localhost:$REG_PORT"
if [[ "$(docker inspect -f '{{.State.Running}}' "$REG_NAME" 2>/dev/null || true)" != "true" ]]; then
  docker rm -f "$REG_NAME" >/dev/null 2>&1 || true
  docker run -d --restart=always -p "127.0.0.1:$REG_PORT:5000" --network bridge \
    --name "$REG_NAME" registry:2 >/dev/null
fi
retry 30 1 curl -fsS -o /dev/null "http://localhost:$REG_PORT/v2/" ||
  fail "the registry does not answer on http://localhost:$REG_PORT/v2/"

log "kind cluster $CLUSTER_NAME"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"; then
  info "reusing the existing cluster"
else
  image_args=()
  if [[ -n "$KIND_NODE_IMAGE" ]]; then
    image_args=(--image "$KIND_NODE_IMAGE")
  fi
  kind create cluster --name "$CLUSTER_NAME" --config "$E2E_DIR/kind-config.yaml" \
    "${image_args[@]}" --wait 180s
fi

registry_dir="/etc/containerd/certs.d/localhost:$REG_PORT"
for node in $(kind get nodes --name "$CLUSTER_NAME"); do
  docker exec "$node" mkdir -p "$registry_dir"
  printf '[host."http://%s:5000"]\n' "$REG_NAME" |
    docker exec -i "$node" cp /dev/stdin "$registry_dir/hosts.toml"
done

if [[ "$(docker inspect -f '{{json .NetworkSettings.Networks.kind}}' "$REG_NAME")" == "null" ]]; then
  docker network connect kind "$REG_NAME"
fi

sed "s/localhost:5001/localhost:$REG_PORT/" "$E2E_DIR/local-registry-hosting.yaml" |
  kctx apply -f -
kctx wait --for=condition=Ready nodes --all --timeout=180s
