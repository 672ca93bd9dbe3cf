# Asynchronous hops (docs/async.md): the consumer client library, and the
# Redis Streams end-to-end flows (pull consumers and the push relay) with a
# real redis-server, a real Envoy running the release filter, and the
# RouteService. Included by the main Makefile, whose `build` and `venv`
# targets it uses. (The unit stage must leave this crate out:
# cargo test --workspace --exclude sandbox-router-async-e2e.)
#
#   make async-e2e    installs Debian's redis-server if it is missing, builds
#                     the release .wasm (make build), ensures Envoy in .venv
#                     (make venv), then cargo test -p sandbox-router-async-e2e
#                     (three runs of 3000 messages each; about 45 s once
#                     compiled). Each run's report is printed and kept in
#                     target/e2e-runs/async-*/report.txt.
#   make tool-redis   just the redis-server install (idempotent)

CARGO       ?= cargo
ASYNC_WASM  ?= $(CURDIR)/target/wasm32-wasip1/release/sandbox_router.wasm
ASYNC_ENVOY ?= $(CURDIR)/.venv/bin/envoy

.PHONY: async-e2e tool-redis

async-e2e: export ENVOY_BIN := $(ASYNC_ENVOY)
async-e2e: export SANDBOX_ROUTER_WASM := $(ASYNC_WASM)
async-e2e: tool-redis ## Redis Streams end to end: pull consumers with the client library, push relay through Envoy
	$(MAKE) --no-print-directory build
	$(MAKE) --no-print-directory venv
	$(CARGO) test -p sandbox-router-async-e2e -- --show-output

tool-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing Debian's redis-server"; \
	  sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -q; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server; \
	}
	@redis-server --version
