#!/usr/bin/env bash
# Deploys the RouteService, the sample app, the tooling pod and the plugin.
# The plugin is the shipped wasmplugin/wasmplugin.yaml with two fields
# changed: url (the local registry, by the address pods reach it at) and
# sha256 (the pushed manifest digest, pinned).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$WORK_DIR"
digest=$(cat "$WORK_DIR/plugin-digest" 2>/dev/null || true)
[[ "$digest" == sha256:* ]] || fail "no pushed plugin digest in $WORK_DIR/plugin-digest: run push-images.sh"

log "RouteService token"
if [[ ! -s "$WORK_DIR/token" ]]; then
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK_DIR/token")
fi
kctx -n sandbox-system create secret generic routeservice-token \
  --from-file=token="$WORK_DIR/token" --dry-run=client -o yaml | kctx apply -f -

log "RouteService, sample app, tooling (e2e/kind/manifests)"
kctx kustomize "$E2E_DIR/manifests" |
  sed "s#localhost:5001/routeservice:e2e#$ROUTESERVICE_IMAGE#" >"$WORK_DIR/manifests.yaml"
kctx apply -f "$WORK_DIR/manifests.yaml"
kctx -n sandbox-system rollout status deployment/routeservice --timeout=300s
kctx -n sandbox-system rollout status deployment/tooling --timeout=300s
for deployment in catalog catalog-pr-42 reviews reviews-pr-42 client; do
  kctx -n demo rollout status "deployment/$deployment" --timeout=300s
done

# Pods reach the registry container at its address on the kind network (the
# nodes use localhost:$REG_PORT through containerd's mirror config, which
# istio-agent does not read).
registry_ip=$(docker inspect -f '{{with index .NetworkSettings.Networks "kind"}}{{.IPAddress}}{{end}}' "$REG_NAME")
[[ -n "$registry_ip" ]] || fail "$REG_NAME has no address on the kind network"
url="oci://$registry_ip:5000/$PLUGIN_REPO:$PLUGIN_TAG"

log "WasmPlugin from wasmplugin/wasmplugin.yaml: url $url, sha256 ${digest#sha256:}"
kctx patch --local -f "$REPO_ROOT/wasmplugin/wasmplugin.yaml" --type=merge -o yaml \
  -p "{\"spec\":{\"url\":\"$url\",\"sha256\":\"${digest#sha256:}\"}}" >"$WORK_DIR/wasmplugin.yaml"
kctx apply -f "$WORK_DIR/wasmplugin.yaml"
kctx -n demo get wasmplugin sandbox-router -o wide
