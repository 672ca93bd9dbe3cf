# Asynchronous hops (docs/async.md): the consumer client library, and the
# Redis Streams end-to-end flows (pull consumers and the push relay) with a
# real redis-server, a real Envoy running the release filter, and the
# RouteService. Included by the main Makefile, whose `build` and `venv`
# targets it uses. (The unit stage must leave this crate out:
# cargo test --workspace --exclude sandbox-router-async-e2e.)
#
#   make async-e2e    installs the brokers that are missing (tool-brokers),
#                     builds the release .wasm (make build), ensures Envoy in
#                     .venv (make venv), then cargo test -p
#                     sandbox-router-async-e2e: the Redis Streams runs (pull
#                     live, pull handed over, push) and the pull flow on
#                     Kafka, RabbitMQ and NATS JetStream, each 3000 messages with a sandbox created and
#                     deleted mid-run, each broker a real server the test
#                     starts and kills; a live run fails if any message is
#                     processed by nobody (the hand-over grace, docs/async.md). Each run's report is printed and kept
#                     in target/e2e-runs/async-*/report.txt.
#   make tool-brokers every broker below (idempotent)
#   make tool-redis   Debian's redis-server, if missing
#   make tool-rabbitmq Debian's rabbitmq-server (and Erlang), if missing
#   make tool-nats    Debian's nats-server, if missing
#   make tool-kafka   the Kafka broker's jars from Maven Central
#                     (async-e2e/brokers/kafka/pom.xml) into .tools/kafka/libs,
#                     once per KAFKA_VERSION; needs java (17+) and mvn

CARGO       ?= cargo
MVN         ?= mvn
ASYNC_WASM  ?= $(CURDIR)/target/wasm32-wasip1/release/sandbox_router.wasm
ASYNC_ENVOY ?= $(CURDIR)/.venv/bin/envoy

# Keep in step with kafka.version in async-e2e/brokers/kafka/pom.xml.
KAFKA_VERSION := 4.1.1
KAFKA_POM     := $(CURDIR)/async-e2e/brokers/kafka/pom.xml
KAFKA_DIR     := $(CURDIR)/.tools/kafka
KAFKA_LIBS    := $(KAFKA_DIR)/libs
# Named for the version and the pom's hash: a changed pin refetches.
KAFKA_STAMP   := $(KAFKA_DIR)/.kafka-$(KAFKA_VERSION)-$(shell sha256sum '$(KAFKA_POM)' 2>/dev/null | cut -c1-12).stamp

.PHONY: async-e2e tool-brokers tool-redis tool-kafka tool-rabbitmq tool-nats

async-e2e: export ENVOY_BIN := $(ASYNC_ENVOY)
async-e2e: export SANDBOX_ROUTER_WASM := $(ASYNC_WASM)
async-e2e: export KAFKA_LIBS := $(KAFKA_LIBS)
async-e2e: tool-brokers ## message brokers end to end (Redis Streams, Kafka, RabbitMQ, NATS JetStream): pull consumers with the client library, push relay through Envoy
	$(MAKE) --no-print-directory build
	$(MAKE) --no-print-directory venv
	@# The broker modules of the consumer crate (each behind a feature the
	@# unit stage does not turn on).
	$(CARGO) test -q -p sandbox-router-consumer --all-features
	$(CARGO) test -p sandbox-router-async-e2e -- --show-output

tool-brokers: tool-redis tool-kafka tool-rabbitmq tool-nats

tool-redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing Debian's redis-server"; \
	  $(call APT_INSTALL,--no-install-recommends redis-server); \
	}
	@redis-server --version

# The tests run the node from /usr/lib/rabbitmq/bin/rabbitmq-server with
# their own directories and ports; the package's own service is not used
# (and not started: no init system here, and the tests never touch it).
tool-rabbitmq:
	@[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && command -v epmd >/dev/null 2>&1 || { \
	  echo "rabbitmq-server not found: installing Debian's rabbitmq-server"; \
	  $(call APT_INSTALL,--no-install-recommends rabbitmq-server); \
	}
	@echo "rabbitmq-server $$(ls -d /usr/lib/rabbitmq/lib/rabbitmq_server-* | sed 's/.*-//')"

tool-nats:
	@command -v nats-server >/dev/null 2>&1 || { \
	  echo "nats-server not found: installing Debian's nats-server"; \
	  $(call APT_INSTALL,--no-install-recommends nats-server); \
	}
	@nats-server --version

tool-kafka: $(KAFKA_STAMP)
	@echo "Kafka $(KAFKA_VERSION): $$(ls '$(KAFKA_LIBS)' | wc -l) jars in .tools/kafka/libs"

$(KAFKA_STAMP): $(KAFKA_POM)
	@command -v java >/dev/null 2>&1 || { echo "tool-kafka: no java on PATH (Kafka needs Java 17+: apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
	@command -v '$(MVN)' >/dev/null 2>&1 || { echo "tool-kafka: no mvn on PATH (apt-get install maven)" >&2; exit 1; }
	@grep -q '<kafka.version>$(KAFKA_VERSION)</kafka.version>' '$(KAFKA_POM)' || { echo "tool-kafka: KAFKA_VERSION $(KAFKA_VERSION) is not the pom's kafka.version" >&2; exit 1; }
	rm -rf '$(KAFKA_LIBS)' '$(KAFKA_DIR)'/.kafka-*.stamp
	$(MVN) -q -B -f '$(KAFKA_POM)' dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory='$(KAFKA_LIBS)'
	@ls '$(KAFKA_LIBS)/kafka_2.13-$(KAFKA_VERSION).jar' >/dev/null
	touch '$@'
