# The project's commands. `make test` needs no Docker; `make up` does (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
COMPOSE ?= docker compose

PATCHED := .tools/patched/async-nats-0.51.0/.patched

.PHONY: patched-crates up up-cluster demo-cluster down-cluster clean-cluster down clean logs ps keys demo urls test test-e2e check-config \
        test-deps fmt-check lint build doc-test unit-and-integration fuzz

## up: generate keys if missing, build (once, chat-cli too), start, wait until healthy (or fail with the logs), print URLs
up: .env
	@COMPOSE="$(COMPOSE)" bash scripts/up.sh
	@$(MAKE) --no-print-directory urls

## up-cluster: the cluster profile (README "Cluster profile"): 3 NATS nodes with R3 streams, replicated services, two collector tiers
CLUSTER_COMPOSE = $(COMPOSE) -f docker-compose.yml -f docker-compose.cluster.yml
up-cluster: .env
	@COMPOSE="$(CLUSTER_COMPOSE)" bash scripts/up.sh
	@$(MAKE) --no-print-directory urls

## demo-cluster: `make demo` against the cluster profile (the plain `make demo` would reconfigure its workers)
demo-cluster:
	@$(MAKE) --no-print-directory demo COMPOSE="$(CLUSTER_COMPOSE)"

## down-cluster: stop the cluster profile (data volumes stay); clean-cluster also deletes them
down-cluster:
	$(CLUSTER_COMPOSE) down

clean-cluster:
	$(CLUSTER_COMPOSE) down -v

## down: stop the stack (data volumes stay)
down:
	$(COMPOSE) down

## clean: stop the stack and delete its volumes (messages, traces, logs, metrics)
clean:
	$(COMPOSE) down -v

logs:
	$(COMPOSE) logs -f --tail=100

ps:
	$(COMPOSE) ps

.env:
	@$(MAKE) --no-print-directory keys

## keys: write a git-ignored .env with fresh keys and passwords (never overwrites one, never a partial one; Docker if no recent Rust)
keys:
	@CARGO="$(CARGO)" bash scripts/keys.sh

## demo: traffic through the stack (alice): plain messages, a retry, a slow one, a poison one, history.
## Demo faults are honoured only meanwhile: the worker restarts with DEMO_FAULTS=true and back
## without, also when the demo fails or is interrupted. chat-cli runs with --no-deps: without it
## compose would see persist-worker's changed configuration and recreate it, faults off, first.
DEMO_RUN = $(COMPOSE) --profile demo run --rm --no-deps chat-cli
demo: .env
	DEMO_FAULTS=true $(COMPOSE) up -d --wait persist-worker
	@trap 'echo "demo faults off again:"; $(COMPOSE) up -d --wait persist-worker' EXIT; set -ex; \
	$(DEMO_RUN) load --rate 5 --duration 60s --rooms general,random --fail-once 0.05 --slow 0.02 --poison 0.02; \
	$(DEMO_RUN) send general "this one fails once" --fault fail-once; \
	$(DEMO_RUN) send general "this one is slow" --fault slow; \
	$(DEMO_RUN) send general "this one is poison" --fault poison; \
	$(DEMO_RUN) history general --limit 10

# Host ports, overridable in .env (see README "Ports").
urls:
	@if [ -f .env ]; then set -a; . ./.env; set +a; fi; \
	echo "Grafana     http://localhost:$${GRAFANA_PORT:-3001}  (dashboards: Chat backend / Service overview, Messaging)"; \
	echo "Prometheus  http://localhost:$${PROMETHEUS_PORT:-9090}"; \
	echo "Tempo       http://localhost:$${TEMPO_PORT:-3200}"; \
	echo "Loki        http://localhost:$${LOKI_PORT:-3100}"; \
	echo "Keycloak    http://localhost:$${KEYCLOAK_PORT:-8080}  (realm chat; users alice, bob, carol; password CHAT_DEMO_PASSWORD in .env)"; \
	echo "NATS        nats://localhost:$${NATS_PORT:-4222}  (monitoring http://localhost:$${NATS_MONITOR_PORT:-8222})"; \
	echo "Collector   localhost:$${OTLP_GRPC_PORT:-4317} (OTLP gRPC), localhost:$${OTLP_HTTP_PORT:-4318} (OTLP HTTP)"

## test: format check, clippy, config checks, unit and integration tests (real servers, no Docker), a short fuzz run
test: test-deps fmt-check lint build doc-test unit-and-integration fuzz

## fuzz: each fuzz target for FUZZ_SECONDS (default 15) from its named seeds (tests/fuzz/seeds/) and the local, git-ignored corpus it grows (tests/fuzz/corpus/)
FUZZ_SECONDS ?= 15
FUZZ_TARGETS := chat_message trace_context callout_request header_block
# cargo-fuzz passes nightly-only -Z flags (sanitizer coverage); RUSTC_BOOTSTRAP=1 lets the
# pinned stable toolchain accept them, so CI needs no second (nightly) toolchain.
fuzz: $(PATCHED)
	@for target in $(FUZZ_TARGETS); do \
		mkdir -p tests/fuzz/corpus/$$target && \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir tests/fuzz --sanitizer none --dev $$target \
			tests/fuzz/corpus/$$target tests/fuzz/seeds/$$target -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 2>&1 \
			| grep -E '^(Done|INFO: seed corpus|==[0-9]+==|SUMMARY)|panicked' ; \
		test "$${PIPESTATUS[0]}" -eq 0 || { echo "fuzz target $$target failed (input in tests/fuzz/artifacts/$$target)"; exit 1; }; \
	done

# cargo nextest when installed, else cargo test (same tests): $(call run-tests,<selection>,<nextest args>,<libtest args>)
run-tests = if $(CARGO) nextest --version >/dev/null 2>&1; then $(CARGO) nextest run $(1) $(2); else $(CARGO) test $(1) -- $(3); fi

## check-config: only the static checks of the compose stack and its configs
check-config: test-deps
	$(CARGO) build -q -p auth-service
	@$(call run-tests,-p stack-checks --test config --test cluster_config --test schemas,,)

## test-e2e: the seed scenarios against the compose stack, read back from Tempo, Loki, Prometheus, Grafana (needs Docker)
test-e2e:
	@if ! docker info >/dev/null 2>&1; then \
		echo "make test-e2e needs a running Docker engine ('docker info' failed)."; \
		echo "Without Docker, 'make test' runs everything that can run here."; exit 2; fi
	@$(MAKE) --no-print-directory up patched-crates
	$(CARGO) build --workspace --bins
	@$(call run-tests,-p stack-checks --test e2e,--run-ignored only --no-capture,--ignored --nocapture)

test-deps:
	@bash scripts/test-deps.sh

## patched-crates: the dependencies the workspace patches (patches/README.md), under .tools/patched
patched-crates: $(PATCHED)
$(PATCHED): patches/async-nats-0.51.0.patch scripts/patch-crates.sh
	@CARGO="$(CARGO)" bash scripts/patch-crates.sh

fmt-check: $(PATCHED)
	$(CARGO) fmt --all -- --check

lint: $(PATCHED)
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Integration tests of one crate start the binaries of others.
build: $(PATCHED)
	$(CARGO) build --workspace --bins --examples

doc-test: $(PATCHED)
	$(CARGO) test --workspace --doc

# The full-stack tier beside the other tests; a digest of the failures at the end
# (scripts/run-tests.sh).
unit-and-integration: $(PATCHED)
	@CARGO="$(CARGO)" bash scripts/run-tests.sh
