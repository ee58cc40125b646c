# The project's commands. `make test` needs no Docker; `make up` does (see README.md).
SHELL := /bin/bash
CARGO ?= cargo
COMPOSE ?= docker compose

.PHONY: up down clean logs ps keys demo urls test test-e2e check-config \
        test-deps fmt-check lint build doc-test unit-and-integration

## up: generate keys if missing, build, start everything, wait until healthy, print URLs
up: .env
	$(COMPOSE) up -d --build --wait
	@$(MAKE) --no-print-directory urls

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

## keys: write a git-ignored .env with fresh keys and passwords (never overwrites one)
keys:
	@if [ -f .env ]; then echo ".env exists; to start over: make clean && rm .env && make keys"; exit 0; fi; \
	if command -v $(CARGO) >/dev/null 2>&1; then \
		$(CARGO) run -q -p auth-service -- keygen > .env.tmp; \
	else \
		docker build -q --build-arg SERVICE=auth-service -t nats-otel-reference/auth-service:0.1.0 . >/dev/null && \
		docker run --rm nats-otel-reference/auth-service:0.1.0 keygen > .env.tmp; \
	fi && mv .env.tmp .env && chmod 600 .env && echo "wrote .env (secrets: keep it out of git)"

## demo: traffic through the stack (alice): plain messages, a retry, a slow one, a poison one, history
demo: .env
	$(COMPOSE) --profile demo run --rm chat-cli load --rate 5 --duration 60s --rooms general,random --fail-once 0.05 --slow 0.02 --poison 0.02
	$(COMPOSE) --profile demo run --rm chat-cli send general "this one fails once" --fault fail-once
	$(COMPOSE) --profile demo run --rm chat-cli send general "this one is slow" --fault slow
	$(COMPOSE) --profile demo run --rm chat-cli send general "this one is poison" --fault poison
	$(COMPOSE) --profile demo run --rm chat-cli history general --limit 10

urls:
	@echo "Grafana     http://localhost:3001  (dashboards: Chat backend / Service overview, Messaging)"
	@echo "Prometheus  http://localhost:9090"
	@echo "Tempo       http://localhost:3200"
	@echo "Loki        http://localhost:3100"
	@echo "Keycloak    http://localhost:8080  (realm chat; users alice, bob, carol; password CHAT_DEMO_PASSWORD in .env)"
	@echo "NATS        nats://localhost:4222  (monitoring http://localhost:8222)"
	@echo "Collector   localhost:4317 (OTLP gRPC), localhost:4318 (OTLP HTTP)"

## test: format check, clippy, config checks, unit and integration tests (real servers, no Docker)
test: test-deps fmt-check lint build doc-test unit-and-integration

## check-config: only the static checks of the compose stack and its configs
check-config: test-deps
	$(CARGO) build -q -p auth-service
	$(CARGO) nextest run -p stack-checks --test config

## test-e2e: the seed scenarios against the compose stack, read back from Tempo, Loki, Prometheus, Grafana (needs Docker)
test-e2e:
	@if ! docker info >/dev/null 2>&1; then \
		echo "make test-e2e needs a running Docker engine ('docker info' failed)."; \
		echo "Without Docker, 'make test' runs everything that can run here."; exit 2; fi
	@$(MAKE) --no-print-directory up
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run -p stack-checks --test e2e --run-ignored only --no-capture

test-deps:
	@bash scripts/test-deps.sh

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Integration tests of one crate start the binaries of others.
build:
	$(CARGO) build --workspace --bins

doc-test:
	$(CARGO) test --workspace --doc

unit-and-integration:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi
