#!/usr/bin/env bash
# Installs Istio (profile minimal: istiod, no gateways) with what the run needs:
#  - WASM_INSECURE_REGISTRIES=*: istio-agent may pull the plugin from the
#    local registry over plain HTTP;
#  - proxyStatsMatcher inclusion of `wasmcustom`: the filter's counters
#    (wasmcustom.sandbox_router.*) are kept by every sidecar, as docs/istio.md
#    shows (recent Istio keeps them already, via its `wasm` prefix);
#  - access logs on stdout, for post-mortems.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

log "istioctl $(istioctl version --remote=false 2>/dev/null || echo '?'): install --set profile=$ISTIO_PROFILE"
istioctl install -y --context "kind-$CLUSTER_NAME" \
  --set "profile=$ISTIO_PROFILE" \
  --set "meshConfig.defaultConfig.proxyMetadata.WASM_INSECURE_REGISTRIES=*" \
  --set "meshConfig.defaultConfig.proxyStatsMatcher.inclusionPrefixes[0]=wasmcustom" \
  --set "meshConfig.accessLogFile=/dev/stdout"
kctx -n istio-system rollout status deployment/istiod --timeout=300s

# The namespaces, labelled for sidecar injection before any pod is created
# (the same files the kustomizations apply).
kctx apply -f "$REPO_ROOT/istio-config/base/namespace.yaml" \
  -f "$REPO_ROOT/istio-config/sample/namespace.yaml"
kctx get namespace sandbox-system demo -L istio-injection
