#!/usr/bin/env bash
# Pushes the plugin image that `make oci` wrote, and builds and pushes the
# RouteService image, to the local registry. Writes the plugin's manifest
# digest (as the registry serves it) to $WORK_DIR/plugin-digest.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -f "$OCI_LAYOUT/index.json" && -f "$OCI_ARCHIVE" ]] ||
  fail "no plugin image in $OCI_LAYOUT: run make oci first"
mkdir -p "$WORK_DIR"

# The tag `make oci` gave the image in the layout (index.json ref.name).
layout_tag=$(grep -o '"org.opencontainers.image.ref.name":"[^"]*"' "$OCI_LAYOUT/index.json" |
  head -n1 | cut -d'"' -f4)
[[ -n "$layout_tag" ]] || fail "$OCI_LAYOUT/index.json names no tag"
local_digest=$(cat "$REPO_ROOT/target/oci/sandbox-router.digest" 2>/dev/null || true)
dest="localhost:$REG_PORT/$PLUGIN_REPO:$PLUGIN_TAG"

tool=$PUSH_TOOL
if [[ "$tool" == auto ]]; then
  tool=docker
  for candidate in crane skopeo oras; do
    if command -v "$candidate" >/dev/null 2>&1; then
      tool=$candidate
      break
    fi
  done
fi

log "plugin image -> $dest (with $tool)"
case "$tool" in
  crane)
    crane push --insecure "$OCI_LAYOUT" "$dest"
    ;;
  skopeo)
    skopeo copy --dest-tls-verify=false "oci:$OCI_LAYOUT:$layout_tag" "docker://$dest"
    ;;
  oras)
    oras cp --from-oci-layout "$OCI_LAYOUT:$layout_tag" --to-plain-http "$dest"
    ;;
  docker)
    # docker load reads the archive's manifest.json; docker push recompresses
    # the layer, so the pushed digest differs from make oci's (it is read
    # back from the registry below and pinned as such).
    loaded=$(docker load -i "$OCI_ARCHIVE" | sed -n 's/^Loaded image: //p' | tail -n1)
    [[ -n "$loaded" ]] || fail "docker load did not report the loaded image"
    docker tag "$loaded" "$dest"
    docker push "$dest"
    ;;
  *)
    fail "PUSH_TOOL=$tool: expected crane, skopeo, oras, docker or auto"
    ;;
esac

digest=$(registry_digest "$PLUGIN_REPO" "$PLUGIN_TAG")
[[ "$digest" == sha256:* ]] || fail "the registry has no manifest for $dest"
if [[ -n "$local_digest" && "$digest" != "$local_digest" ]]; then
  info "note: the registry's digest $digest differs from make oci's $local_digest ($tool rewrote the image)"
else
  info "pushed unchanged: $digest"
fi
printf '%s\n' "$digest" >"$WORK_DIR/plugin-digest"

log "RouteService image -> $ROUTESERVICE_IMAGE"
docker build -f "$REPO_ROOT/istio-config/routeservice.Dockerfile" -t "$ROUTESERVICE_IMAGE" "$REPO_ROOT"
docker push "$ROUTESERVICE_IMAGE"
