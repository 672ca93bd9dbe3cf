# Istio packaging: the plugin's OCI image, static checks of the manifests,
# and the kind + Istio end-to-end run. Included by the main Makefile; also
# usable on its own: make -f mk/istio.mk <target>.
#
#   make oci          target/oci/sandbox-router/ (OCI image layout),
#                     target/oci/sandbox-router.tar (oci-archive / docker load),
#                     target/oci/sandbox-router.digest (the manifest digest to pin)
#   make crd          istio-config/base/sandbox-crd.yaml, generated from the
#                     Rust types of sandbox-crd/ (a test fails when it is stale)
#   make istio-check  every manifest in wasmplugin/, istio-config/, e2e/kind/:
#                     Istio kinds against Istio's CRD schemas (tools/manifests),
#                     core kinds with kubernetes-validate --strict, every
#                     kustomization built (kubectl kustomize, when kubectl is
#                     installed) and its output validated the same way, the
#                     cross-reference tests, shellcheck on the scripts
#   make e2e-kind     kind cluster + Istio + the plugin, end to end (needs
#                     docker, kind, kubectl, istioctl; says which are missing)
#   make istio-tools  istiod, pilot-agent, kube-apiserver, kubectl and etcd,
#                     built from the Go modules pinned in e2e/istio/tools/
#                     into .tools/istio/bin, and the CRDs of the pinned
#                     modules into .tools/istio/crds (rebuilt only when
#                     go.mod/go.sum change)
#   make istio-up     the local Istio mesh (no Docker) in the foreground
#   make e2e-istio    the end-to-end tests through that mesh, then the
#                     Kubernetes store's (e2e/tests/kube_store.rs) on its
#                     control plane

# This file, as make was told it (for the sub-make of e2e-kind).
ISTIO_MK := $(lastword $(MAKEFILE_LIST))

# The tool-* targets' Debian installs (also when this file is used on its own).
include $(dir $(ISTIO_MK))apt.mk

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

CARGO  ?= cargo
PYTHON ?= python3
VENV   ?= $(CURDIR)/.venv

# ------------------------------------------------------------------- oci

# The image is named for the root package's version.
SANDBOX_ROUTER_VERSION := $(shell awk -F'"' '/^\[package\]/ { p = 1 } p && /^version *=/ { print $$2; exit }' Cargo.toml 2>/dev/null)
OCI_WASM       ?= $(CURDIR)/target/wasm32-wasip1/release/sandbox_router.wasm
OCI_DIR        ?= $(CURDIR)/target/oci
OCI_REPOSITORY ?= ghcr.io/sandbox-router/sandbox-router
OCI_TAG        ?= $(SANDBOX_ROUTER_VERSION)
# Every timestamp in the image: SOURCE_DATE_EPOCH from the environment, else 0.
OCI_SOURCE_DATE_EPOCH ?= $(or $(SOURCE_DATE_EPOCH),0)

# ------------------------------------------------------------------- crd

SANDBOX_CRD_YAML := istio-config/base/sandbox-crd.yaml

crd: ## regenerate istio-config/base/sandbox-crd.yaml from the Rust types (sandbox-crd/)
	$(CARGO) run -q -p routeservice -- crd > '$(SANDBOX_CRD_YAML).tmp'
	mv '$(SANDBOX_CRD_YAML).tmp' '$(SANDBOX_CRD_YAML)'

# ---------------------------------------------------------- istio-check

KUBERNETES_VALIDATE_VERSION := 1.37.0
KUBERNETES_VALIDATE         := $(VENV)/bin/kubernetes-validate
KUBERNETES_VALIDATE_STAMP   := $(VENV)/.kubernetes-validate-$(KUBERNETES_VALIDATE_VERSION).stamp
# The oldest and newest Kubernetes the manifests are checked against.
ISTIO_CHECK_K8S_VERSIONS    ?= 1.30 1.37
ISTIO_MANIFEST_DIRS         := wasmplugin istio-config e2e/kind
ISTIO_CHECK_DIR             := $(CURDIR)/target/istio-check
MANIFESTS_TOOL               = $(CARGO) run -q -p sandbox-router-manifests --

.PHONY: crd oci istio-check e2e-kind tool-kubernetes-validate tool-shellcheck \
        istio-tools istio-up e2e-istio tool-registry

oci: ## the plugin's OCI image (Istio compat layout, plugin.wasm): target/oci/
	$(MAKE) --no-print-directory build
	@mkdir -p '$(OCI_DIR)'
	$(CARGO) run -q --release -p sandbox-router-oci -- \
	  --wasm '$(OCI_WASM)' \
	  --layout '$(OCI_DIR)/sandbox-router' \
	  --archive '$(OCI_DIR)/sandbox-router.tar' \
	  --digest-file '$(OCI_DIR)/sandbox-router.digest' \
	  --repository '$(OCI_REPOSITORY)' \
	  --tag '$(OCI_TAG)' \
	  --source-date-epoch '$(OCI_SOURCE_DATE_EPOCH)'

