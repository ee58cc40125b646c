# The project's commands. `make test` needs no Docker (see README.md).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test test-deps fmt-check lint build unit-and-integration doc-test

## test: format check, clippy, then unit and integration tests against real servers
test: test-deps fmt-check lint build doc-test unit-and-integration

test-deps:
	@bash scripts/test-deps.sh

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Integration tests of one crate start the binaries of others.
build:
	$(CARGO) build --workspace --bins

unit-and-integration:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

doc-test:
	$(CARGO) test --workspace --doc
