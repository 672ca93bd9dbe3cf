#!/usr/bin/env bash
# The kind + Istio end-to-end run (`make e2e-kind`), start to finish:
#   check-tools.sh   docker, kind, kubectl, istioctl, curl (says what is missing)
#   cluster-up.sh    kind cluster + local registry (kind's recipe)
#   install-istio.sh istioctl install --set profile=minimal; namespaces labelled for injection
#   push-images.sh   the plugin image from `make oci` (crane/skopeo/oras, else docker);
#                    the RouteService image (docker build + push)
#   deploy.sh        RouteService, sample app, tooling; the WasmPlugin pinned by digest
#   assertions.sh    the checks (see that file)
# The cluster and registry are deleted at the end unless KEEP_CLUSTER=1.
# On a failure, diagnostics are printed first.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$E2E_DIR/check-tools.sh"

diagnostics() {
  log "diagnostics"
  kctx get pods -A -o wide || true
  kctx get wasmplugin,virtualservice,sidecar,authorizationpolicy -A || true
  kctx -n demo get wasmplugin sandbox-router -o yaml || true
  kctx -n demo logs deploy/client -c istio-proxy --tail=80 || true
  kctx -n demo exec deploy/client -c istio-proxy -- pilot-agent request GET stats 2>/dev/null |
    grep -E '^wasm' || true
  kctx -n sandbox-system logs deploy/routeservice -c routeservice --tail=80 || true
  kctx -n sandbox-system logs deploy/routeservice -c istio-proxy --tail=40 || true
}

finish() {
  local status=$?
  if ((status != 0)); then
    diagnostics >&2
  fi
  if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
    log "keeping cluster kind-$CLUSTER_NAME (KEEP_CLUSTER=1); delete it with e2e/kind/cluster-down.sh"
  else
    "$E2E_DIR/cluster-down.sh" || true
  fi
  exit "$status"
}
trap finish EXIT

"$E2E_DIR/cluster-up.sh"
"$E2E_DIR/install-istio.sh"
"$E2E_DIR/push-images.sh"
"$E2E_DIR/deploy.sh"
"$E2E_DIR/assertions.sh"