istio-check: tool-kubernetes-validate tool-shellcheck ## static checks of wasmplugin/, istio-config/, e2e/kind/ (schemas, kustomize, shellcheck, cross-references)
	@echo '==> cross-reference and OCI tests (tools/manifests, tools/oci)'
	$(CARGO) test -q -p sandbox-router-manifests -p sandbox-router-oci
	@rm -rf '$(ISTIO_CHECK_DIR)' && mkdir -p '$(ISTIO_CHECK_DIR)/built'
	@echo '==> Istio CRD schemas; kinds; kustomization references'
	$(MANIFESTS_TOOL) check --core-files '$(ISTIO_CHECK_DIR)/core-files.txt' $(ISTIO_MANIFEST_DIRS)
	@echo '==> core Kubernetes kinds: kubernetes-validate --strict ($(ISTIO_CHECK_K8S_VERSIONS))'
	@for v in $(ISTIO_CHECK_K8S_VERSIONS); do \
	  xargs -a '$(ISTIO_CHECK_DIR)/core-files.txt' '$(KUBERNETES_VALIDATE)' --strict --quiet -k "$$v" \
	    || { echo "istio-check: kubernetes-validate failed against Kubernetes $$v" >&2; exit 1; }; \
	  echo "kubernetes-validate: $$(wc -l < '$(ISTIO_CHECK_DIR)/core-files.txt') files valid against Kubernetes $$v"; \
	done
	@echo '==> kustomizations: built and validated'
	@if command -v kubectl >/dev/null 2>&1; then \
	  for k in $$(find $(ISTIO_MANIFEST_DIRS) -name kustomization.yaml | sort); do \
	    dir=$$(dirname "$$k"); out='$(ISTIO_CHECK_DIR)/built/'$$(echo "$$dir" | tr / _).yaml; \
	    if grep -q '^kind: Component' "$$k"; then echo "kubectl kustomize $$dir: a Component (built through the overlays that use it)"; continue; fi; \
	    kubectl kustomize "$$dir" > "$$out" || { echo "istio-check: kubectl kustomize $$dir failed" >&2; exit 1; }; \
	    echo "kubectl kustomize $$dir: $$(grep -c '^kind:' "$$out") resources"; \
	  done; \
	  $(MANIFESTS_TOOL) check --core-files '$(ISTIO_CHECK_DIR)/built-core-files.txt' '$(ISTIO_CHECK_DIR)/built' | tail -n 1; \
	  for v in $(ISTIO_CHECK_K8S_VERSIONS); do \
	    xargs -a '$(ISTIO_CHECK_DIR)/built-core-files.txt' '$(KUBERNETES_VALIDATE)' --strict --quiet --no-warn -k "$$v" \
	      || { echo "istio-check: kubernetes-validate failed on the built kustomizations ($$v)" >&2; exit 1; }; \
	  done; \
	  echo "kubernetes-validate: the built kustomizations are valid against Kubernetes $(ISTIO_CHECK_K8S_VERSIONS)"; \
	else \
	  echo "kubectl not installed: kustomizations checked for their references only (kubectl kustomize skipped)"; \
	fi
	@echo '==> shellcheck'
	shellcheck --version | sed -n 2p
	shellcheck e2e/kind/*.sh
	@echo "istio-check: all passed"

e2e-kind: ## kind + Istio end-to-end run (needs docker, kind, kubectl, istioctl: checked first)
	e2e/kind/check-tools.sh
	$(MAKE) --no-print-directory -f '$(ISTIO_MK)' oci
	e2e/kind/run.sh

# ---------------------------------------------------- local Istio mesh

# Debian-style machines put Go in /usr/local/go/bin, not always on PATH.
GO                 ?= $(or $(shell command -v go 2>/dev/null),$(wildcard /usr/local/go/bin/go),go)
ISTIO_TOOLS_MOD    := $(CURDIR)/e2e/istio/tools
ISTIO_TOOLS        := $(CURDIR)/.tools/istio
ISTIO_TOOLS_BIN    := $(ISTIO_TOOLS)/bin
# The pins are go.mod + go.sum: the stamp is named for their hash, so a
# changed pin rebuilds and an unchanged one never does.
ISTIO_TOOLS_HASH   := $(shell cat '$(ISTIO_TOOLS_MOD)/go.mod' '$(ISTIO_TOOLS_MOD)/go.sum' 2>/dev/null | sha256sum | cut -c1-16)
ISTIO_TOOLS_STAMP  := $(ISTIO_TOOLS)/.built-$(ISTIO_TOOLS_HASH)
# Go's own module and build caches (GOMODCACHE, GOCACHE) are the user's, as
# cargo's registry is: a second clone on the same machine builds warm.
ISTIO_GO_ENV       := GOFLAGS='-mod=readonly -buildvcs=false' GOTOOLCHAIN=local
ISTIO_LOCAL_ENV    := ISTIO_TOOLS_BIN='$(ISTIO_TOOLS_BIN)' ENVOY_BIN='$(VENV)/bin/envoy'

istio-tools: $(ISTIO_TOOLS_STAMP) tool-registry ## istiod, pilot-agent, kube-apiserver, kube-controller-manager, kubectl, etcd from the pinned Go modules (.tools/istio)

$(ISTIO_TOOLS_STAMP): $(ISTIO_TOOLS_MOD)/go.mod $(ISTIO_TOOLS_MOD)/go.sum
	@command -v '$(GO)' >/dev/null 2>&1 || { echo "istio-tools: no Go toolchain ('$(GO)') on PATH" >&2; exit 1; }
	@echo "==> building istiod, pilot-agent, kube-apiserver, kube-controller-manager, kubectl, etcd ($$($(GO) version)); a cold build takes a while"
	rm -rf '$(ISTIO_TOOLS_BIN)' '$(ISTIO_TOOLS)/crds' '$(ISTIO_TOOLS)'/.built-*
	mkdir -p '$(ISTIO_TOOLS_BIN)' '$(ISTIO_TOOLS)/crds'
	cd '$(ISTIO_TOOLS_MOD)' && $(ISTIO_GO_ENV) $(GO) build -trimpath -ldflags='-s -w' -o '$(ISTIO_TOOLS_BIN)/' tool
	@# go.etcd.io/etcd/server/v3 is etcd's main package; Go names it `server`.
	mv '$(ISTIO_TOOLS_BIN)/server' '$(ISTIO_TOOLS_BIN)/etcd'
	@# Istio's CRDs, and the Envoy bootstrap template its proxy image ships.
	cd '$(ISTIO_TOOLS_MOD)' && istio=$$($(ISTIO_GO_ENV) $(GO) list -m -f '{{.Dir}}' istio.io/istio) && \
	  cp "$$istio/manifests/charts/base/files/crd-all.gen.yaml" '$(ISTIO_TOOLS)/crds/istio-crds.yaml' && \
	  cp "$$istio/tools/packaging/common/envoy_bootstrap.json" '$(ISTIO_TOOLS)/crds/envoy_bootstrap_tmpl.json'
	cd '$(ISTIO_TOOLS_MOD)' && gwapi=$$($(ISTIO_GO_ENV) $(GO) list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api) && \
	  for f in "$$gwapi"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do echo '---'; cat "$$f"; done \
	  > '$(ISTIO_TOOLS)/crds/gateway-api-crds.yaml'
	chmod -R u+w '$(ISTIO_TOOLS)/crds'
	@for b in pilot-discovery pilot-agent kube-apiserver kube-controller-manager kubectl etcd; do \
	  printf '  %-16s %s\n' "$$b" "$$(du -h '$(ISTIO_TOOLS_BIN)'/$$b | cut -f1)"; done
	touch '$@'

# Debian's CNCF Distribution registry and skopeo, to deliver the plugin image.
tool-registry:
	@command -v docker-registry >/dev/null 2>&1 && command -v skopeo >/dev/null 2>&1 || { \
	  echo "docker-registry or skopeo not found: installing Debian's"; \
	  $(call APT_INSTALL,docker-registry skopeo); \
	}

istio-up: istio-tools venv ## the local Istio mesh (no Docker) in the foreground; writes target/istio-local/env, prints `ready`
	$(MAKE) --no-print-directory oci
	$(CARGO) build -q -p routeservice
	$(ISTIO_LOCAL_ENV) exec $(CARGO) run -q -p sandbox-router-e2e --bin istio_up

e2e-istio: istio-tools venv ## end-to-end tests through the local Istio mesh (real istiod, pilot-agent, Envoy, registry)
	$(MAKE) --no-print-directory oci
	$(CARGO) build -q -p routeservice
	$(ISTIO_LOCAL_ENV) $(CARGO) test -p sandbox-router-e2e --features local-istio --test istio -- --test-threads=1 --nocapture
	@# The Kubernetes store on the same control plane (not at the same time: fixed ports).
	$(ISTIO_LOCAL_ENV) $(CARGO) test -p sandbox-router-e2e --features local-istio --test kube_store -- --nocapture
	@# Sandboxes as objects through the mesh: two replicas on the Kubernetes store, HTTPRoutes, the garbage collector.
	$(ISTIO_LOCAL_ENV) $(CARGO) test -p sandbox-router-e2e --features local-istio --test kube_routes -- --nocapture

# ----------------------------------------------------------- tool setup

tool-kubernetes-validate: $(KUBERNETES_VALIDATE_STAMP)

$(KUBERNETES_VALIDATE_STAMP):
	@[ -x '$(VENV)/bin/pip' ] || $(PYTHON) -m venv '$(VENV)'
	'$(VENV)/bin/pip' install --disable-pip-version-check --no-input -q 'kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)'
	'$(KUBERNETES_VALIDATE)' --version
	touch '$@'

tool-shellcheck:
	@command -v shellcheck >/dev/null 2>&1 || { \
	  echo "shellcheck not found: installing Debian's shellcheck"; \
	  $(call APT_INSTALL,shellcheck); \
	}
