#!/usr/bin/env bash
# Checks that the kind end-to-end run can start: prints exactly which tools
# are missing and how to install them, and exits non-zero if any is.
set -euo pipefail

missing=0
need() {
  local tool=$1 how=$2
  if command -v "$tool" >/dev/null 2>&1; then
    printf '  found    %-9s %s\n' "$tool" "$(command -v "$tool")"
  else
    printf '  MISSING  %-9s install: %s\n' "$tool" "$how"
    missing=1
  fi
}

echo "e2e-kind needs docker, kind, kubectl, istioctl and curl:"
need docker "https://docs.docker.com/engine/install/ (a running Docker engine, not only the client)"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation (e.g. go install sigs.k8s.io/kind@latest)"
need kubectl "https://kubernetes.io/docs/tasks/tools/#kubectl"
need istioctl "https://istio.io/latest/docs/setup/getting-started/#download (curl -L https://istio.io/downloadIstio | sh -, then put istio-*/bin on PATH)"
need curl "your OS package manager (apt-get install curl)"

if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
  echo "  BROKEN   docker    the client is installed but no Docker engine answers (docker info failed): start the daemon, or check DOCKER_HOST and permissions"
  missing=1
fi

echo "to push the plugin image unchanged (optional; without one, docker load + docker push is used, which recompresses the layer):"
for tool in crane skopeo oras; do
  if command -v "$tool" >/dev/null 2>&1; then
    printf '  found    %-9s %s\n' "$tool" "$(command -v "$tool")"
  else
    printf '  -        %s\n' "$tool"
  fi
done

if ((missing)); then
  echo "e2e-kind: missing tools (above); nothing was started." >&2
  exit 1
fi
