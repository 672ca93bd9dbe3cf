# Benchmarks (issue 5, docs/performance.md). Included by the main Makefile,
# whose `build` and `venv` targets it uses.
#
#   make bench        the release .wasm (make build), Envoy in .venv (make venv),
#                     Debian's wrk if missing, the wasm_floor fixture; then one
#                     Envoy (--concurrency 1) pinned to CPU $(BENCH_ENVOY_CPU),
#                     wrk pinned to CPU $(BENCH_LOAD_CPU), every scenario
#                     interleaved over BENCH_ROUNDS rounds of BENCH_SECONDS s.
#                     Writes target/bench/{results.json,report.md,report.png}
#                     (about 4 minutes with the defaults, once compiled).
#   make bench-smoke  the same rig, every scenario checked for who answers,
#                     wrk for 1 s on router_hit; writes nothing (for make test).
#   make bench-sync   the table sync as the table grows (10,000 and 100,000
#                     sandboxes): full sync, bytes per single-sandbox change,
#                     write to every worker, table memory per Envoy. Writes
#                     target/bench/sync.{json,md}; part of make bench.
#   make bench-core   criterion micro-benchmarks of the core (native).
#   make bench-callgrind
#                     the same rig with Envoy under valgrind's callgrind:
#                     instructions per request per scenario on the worker
#                     (independent of the machine's load), as ratios to
#                     wasm_floor. Writes target/bench/callgrind.{json,md}.
#
# BENCH_SCENARIOS=a,b (comma-separated) measures only those scenarios (and
# wasm_floor, which every ratio needs), for bench and bench-callgrind.

CARGO           ?= cargo
BENCH_ROUNDS    ?= 5
BENCH_SECONDS   ?= 3
BENCH_ENVOY_CPU ?= 0
BENCH_LOAD_CPU  ?= 1
BENCH_WASM      ?= $(CURDIR)/target/wasm32-wasip1/release/sandbox_router.wasm
BENCH_FLOOR     ?= $(CURDIR)/target/wasm32-wasip1/release/wasm_floor.wasm
BENCH_ENVOY     ?= $(CURDIR)/.venv/bin/envoy
BENCH_DRIVER    := $(CURDIR)/target/release/sandbox-router-bench
# The driver (and the RouteService, upstreams and wrk it starts) stays off
# Envoy's CPU; on a one-CPU machine nothing is pinned.
BENCH_PIN       := $(shell [ "$$(nproc --all 2>/dev/null || echo 1)" -ge 2 ] && command -v taskset >/dev/null && echo 'taskset -c $(BENCH_LOAD_CPU)')

BENCH_SCENARIOS ?=
BENCH_CALLGRIND_REQUESTS ?= 2000
# 1: bench-callgrind also simulates the caches (misses per request).
BENCH_CALLGRIND_CACHE_SIM ?=

BENCH_SYNC_SIZES ?= 10000,100000
BENCH_SYNC_INTERVAL_MS ?= 1000
BENCH_SYNC_CHANGES ?= 10

export BENCH_ROUNDS BENCH_SECONDS BENCH_ENVOY_CPU BENCH_LOAD_CPU BENCH_SCENARIOS BENCH_CALLGRIND_REQUESTS BENCH_CALLGRIND_CACHE_SIM BENCH_SYNC_SIZES BENCH_SYNC_INTERVAL_MS BENCH_SYNC_CHANGES

.PHONY: bench bench-sync bench-sync-run bench-smoke bench-core bench-callgrind bench-prepare tool-wrk tool-valgrind

bench: bench-prepare ## benchmark report: target/bench/{results.json,report.md,report.png}
	@# The core's parse + decide goal (< 1 us, native), read into the report.
	$(CARGO) bench -p sandbox-router-core --bench core -- parse_decide/2KB --warm-up-time 1 --measurement-time 3 --noplot
	ROUTESERVICE_BIN='$(CURDIR)/target/release/routeservice' ENVOY_BIN='$(BENCH_ENVOY)' SANDBOX_ROUTER_WASM='$(BENCH_WASM)' BENCH_FLOOR_WASM='$(BENCH_FLOOR)' \
	  $(BENCH_PIN) '$(BENCH_DRIVER)'
	@cat target/bench/report.md
	@$(MAKE) --no-print-directory bench-sync-run

bench-sync: bench-prepare ## table sync numbers (10k and 100k sandboxes): target/bench/sync.{json,md}
	@$(MAKE) --no-print-directory bench-sync-run

bench-sync-run:
	ROUTESERVICE_BIN='$(CURDIR)/target/release/routeservice' ENVOY_BIN='$(BENCH_ENVOY)' SANDBOX_ROUTER_WASM='$(BENCH_WASM)' BENCH_FLOOR_WASM='$(BENCH_FLOOR)' \
	  '$(BENCH_DRIVER)' --sync

bench-smoke: bench-prepare ## ~1 s bench smoke: every scenario answers as expected, wrk runs
	ROUTESERVICE_BIN='$(CURDIR)/target/release/routeservice' ENVOY_BIN='$(BENCH_ENVOY)' SANDBOX_ROUTER_WASM='$(BENCH_WASM)' BENCH_FLOOR_WASM='$(BENCH_FLOOR)' \
	  $(BENCH_PIN) '$(BENCH_DRIVER)' --smoke

bench-callgrind: bench-prepare tool-valgrind ## instructions per request per scenario (callgrind): target/bench/callgrind.{json,md}
	ROUTESERVICE_BIN='$(CURDIR)/target/release/routeservice' ENVOY_BIN='$(BENCH_ENVOY)' SANDBOX_ROUTER_WASM='$(BENCH_WASM)' BENCH_FLOOR_WASM='$(BENCH_FLOOR)' \
	  '$(BENCH_DRIVER)' --callgrind

bench-core: ## criterion micro-benchmarks of the core (parse + decide, key cache)
	$(CARGO) bench -p sandbox-router-core --bench core

bench-prepare: tool-wrk
	$(MAKE) --no-print-directory build
	$(MAKE) --no-print-directory venv
	$(CARGO) build --release --target wasm32-wasip1 -p wasm-floor
	$(CARGO) build --release -p routeservice --bin routeservice
	$(CARGO) build --release -p sandbox-router-bench

tool-valgrind:
	@command -v valgrind >/dev/null 2>&1 || { \
	  echo "valgrind not found: installing Debian's valgrind"; \
	  $(call APT_INSTALL,--no-install-recommends valgrind); \
	}

tool-wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "wrk not found: installing Debian's wrk"; \
	  $(call APT_INSTALL,--no-install-recommends wrk); \
	}
